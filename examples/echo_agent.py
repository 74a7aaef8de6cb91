"""An echo agent: greets each participant, echoes their chat messages and their voice.

Run it against the stand-in server:

    trio-agents local-server &
    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \
        python examples/echo_agent.py dev

or against a real LiveKit server (``livekit-server --dev``, or LiveKit Cloud
with your project's URL and keys): the same command, with its URL.
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


async def echo_voice(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    """Republish what ``participant`` says on a track named "echo" (one per participant)."""
    track = await wait_for_audio(ctx, participant)
    source: rtc.AudioSource | None = None
    async with rtc.AudioStream(track) as stream:
        async for event in stream:
            frame = event.frame
            if source is None:
                source = rtc.AudioSource(frame.sample_rate, frame.num_channels)
                echo = rtc.LocalAudioTrack.create_audio_track("echo", source)
                await ctx.room.local_participant.publish_track(echo)
            await source.capture_frame(frame)


async def wait_for_audio(
    ctx: JobContext, participant: rtc.RemoteParticipant
) -> rtc.RemoteAudioTrack:
    """The participant's first subscribed audio track (already there, or when it comes)."""
    async with ctx.room.events(rtc.TrackSubscribed) as subscribed:
        for publication in participant.track_publications.values():
            if isinstance(publication.track, rtc.RemoteAudioTrack):
                return publication.track
        async for event in subscribed:
            if event.participant is participant and isinstance(event.track, rtc.RemoteAudioTrack):
                return event.track
    raise rtc.NotConnectedError("the room disconnected before the participant published audio")


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.log_context_fields["agent"] = "echo"  # on every log record of this job
    ctx.add_participant_entrypoint(greet)
    ctx.add_participant_entrypoint(echo_voice)
    ctx.add_shutdown_callback(lambda reason: logger.info("job over: %s", reason))
    await ctx.connect()
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.topic == "chat" and ev.participant is not None:
                await ctx.room.local_participant.send_text(ev.text, topic="echo")


if __name__ == "__main__":
    run_app(server)
