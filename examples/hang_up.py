"""Ending a call for everyone: ``ctx.delete_room()`` and ``delete_room_on_close``.

* When a participant says "bye", the agent answers and deletes the room
  (RoomService.DeleteRoom): every participant is disconnected, and the job
  ends with reason "room disconnected".  A room already gone counts as deleted.
* ``delete_room_on_close=True`` also deletes the room in the teardown, whatever
  ended the job (here: the entrypoint raising, a server termination, ...), so
  no room is left running and billing after the agent is gone.

    python examples/hang_up.py dev
    trio-agents sim join --room call --identity alice
    trio-agents sim say --room call --identity alice --topic chat bye
"""

from __future__ import annotations

from trio_agents import AgentServer, JobContext, rtc, run_app

server = AgentServer()


@server.rtc_session(delete_room_on_close=True)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for text in texts:
            if text.topic == "chat" and text.text.strip().lower() == "bye":
                await ctx.room.local_participant.send_text("bye, hanging up", topic="chat")
                await ctx.room.local_participant.wait_for_outbound()
                await ctx.delete_room()


if __name__ == "__main__":
    run_app(server)
