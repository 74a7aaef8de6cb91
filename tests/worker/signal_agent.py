"""A small agent for the subprocess tests: ``python signal_agent.py start --url ...``.

INLINE jobs keep it quick to start.  ``SIGNAL_AGENT_MODE`` chooses how its
jobs react when the worker drains:

* ``cooperative`` (default): wrap up a second after ``ctx.shutting_down``;
* ``stubborn``: ignore draining and run until shut down.

``SIGNAL_AGENT_MAX_RETRY`` sets ``max_retry`` (default 16).
"""

from __future__ import annotations

import os

import trio

from trio_agents import AgentServer, JobContext, JobExecutorType, run_app

MODE = os.environ.get("SIGNAL_AGENT_MODE", "cooperative")

server = AgentServer(
    job_executor_type=JobExecutorType.INLINE,
    port=None,
    load_fnc=lambda: 0.0,
    max_retry=int(os.environ.get("SIGNAL_AGENT_MAX_RETRY", "16")),
    shutdown_process_timeout=5,
)


@server.rtc_session(agent_name="signal-agent")
async def entry(ctx: JobContext) -> None:
    await ctx.connect()
    if MODE == "stubborn":
        await trio.sleep_forever()
    await ctx.shutting_down.wait()
    await trio.sleep(1.0)
    ctx.shutdown("finished after drain")


if __name__ == "__main__":
    run_app(server)
