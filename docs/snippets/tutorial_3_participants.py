import trio

from trio_agents import JobContext, rtc

events: list[str] = []


async def tutor(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    # One task per participant, owned by the job.
    events.append(f"{participant.identity} joined")
    try:
        while True:
            await ctx.room.local_participant.send_text(
                "time for a quiz?", destination_identities=[participant.identity]
            )
            await trio.sleep(60)
    finally:
        # Runs when the participant leaves (their task is cancelled) and when
        # the job ends: no task outlives the person it serves.
        events.append(f"{participant.identity} gone")


async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(tutor)
    await ctx.connect()
