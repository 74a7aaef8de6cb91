"""The agent ``bench_compare.py`` runs on both frameworks.

    python benchmarks/compare_agent.py trio|livekit IDLE AGENT_NAME

runs a production worker (each framework's own ``start`` command) for
explicit dispatches to ``AGENT_NAME``, with the process executor, ``IDLE``
prewarmed job processes, a load that is always reported as 0 (this is about
latency, not load: a busy machine must not make either worker refuse jobs) and
its health-check HTTP server on a free loopback port.  ``LIVEKIT_URL``,
``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET`` name the server.

The entrypoint is the same function for both: it records ``time.time()`` at
its first line in the file the job metadata names (``{"file": PATH}``), with
the pid of its process, then shuts the job down.  It never connects to the
room.

Only the standard library is imported at module level: the job processes of
both frameworks import this file, and neither should carry the other's (or
the benchmark driver's) modules.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

KEEP_THREADS_ENV = "BENCH_TRIO_KEEP_THREADS"


async def entrypoint(ctx: Any) -> None:
    started = time.time()
    path = json.loads(ctx.job.metadata)["file"]
    with open(path, "w") as f:  # noqa: ASYNC230 - one tiny write; the time is taken before
        f.write(f"{started!r} {os.getpid()}\n")
    ctx.shutdown("benchmark job done")


def no_load() -> float:
    return 0.0


def run_trio_agents(idle: int, agent_name: str) -> None:
    from trio_agents import AgentServer, JobExecutorType, cli

    if os.environ.get(KEEP_THREADS_ENV) == "1":
        # Diagnostic only (bench_compare.py --trio-keep-threads): trio's idle worker
        # threads never retire.  The zygote is started from one of them and asks for
        # PR_SET_PDEATHSIG, which fires when that *thread* exits (after 10 s idle).
        from trio._core import _thread_cache

        _thread_cache.IDLE_TIMEOUT = 10**9

    server = AgentServer(
        job_executor_type=JobExecutorType.PROCESS,
        num_idle_processes=idle,
        load_fnc=no_load,
        load_threshold=float("inf"),
        shutdown_process_timeout=5.0,
        host="127.0.0.1",
        port=0,
    )
    server.rtc_session(entrypoint, agent_name=agent_name)
    cli.run_app(server, ["start"])


def run_livekit_agents(idle: int, agent_name: str) -> None:
    from livekit.agents import AgentServer, JobExecutorType, cli

    server = AgentServer(
        job_executor_type=JobExecutorType.PROCESS,
        num_idle_processes=idle,
        load_fnc=no_load,
        load_threshold=float("inf"),
        shutdown_process_timeout=5.0,
        host="127.0.0.1",
        port=0,
    )
    server.rtc_session(entrypoint, agent_name=agent_name)
    sys.argv = [sys.argv[0], "start"]  # its command line reads sys.argv
    cli.run_app(server)


if __name__ == "__main__":
    framework, idle, agent_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if framework == "trio":
        run_trio_agents(idle, agent_name)
    elif framework == "livekit":
        run_livekit_agents(idle, agent_name)
    else:
        sys.exit(f"unknown framework {framework!r}: trio or livekit")
