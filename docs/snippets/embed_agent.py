from trio_agents import AgentServer, JobContext

finished: list[str] = []


async def entrypoint(ctx: JobContext) -> None:
    ctx.add_shutdown_callback(lambda reason: finished.append(f"{ctx.job.room.name}: {reason}"))
    await ctx.connect()


def make_server() -> AgentServer:
    # credentials from LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET
    server = AgentServer()
    server.rtc_session(entrypoint)
    return server
