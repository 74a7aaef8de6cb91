"""A worker in its own process, for tests that kill it: ``python worker_script.py WS_URL``.

Runs ``executor_agents.entrypoint`` with the PROCESS executor and two idle
processes; the test finds the zygote and the job processes among its children.
"""

from __future__ import annotations

import sys

import executor_agents
import trio

from trio_agents import AgentServer, JobExecutorType
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET


async def main(url: str) -> None:
    server = AgentServer(
        url,
        DEV_API_KEY,
        DEV_API_SECRET,
        job_executor_type=JobExecutorType.PROCESS,
        num_idle_processes=2,
        shutdown_process_timeout=1.0,
        load_fnc=lambda: 0.0,
        port=None,
    )
    server.rtc_session(executor_agents.entrypoint)
    await server.run()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
