"""Audio and text on connect: publish a track, greet, and listen to participants.

* ``connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)`` subscribes to every
  participant's audio (present and future) and to no video.
* On connect the agent publishes a track fed by an ``AudioSource`` (a short
  chime) and sends a text to the room.
* For each participant, a participant entrypoint reads its audio with
  ``AudioStream`` (an async iterator of frames) and reports how many frames it
  heard when asked with the text "count".
"""

from __future__ import annotations

import array
import math

import trio

from trio_agents import AgentServer, AutoSubscribe, JobContext, rtc, run_app

server = AgentServer()
RATE = 48000
FRAME = RATE // 100  # 10 ms


def chime(frames: int, frequency: float = 880.0) -> list[rtc.AudioFrame]:
    out = []
    for n in range(frames):
        samples = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * frequency * (n * FRAME + i) / RATE))
                for i in range(FRAME)
            ),
        )
        out.append(rtc.AudioFrame(samples.tobytes(), RATE, 1, FRAME))
    return out


async def listen(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    heard = 0

    async def count_frames(track: rtc.RemoteAudioTrack) -> None:
        nonlocal heard
        async with rtc.AudioStream(track) as stream:
            async for _event in stream:
                heard += 1

    async with trio.open_nursery() as nursery:
        for publication in participant.track_publications.values():
            if publication.track is not None:
                nursery.start_soon(count_frames, publication.track)
        async with ctx.room.events(rtc.TrackSubscribed, rtc.TextReceived) as events:
            async for event in events:
                if isinstance(event, rtc.TrackSubscribed):
                    if event.participant.identity == participant.identity:
                        nursery.start_soon(count_frames, event.track)
                elif (
                    isinstance(event, rtc.TextReceived)
                    and event.participant is not None
                    and event.participant.identity == participant.identity
                    and event.text == "count"
                ):
                    await ctx.room.local_participant.send_text(
                        f"heard {heard} frames from you",
                        topic="chat",
                        destination_identities=[participant.identity],
                    )


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(listen)
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
    await ctx.room.local_participant.publish_track(track)
    await ctx.room.local_participant.send_text("the agent is here", topic="chat")
    for frame in chime(20):
        await source.capture_frame(frame)


if __name__ == "__main__":
    run_app(server)
