"""An agent built on the official ``livekit-agents`` worker, for conformance tests.

``tests/conformance/test_reference_worker.py`` runs it in a subprocess against
the stand-in server.  It registers an explicit-dispatch agent; what each job
does is chosen by the dispatch metadata, a JSON object with a ``mode``:

* ``shutdown`` (default): write the marker file, then ``ctx.shutdown()``;
* ``stay``: write the marker file and return, so the job keeps running until
  the server terminates it;
* ``raise``: write the marker file, then raise from the entrypoint;
* ``wait``: write the marker file and return; a task of the job waits until a
  file ``<job id>.release`` or ``release-all`` appears in the marker
  directory, then calls ``ctx.shutdown()`` (the server may end the job first);
* ``reject``: the request handler rejects the job (``terminate=True``), so the
  entrypoint never runs;
* ``decline``: the request handler rejects the job with ``terminate=False``,
  so the server may offer it to another worker.

Without a mode in the job's metadata (automatic dispatch has none), the room's
metadata may give it.

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
* ``REFERENCE_AGENT_EXECUTOR``: ``process`` (default) or ``thread``;
* ``REFERENCE_AGENT_PERMISSIONS``: a JSON object of ``WorkerPermissions``
  arguments (default: the defaults);
* ``REFERENCE_AGENT_LOAD_FILE``: a file holding the load to report (a number;
  default: no file, load 0.0);
* ``REFERENCE_AGENT_LOAD_THRESHOLD``: the load threshold (default: infinite).

Each job also writes ``<job id>.end.json`` (its shutdown reason) from a
shutdown callback.  ``tests/real_server/trio_agent.py`` is the same agent on
trio-agents.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import time

from livekit.agents import (
    AgentServer,
    JobContext,
    JobExecutorType,
    JobRequest,
    WorkerPermissions,
    cli,
)

AGENT_NAME = os.environ.get("REFERENCE_AGENT_NAME", "conformance-agent")
EXECUTOR = JobExecutorType(os.environ.get("REFERENCE_AGENT_EXECUTOR", "process"))
PARTICIPANT_NAME = "conformance agent"

LOAD_FILE = os.environ.get("REFERENCE_AGENT_LOAD_FILE")
LOAD_THRESHOLD = float(os.environ.get("REFERENCE_AGENT_LOAD_THRESHOLD", "inf"))
PERMISSIONS = WorkerPermissions(**json.loads(os.environ.get("REFERENCE_AGENT_PERMISSIONS", "{}")))


def _load() -> float:
    if LOAD_FILE:
        try:
            return float(pathlib.Path(LOAD_FILE).read_text())
        except (OSError, ValueError):
            return 0.0
    return 0.0


server = AgentServer(
    job_executor_type=EXECUTOR,
    num_idle_processes=1,
    # The default load is CPU-based. A busy 2-core test machine must not make
    # the worker refuse jobs (threshold), nor make the server skip it: like
    # LiveKit, the stand-in never picks a worker whose reported load is 1.0.
    load_fnc=_load,
    load_threshold=LOAD_THRESHOLD,
    permissions=PERMISSIONS,
    port=0,  # the worker's health-check HTTP server: any free port
    shutdown_process_timeout=5.0,
)


def _mode_of(metadata: str) -> str | None:
    try:
        mode = json.loads(metadata).get("mode")
    except (ValueError, AttributeError):
        return None
    return str(mode) if mode is not None else None


def _mode(metadata: str, room_metadata: str = "") -> str:
    return _mode_of(metadata) or _mode_of(room_metadata) or "shutdown"


async def on_request(req: JobRequest) -> None:
    mode = _mode(req.job.metadata, req.job.room.metadata)
    if mode == "reject":
        await req.reject(terminate=True)
        return
    if mode == "decline":
        await req.reject(terminate=False)
        return
    await req.accept(name=PARTICIPANT_NAME, attributes={"conformance.mode": mode})


@server.rtc_session(agent_name=AGENT_NAME, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    claims = ctx.token_claims()
    video = claims.video
    mode = _mode(ctx.job.metadata, ctx.job.room.metadata)
    marker_dir = pathlib.Path(os.environ["REFERENCE_AGENT_MARKER_DIR"])
    job_id = ctx.job.id

    async def on_end(reason: str) -> None:
        _write(marker_dir, f"{job_id}.end", {"reason": reason, "at": time.time()})

    ctx.add_shutdown_callback(on_end)
    record = {
        "entered_at": time.time(),
        "pid": os.getpid(),
        "job_id": ctx.job.id,
        "dispatch_id": ctx.job.dispatch_id,
        "agent_name": ctx.job.agent_name,
        "metadata": ctx.job.metadata,
        "room": ctx.job.room.name,
        "namespace": ctx.job.namespace,
        "worker_id": ctx.worker_id,
        "token": {
            "identity": claims.identity,
            "name": claims.name,
            "kind": claims.kind,
            "attributes": dict(claims.attributes or {}),
            "room": video.room if video else None,
            "room_join": bool(video and video.room_join),
            "agent": bool(video and video.agent),
            "can_publish": bool(video and video.can_publish),
            "can_subscribe": bool(video and video.can_subscribe),
            "can_publish_data": bool(video and video.can_publish_data),
            "can_update_own_metadata": bool(video and video.can_update_own_metadata),
            "hidden": bool(video and video.hidden),
        },
    }
    _write(marker_dir, job_id, record)
    if mode == "raise":
        raise RuntimeError("conformance entrypoint failed on purpose")
    if mode == "shutdown":
        ctx.shutdown(reason="conformance entrypoint done")
    if mode == "wait":
        # Watch for the release beside the entrypoint, which returns: at a shutdown
        # livekit-agents waits up to 15 s for a still running entrypoint before it
        # cancels it (trio-agents cancels at once), and the tests need not wait.
        task = asyncio.create_task(_release_when_told(ctx, marker_dir, job_id))
        _watchers.add(task)
        task.add_done_callback(_watchers.discard)
    # "stay": return; the job runs until the server terminates it


_watchers: set[asyncio.Task[None]] = set()


async def _release_when_told(ctx: JobContext, marker_dir: pathlib.Path, job_id: str) -> None:
    release = (marker_dir / f"{job_id}.release", marker_dir / "release-all")
    # a file written by another process: nothing to wait on but the file system
    while not any(p.exists() for p in release):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    ctx.shutdown(reason="released by the test")


def _write(marker_dir: pathlib.Path, name: str, record: dict[str, object]) -> None:
    tmp = marker_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(marker_dir / f"{name}.json")  # atomic: the test never reads half a file


if __name__ == "__main__":
    cli.run_app(server)
