import trio

from trio_agents import AgentServer

loads: list[int] = []


async def report_jobs(server: AgentServer) -> None:
    while True:
        loads.append(len(server.active_jobs))
        await trio.sleep(60)


async def main(server: AgentServer, maintenance_at: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)  # returns once registered with LiveKit
        nursery.start_soon(report_jobs, server)
        await trio.sleep_until(maintenance_at)
        # Stop taking jobs, let the running ones end by themselves (at most
        # 60 s, then they are shut down), and close: run() returns.
        await server.drain(timeout=60)
        nursery.cancel_scope.cancel()  # and stop the reporter
