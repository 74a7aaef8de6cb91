"""Agents for the executor tests.

Job processes import their entrypoint and ``setup_fnc`` by module and name, so
everything here is module-level.  A job's metadata is JSON and says what the
job does: ``{"mode": ..., "file": PATH, ...}``; the job appends one line per
step to ``PATH`` so the test can see what ran, in which process and thread.

``setup_*`` functions read the directory ``EXECUTOR_TEST_DIR`` from the
environment (the zygote inherits the test's environment when it starts).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import trio

from trio_agents import JobContext, JobProcess

logger = logging.getLogger("tests.executor.agents")

ENV_DIR = "EXECUTOR_TEST_DIR"


def note(path: str | None, *words: object) -> None:
    """Append one line to ``path`` (flushed and closed at once: the process may die next)."""
    if not path:
        return
    with open(path, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\n")


def read_notes(path: object) -> list[list[str]]:
    try:
        with open(str(path)) as f:
            return [line.split() for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


def metadata(mode: str, file: object = None, **params: Any) -> str:
    return json.dumps({"mode": mode, "file": str(file) if file is not None else None, **params})


# --- the entrypoint ----------------------------------------------------------------


async def entrypoint(ctx: JobContext) -> None:
    params = json.loads(ctx.job.metadata or "{}")
    mode = params.get("mode", "wait")
    path = params.get("file")
    note(path, "start", os.getpid(), threading.get_ident(), f"{time.time():.6f}")
    handler = MODES[mode]
    await handler(ctx, path, params)


async def _wait(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Run until told to stop (server termination, worker shutdown)."""
    ctx.add_shutdown_callback(lambda reason: note(path, "hook", reason.replace(" ", "_")))
    await trio.sleep_forever()


async def _block(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Block the job's thread for good: only a signal can end this process."""
    note(path, "blocking")
    time.sleep(1000)  # noqa: ASYNC251 - the point


async def _long(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Work for ``seconds``, then end cleanly."""
    ctx.add_shutdown_callback(lambda: note(path, "hook"))
    await trio.sleep(params["seconds"])
    note(path, "done")
    ctx.shutdown("work done")


async def _exit(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    await trio.sleep(params.get("delay", 0))
    os._exit(3)


async def _segfault(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    await trio.sleep(params.get("delay", 0))
    ctypes.string_at(0)


async def _raise(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    await trio.sleep(params.get("delay", 0))
    raise RuntimeError("entrypoint-boom")


async def _blocking_hook(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """One shutdown callback blocks its thread for good; the others finish before it blocks."""

    def sync_hook() -> None:
        note(path, "sync_hook")

    async def async_hook() -> None:
        note(path, "async_hook")

    async def hook_that_blocks_the_thread() -> None:
        await trio.sleep(0.2)  # the other callbacks run first
        note(path, "blocking_hook")
        time.sleep(1000)  # noqa: ASYNC251 - the point: a hook that blocks its thread
        note(path, "never")

    ctx.add_shutdown_callback(sync_hook)
    ctx.add_shutdown_callback(hook_that_blocks_the_thread)
    ctx.add_shutdown_callback(async_hook)
    try:
        note(path, "ready")
        await trio.sleep_forever()
    finally:
        note(path, "entrypoint_finally")


async def _memory(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Allocate ``mb`` megabytes (pages written, so they count) and hold them."""
    ctx.add_shutdown_callback(lambda reason: note(path, "hook", reason.replace(" ", "_")))
    hog = b"\x01" * (params["mb"] * 1024 * 1024)
    note(path, "allocated", len(hog))
    try:
        await trio.sleep_forever()
    finally:
        note(path, "entrypoint_finally", len(hog))


async def _log(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Log from the entrypoint and from a child task, with custom fields."""
    ctx.log_context_fields["customer"] = "acme"
    ctx.log_context_fields["call_n"] = 7
    logger.warning("hello from the entrypoint")

    async def child() -> None:
        logger.warning("hello from a child task", extra={"step": "child"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
    ctx.shutdown("logged")


async def _subprocess(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Start a subprocess and leave it running; the job ends (``then``: shutdown or crash)."""
    child = subprocess.Popen(["sleep", "1000"])  # noqa: ASYNC220 - left running on purpose
    note(path, "child", child.pid)
    if params.get("then") == "crash":
        os._exit(3)
    ctx.shutdown("started a subprocess")


async def _info(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Record where the job runs and what prewarm left; a shutdown callback notes itself."""
    note(path, "userdata", json.dumps(ctx.proc.userdata, sort_keys=True).replace(" ", ""))
    note(path, "executor", ctx.proc.executor_type.name, ctx.proc.pid)
    ctx.add_shutdown_callback(
        lambda: note(path, "shutdown_callback", os.getpid(), threading.get_ident())
    )
    if params.get("end", True):
        ctx.shutdown("info recorded")
    else:
        await trio.sleep_forever()


async def _shutdown_then_block(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Start the shutdown, then block the job's thread (the trio loop is never free again
    before the deadline): only the runner's own clock can end the job in time."""
    ctx.add_shutdown_callback(lambda: note(path, "hook"))
    await ctx.connect()
    await trio.sleep(params.get("delay", 0.2))
    note(path, "shutdown", f"{time.time():.6f}")
    ctx.shutdown("self")
    time.sleep(params["block"])  # noqa: ASYNC251 - the point


async def _ignore_cancel(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    """Clean up for ``block`` seconds, shielded from the teardown's cancellation."""
    ctx.add_shutdown_callback(lambda: note(path, "hook"))
    await ctx.connect()
    note(path, "ready")
    try:
        await trio.sleep_forever()
    finally:
        note(path, "cleanup", f"{time.time():.6f}")
        with trio.CancelScope(shield=True):
            await trio.sleep(params["block"])


async def _sys_exit(ctx: JobContext, path: str | None, params: dict[str, Any]) -> None:
    ctx.add_shutdown_callback(lambda reason: note(path, "hook", reason.replace(" ", "_")))
    await ctx.connect()
    await trio.sleep(params.get("delay", 0))
    sys.exit(3)


MODES = {
    "shutdown_then_block": _shutdown_then_block,
    "ignore_cancel": _ignore_cancel,
    "sys_exit": _sys_exit,
    "wait": _wait,
    "block": _block,
    "long": _long,
    "exit": _exit,
    "segfault": _segfault,
    "raise": _raise,
    "blocking_hook": _blocking_hook,
    "memory": _memory,
    "log": _log,
    "subprocess": _subprocess,
    "info": _info,
}


# --- setup_fnc (prewarm) --------------------------------------------------------------


def _dir() -> str:
    return os.environ[ENV_DIR]


def setup_ok(proc: JobProcess) -> None:
    proc.userdata["warmed_by"] = os.getpid()
    note(os.path.join(_dir(), "setup.txt"), "ok", os.getpid())


def setup_raises(proc: JobProcess) -> None:
    note(os.path.join(_dir(), "setup.txt"), "raise", os.getpid())
    raise RuntimeError("prewarm-boom")


def setup_blocks(proc: JobProcess) -> None:
    """Blocks its thread past any initialize_process_timeout."""
    note(os.path.join(_dir(), "setup.txt"), "block", os.getpid())
    time.sleep(1000)


def setup_fails_first(proc: JobProcess) -> None:
    """Raises in the first process that runs it, succeeds in every later one."""
    marker = os.path.join(_dir(), "failed-once")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        setup_ok(proc)
        return
    os.close(fd)
    note(os.path.join(_dir(), "setup.txt"), "raise", os.getpid())
    raise RuntimeError("first-prewarm-boom")
