import trio

from trio_agents import JobContext, rtc

ANSWER_TIMEOUT = 10.0


async def ask_name(ctx: JobContext, participant: rtc.RemoteParticipant) -> str:
    me = ctx.room.local_participant
    async with ctx.room.events(rtc.TextReceived) as texts:
        await me.send_text("what's your name?", destination_identities=[participant.identity])
        with trio.move_on_after(ANSWER_TIMEOUT):
            async for ev in texts:
                if ev.participant is not None and ev.participant.identity == participant.identity:
                    return ev.text
    # the cancel scope expired: we get here instead of waiting forever
    return "guest"


async def greeter(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    name = await ask_name(ctx, participant)
    await ctx.room.local_participant.send_text(
        f"nice to meet you, {name}", destination_identities=[participant.identity]
    )


async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(greeter)
    await ctx.connect()
