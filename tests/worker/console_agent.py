"""An agent for the ``console`` command's test: answers each chat line, upper-cased."""

from __future__ import annotations

from trio_agents import AgentServer, JobContext, rtc, run_app

server = AgentServer()


@server.rtc_session(agent_name="console-agent")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.topic == "lk.chat":
                await ctx.room.local_participant.send_text(ev.text.upper(), topic="lk.chat")


if __name__ == "__main__":
    run_app(server)
