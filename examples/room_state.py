"""Room metadata and participant attributes: their change events, two ways.

* ``ctx.room.on("room_metadata_changed")`` registers a plain callback (it runs
  in the job's trio thread; keep it short and non-blocking).
* ``ctx.room.events(...)`` is an async iterator of typed events, for work that
  awaits: here the agent answers when a participant's ``status`` attribute
  becomes ``done``.

    python examples/room_state.py dev
    trio-agents sim join --room r --identity alice
    trio-agents sim attrs --room r --identity alice status=done
"""

from __future__ import annotations

import logging

from trio_agents import AgentServer, JobContext, rtc, run_app

logger = logging.getLogger("room-state")
server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    topics: list[str] = []

    @ctx.room.on("room_metadata_changed")
    def on_topic(event: rtc.RoomMetadataChanged) -> None:
        topics.append(event.new)
        logger.info("room topic: %r -> %r", event.old, event.new)

    await ctx.connect()
    async with ctx.room.events(rtc.ParticipantAttributesChanged) as changes:
        async for change in changes:
            if change.changed_attributes.get("status") == "done":
                await ctx.room.local_participant.send_text(
                    f"thanks {change.participant.identity}; topics so far: {topics}",
                    topic="chat",
                )


if __name__ == "__main__":
    run_app(server)
