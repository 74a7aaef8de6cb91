"""Shutdown hooks, draining and the one teardown deadline.

* ``ctx.shutting_down`` is set when shutdown starts *and* when the worker
  starts draining (SIGTERM): a cooperative signal to wrap up.
* Shutdown callbacks run once, whatever ends the job, concurrently, within
  ``shutdown_process_timeout``; a hung one is cut off, the others finish.
* ``ctx.shutdown(reason, drain=True)`` lets queued outbound text/audio go out
  before the entrypoint is cancelled.
"""

from __future__ import annotations

import logging

import trio

from trio_agents import AgentServer, JobContext, run_app

logger = logging.getLogger("graceful")
server = AgentServer(shutdown_process_timeout=5.0)


@server.rtc_session(agent_name="graceful")
async def entrypoint(ctx: JobContext) -> None:
    transcript: list[str] = []

    async def save_transcript(reason: str) -> None:
        # runs under the job's deadline, shielded from the cancellation of the work
        await trio.sleep(0.1)  # e.g. an HTTP upload
        logger.info("saved %d lines (%s)", len(transcript), reason)

    ctx.add_shutdown_callback(save_transcript)
    await ctx.connect()

    async def watch_drain() -> None:
        await ctx.shutting_down.wait()
        await ctx.room.local_participant.send_text("this agent is going away soon", topic="chat")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_drain)
        await ctx.wait_for_participant()
        transcript.append("a participant joined")
        await ctx.room.local_participant.send_text("goodbye", topic="chat")
        ctx.shutdown("conversation over", drain=True)  # "goodbye" is sent before teardown


if __name__ == "__main__":
    run_app(server)
