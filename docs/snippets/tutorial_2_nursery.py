import trio

from trio_agents import JobContext, rtc


async def heartbeat(ctx: JobContext) -> None:
    while True:
        await trio.sleep(10)
        await ctx.room.local_participant.send_text("still here", topic="status")


async def echo(ctx: JobContext) -> None:
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.topic == "chat":
                await ctx.room.local_participant.send_text(ev.text, topic="echo")


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat, ctx)
        nursery.start_soon(echo, ctx)
    # Reached only when both children are done. When the job shuts down, its
    # work is cancelled: both children stop at their next checkpoint, the
    # nursery exits, and nothing of them keeps running.
