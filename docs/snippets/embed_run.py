import trio

from trio_agents import AgentServer


async def main(server: AgentServer) -> None:
    # Run the worker for at most an hour. When the scope's deadline cancels
    # run(), every running job is shut down (no drain), each within its
    # shutdown_process_timeout, their final statuses are sent, and run()
    # returns.
    with trio.move_on_after(3600):
        await server.run()


if __name__ == "__main__":
    from embed_agent import make_server

    trio.run(main, make_server())
