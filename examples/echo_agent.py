"""An echo agent: greets each participant and echoes their chat messages.

Run it against the stand-in server:

    trio-agents local-server &
    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \
        python examples/echo_agent.py dev
"""

from __future__ import annotations

import logging

from trio_agents import AgentServer, JobContext, rtc, run_app

logger = logging.getLogger("echo-agent")
server = AgentServer()


async def greet(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    """Runs once per participant, as a task of the job; cancelled when they leave."""
    await ctx.room.local_participant.send_text(
        f"hello {participant.identity}", topic="chat", destination_identities=[participant.identity]
    )


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.log_context_fields["agent"] = "echo"  # on every log record of this job
    ctx.add_participant_entrypoint(greet)
    ctx.add_shutdown_callback(lambda reason: logger.info("job over: %s", reason))
    await ctx.connect()
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.topic == "chat" and ev.participant is not None:
                await ctx.room.local_participant.send_text(ev.text, topic="echo")


if __name__ == "__main__":
    run_app(server)
