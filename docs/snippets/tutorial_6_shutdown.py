import trio

from trio_agents import JobContext

log: list[str] = []


async def entrypoint(ctx: JobContext) -> None:
    async def flush_metrics(reason: str) -> None:
        # A shutdown callback: runs once, whatever ended the job, under the
        # job's one teardown deadline (shutdown_process_timeout).
        await trio.sleep(0.2)
        log.append(f"metrics flushed ({reason})")

    ctx.add_shutdown_callback(flush_metrics)
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    me = ctx.room.local_participant
    await me.send_text(f"hi {participant.identity}, this call ends in 60 seconds")
    with trio.move_on_after(60):
        # ctx.shutting_down is set when the worker starts draining, too:
        # stop early then, and say why.
        await ctx.shutting_down.wait()
        log.append("asked to wind down")
    await me.send_text("goodbye")
    ctx.shutdown("call over", drain=True)  # "goodbye" goes out before teardown
