"""Agents for ``test_process_review.py`` (module-level, so job processes can import them)."""

from __future__ import annotations

import json
import logging

import trio

from trio_agents import JobContext

chatty = logging.getLogger("tests.review.chatty")
quiet = logging.getLogger("tests.review.quiet")


async def log_levels(ctx: JobContext) -> None:
    """Log at DEBUG and INFO on two loggers, then end."""
    chatty.debug("chatty debug")
    chatty.info("chatty info")
    quiet.info("quiet info")
    quiet.warning("quiet warning")
    ctx.shutdown("logged")


async def wait_for_shutdown(ctx: JobContext) -> None:
    """Run until shut down; the metadata may name a file to note the reason in."""
    params = json.loads(ctx.job.metadata or "{}")
    if path := params.get("file"):

        def note(reason: str) -> None:
            with open(path, "a") as f:
                f.write(reason + "\n")

        ctx.add_shutdown_callback(note)
    await trio.sleep_forever()


async def log_a_huge_message(ctx: JobContext) -> None:
    """One log record bigger than an IPC frame may be, then end normally."""
    chatty.warning("huge %s", "x" * (20 * 1024 * 1024))
    chatty.warning("after the huge one")
    ctx.shutdown("logged")


async def raise_a_huge_error(ctx: JobContext) -> None:
    raise RuntimeError("z" * (20 * 1024 * 1024))
