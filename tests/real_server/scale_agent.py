"""A trio-agents worker for the scale-out tests (tests/real_server/test_scale_out.py).

Environment: ``LIVEKIT_URL``/``_API_KEY``/``_API_SECRET`` (the node it registers
with), ``SCALE_AGENT_NAME``, ``SCALE_AGENT_TAG`` (which worker this is),
``SCALE_AGENT_LOAD`` (the load it reports, constant), ``SCALE_AGENT_MARKERS`` (a
folder).  Each job writes ``<room>.json`` (job, worker, tag, pid; one job per
room in these tests) and then
ends at once, or, with dispatch metadata ``{"mode": "stay"}``, runs until it
is terminated.
"""

from __future__ import annotations

import json
import os
import pathlib

from trio_agents import AgentServer, JobContext, JobExecutorType, run_app

LOAD = float(os.environ.get("SCALE_AGENT_LOAD", "0"))
TAG = os.environ.get("SCALE_AGENT_TAG", "w")

server = AgentServer(
    job_executor_type=JobExecutorType.PROCESS,
    # Three prewarmed processes: with one, a single in-flight reservation makes an
    # idle worker report itself full (the estimated cost of a job with nothing
    # running is the load threshold spread over the idle pool), and a burst of
    # dispatches finds every worker "full"; LiveKit then drops the job.
    num_idle_processes=int(os.environ.get("SCALE_AGENT_IDLE", "3")),
    load_fnc=lambda: LOAD,
    load_threshold=0.95,
    port=0,
    shutdown_process_timeout=3.0,
)


@server.rtc_session(agent_name=os.environ.get("SCALE_AGENT_NAME", "scale-agent"))
async def entrypoint(ctx: JobContext) -> None:
    record = {
        "job_id": ctx.job.id,
        "room": ctx.job.room.name,
        "worker_id": ctx.worker_id,
        "tag": TAG,
        "pid": os.getpid(),
    }
    markers = pathlib.Path(os.environ["SCALE_AGENT_MARKERS"])
    tmp = markers / f".{ctx.job.id}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(markers / f"{ctx.job.room.name}.json")  # atomic: never half a file
    if json.loads(ctx.job.metadata or "{}").get("mode") != "stay":
        ctx.shutdown(reason="scale-out job done")


if __name__ == "__main__":
    run_app(server)
