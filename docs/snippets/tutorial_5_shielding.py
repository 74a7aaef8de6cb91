import trio

from trio_agents import JobContext, rtc

saved: dict[str, list[str]] = {}


async def save(identity: str, lines: list[str]) -> None:
    await trio.sleep(0.5)  # a database write, say
    saved[identity] = lines


async def scribe(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    lines: list[str] = []
    try:
        async with ctx.room.events(rtc.TextReceived) as texts:
            async for ev in texts:
                if ev.participant is not None and ev.participant.identity == participant.identity:
                    lines.append(ev.text)
    finally:
        # We are here because we are being cancelled (they left, or the job is
        # ending). A plain `await save(...)` would raise Cancelled at once.
        # Shield it, and give it a deadline of its own.
        with trio.move_on_after(2, shield=True):
            await save(participant.identity, lines)


async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(scribe)
    await ctx.connect()
