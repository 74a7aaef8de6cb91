from trio_agents import AgentServer, JobContext, rtc, run_app

server = AgentServer()  # reads LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET


async def greet(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
    await ctx.room.local_participant.send_text(f"hello {participant.identity}")


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(greet)  # a task per participant, owned by the job
    ctx.add_shutdown_callback(lambda reason: print("job over:", reason))
    await ctx.connect()


if __name__ == "__main__":
    run_app(server)
