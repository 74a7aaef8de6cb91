"""Prewarmed job processes: ``setup_fnc`` runs once in each process, before a job.

With the PROCESS executor (the default) a pool of ``num_idle_processes``
processes is forked from a zygote that already imported this module; each
runs ``load_model`` and waits.  A job then starts in a few milliseconds with
``ctx.proc.userdata`` filled.
"""

from __future__ import annotations

from trio_agents import AgentServer, JobContext, JobProcess, run_app


def load_model(proc: JobProcess) -> None:
    proc.userdata["vocabulary"] = {"hello", "world"}  # something slow in real life


server = AgentServer(setup_fnc=load_model, num_idle_processes=2, initialize_process_timeout=30)


@server.rtc_session(agent_name="prewarmed")
async def entrypoint(ctx: JobContext) -> None:
    words = ctx.proc.userdata["vocabulary"]
    await ctx.connect()
    await ctx.room.local_participant.send_text(f"I know {len(words)} words")


if __name__ == "__main__":
    run_app(server)
