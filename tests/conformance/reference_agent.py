"""An agent built on the official ``livekit-agents`` worker, for conformance tests.

``tests/conformance/test_reference_worker.py`` runs it in a subprocess against
the stand-in server.  It registers an explicit-dispatch agent; what each job
does is chosen by the dispatch metadata, a JSON object with a ``mode``:

* ``shutdown`` (default): write the marker file, then ``ctx.shutdown()``;
* ``stay``: write the marker file and return, so the job keeps running until
  the server terminates it;
* ``raise``: write the marker file, then raise from the entrypoint;
* ``reject``: the request handler rejects the job (``terminate=True``), so the
  entrypoint never runs.

Every other job is accepted with a participant name and attributes the test
then finds in the room token.  The marker file, ``<job id>.json`` in
``REFERENCE_AGENT_MARKER_DIR``, records what the job saw.  The entrypoint never
calls ``ctx.connect()``: the stand-in does not serve ``/rtc`` yet.

Run it with ``python reference_agent.py start`` (or
``python -m livekit.agents start reference_agent.py``).  Environment:

* ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``: the server;
* ``REFERENCE_AGENT_NAME``: the agent name to register (default
  ``conformance-agent``);
* ``REFERENCE_AGENT_MARKER_DIR``: where the marker files go;
* ``REFERENCE_AGENT_EXECUTOR``: ``process`` (default) or ``thread``.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest, cli

AGENT_NAME = os.environ.get("REFERENCE_AGENT_NAME", "conformance-agent")
EXECUTOR = JobExecutorType(os.environ.get("REFERENCE_AGENT_EXECUTOR", "process"))
PARTICIPANT_NAME = "conformance agent"

def _no_load() -> float:
    return 0.0


server = AgentServer(
    job_executor_type=EXECUTOR,
    num_idle_processes=1,
    # The default load is CPU-based. A busy 2-core test machine must not make
    # the worker refuse jobs (threshold), nor make the server skip it: like
    # LiveKit, the stand-in never picks a worker whose reported load is 1.0.
    load_fnc=_no_load,
    load_threshold=float("inf"),
    port=0,  # the worker's health-check HTTP server: any free port
    shutdown_process_timeout=5.0,
)


def _mode(metadata: str) -> str:
    try:
        return str(json.loads(metadata).get("mode", "shutdown"))
    except (ValueError, AttributeError):
        return "shutdown"


async def on_request(req: JobRequest) -> None:
    mode = _mode(req.job.metadata)
    if mode == "reject":
        await req.reject(terminate=True)
        return
    await req.accept(name=PARTICIPANT_NAME, attributes={"conformance.mode": mode})


@server.rtc_session(agent_name=AGENT_NAME, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    claims = ctx.token_claims()
    video = claims.video
    mode = _mode(ctx.job.metadata)
    record = {
        "entered_at": time.time(),
        "pid": os.getpid(),
        "job_id": ctx.job.id,
        "dispatch_id": ctx.job.dispatch_id,
        "agent_name": ctx.job.agent_name,
        "metadata": ctx.job.metadata,
        "room": ctx.job.room.name,
        "worker_id": ctx.worker_id,
        "token": {
            "identity": claims.identity,
            "name": claims.name,
            "kind": claims.kind,
            "attributes": dict(claims.attributes or {}),
            "room": video.room if video else None,
            "room_join": bool(video and video.room_join),
            "agent": bool(video and video.agent),
        },
    }
    marker_dir = pathlib.Path(os.environ["REFERENCE_AGENT_MARKER_DIR"])
    tmp = marker_dir / f".{ctx.job.id}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(marker_dir / f"{ctx.job.id}.json")  # atomic: the test never reads half a file
    if mode == "raise":
        raise RuntimeError("conformance entrypoint failed on purpose")
    if mode == "shutdown":
        ctx.shutdown(reason="conformance entrypoint done")
    # "stay": return; the job runs until the server terminates it


if __name__ == "__main__":
    cli.run_app(server)
