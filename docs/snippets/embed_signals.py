import functools
import signal

import trio

from trio_agents import AgentServer


async def main(
    server: AgentServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with trio.open_nursery() as nursery:
        # handle_signals=False is the default for run(); spelled out here
        # because this program handles SIGTERM itself.
        await nursery.start(functools.partial(server.run, handle_signals=False))
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                await server.drain()  # drain_timeout bounds it
                break
