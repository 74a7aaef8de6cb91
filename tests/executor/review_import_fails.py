"""An agent module that fails to import when ``REVIEW_FAIL_IMPORT`` is set (in the zygote)."""

from __future__ import annotations

import os

from trio_agents import JobContext

FAIL = "REVIEW_FAIL_IMPORT"

if os.environ.get(FAIL):
    raise RuntimeError("the agent module refuses to load")


async def entry(ctx: JobContext) -> None:
    ctx.shutdown("nothing to do")
