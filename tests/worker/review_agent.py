"""An agent for ``test_worker_review.py``'s PROCESS jobs (module-level: job processes import it)."""

from __future__ import annotations

import trio

from trio_agents import JobContext


async def wait_for_shutdown(ctx: JobContext) -> None:
    """Connect and run until shut down; the room's metadata names a file for the reason."""
    path = ctx.job.room.metadata

    def note(reason: str) -> None:
        with open(path, "a") as f:
            f.write(reason.replace(" ", "_") + "\n")

    ctx.add_shutdown_callback(note)
    await ctx.connect()
    await trio.sleep_forever()
