"""The twin of ``tests/conformance/reference_agent.py`` on trio-agents.

``test_worker_real.py`` runs it and the official agent side by side against
the real livekit-server: same environment variables, same modes (chosen by
the job's metadata, else the room's: ``shutdown``, ``stay``, ``wait``,
``raise``, ``reject``, ``decline``), same marker files (``<job id>.json`` when
the entrypoint runs, ``<job id>.end.json`` from a shutdown callback).  The
entrypoint never joins the room.

Run it with ``python trio_agent.py start``.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import trio
from livekit import api as lkapi

from trio_agents import (
    AgentServer,
    JobContext,
    JobExecutorType,
    JobRequest,
    WorkerPermissions,
    run_app,
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
    load_fnc=_load,  # not the CPU: a busy test machine must not make it refuse jobs
    load_threshold=LOAD_THRESHOLD,
    permissions=PERMISSIONS,
    port=0,
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
    claims = lkapi.TokenVerifier(ctx.info.api_key, ctx.info.api_secret).verify(ctx.info.token)
    video = claims.video
    mode = _mode(ctx.job.metadata, ctx.job.room.metadata)
    marker_dir = pathlib.Path(os.environ["REFERENCE_AGENT_MARKER_DIR"])
    job_id = ctx.job.id

    def on_end(reason: str) -> None:
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
        ctx.shutdown("conformance entrypoint done")
    if mode == "wait":
        release = (marker_dir / f"{job_id}.release", marker_dir / "release-all")
        # a file written by another process: nothing to wait on but the file system
        while not any(p.exists() for p in release):  # noqa: ASYNC110
            await trio.sleep(0.05)
        ctx.shutdown("released by the test")
    # "stay": return; the job runs until the server terminates it


def _write(marker_dir: pathlib.Path, name: str, record: dict[str, object]) -> None:
    tmp = marker_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(marker_dir / f"{name}.json")  # atomic: the test never reads half a file


if __name__ == "__main__":
    run_app(server)
