"""An agent module that starts LiveKit's native client at import when ``RTC_AT_IMPORT`` is set."""

from __future__ import annotations

import asyncio
import os

from trio_agents import JobContext

FLAG = "RTC_AT_IMPORT"

if os.environ.get(FLAG):
    from livekit import rtc

    # any SDK object that talks to the native client starts it (and its threads)
    SOURCE = rtc.AudioSource(48000, 1, loop=asyncio.new_event_loop())


async def entry(ctx: JobContext) -> None:
    ctx.shutdown("nothing to do")
