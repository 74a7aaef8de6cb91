from trio_agents import AgentServer, JobContext, run_app

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    await ctx.room.local_participant.send_text("hello, room")
    # Returning does not end the job: the room closing does, or ctx.shutdown().


if __name__ == "__main__":
    run_app(server)
