"""The official ``livekit-agents`` worker against the stand-in server.

The stand-in claims to be faithful to LiveKit where a worker can see it; here
the official worker (``reference_agent.py``, run as a subprocess over real TCP)
is the judge.  It must register, take explicit dispatches, run the entrypoint
with the job and token the server built, report the job's end, obey a
termination, and re-register with its running jobs after a server restart.

The official worker runs from its own venv (``scripts/reference-venv.sh``,
made on first use by the ``reference_python`` fixture), since it pins the
``livekit`` SDK below ours.  Run with ``pytest -m reference -s`` to see the
timings it measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from livekit.protocol import agent, agent_dispatch

from trio_agents import protocol
from trio_agents.testing import LocalServer, WorkerRecord, open_local_server

pytestmark = pytest.mark.reference

AGENT_SCRIPT = Path(__file__).with_name("reference_agent.py")
#: The livekit-agents release scripts/reference-venv.sh installs.
REFERENCE_VERSION = "1.8.9"
AGENT_NAME = "conformance-agent"
#: Generous bound on every wait: the worker starts a forkserver and a job process.
TIMEOUT = 60.0
#: How long the worker gets to drain and exit after SIGTERM before it is killed.
STOP_GRACE = 20.0
#: Environment the official worker reads that must not leak in from the caller's shell.
_FOREIGN_ENV = (
    "LIVEKIT_AGENT_NAME",
    "LIVEKIT_AGENT_NAME_OVERRIDE",
    "LIVEKIT_WORKER_TOKEN",
    "LIVEKIT_AGENT_DEPLOYMENT",
    "LIVEKIT_LOG_LEVEL",
)


@attrs.define(eq=False)
class ReferenceWorker:
    """The official worker's process, as the test sees it."""

    process: trio.Process
    marker_dir: Path
    log_path: Path
    started_at: float  # time.monotonic() when the process was launched

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"the official worker exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    async def registered(self, server: LocalServer) -> WorkerRecord:
        """Wait until the worker is registered with ``server``; return its record."""
        with trio.fail_after(TIMEOUT):
            while True:
                for w in server.agents.workers.values():
                    if w.agent_name == AGENT_NAME:
                        return w
                self.check_alive()
                await trio.sleep(0.02)

    def marker_path(self, job_id: str) -> Path:
        return self.marker_dir / f"{job_id}.json"

    async def marker(self, job_id: str) -> dict[str, Any]:
        """What the entrypoint recorded for ``job_id`` (waits for the file)."""
        path = self.marker_path(job_id)
        with trio.fail_after(TIMEOUT):
            while not path.exists():
                self.check_alive()
                await trio.sleep(0.02)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


async def _stop(process: trio.Process) -> None:
    """SIGTERM (the official worker drains and exits), then SIGKILL the whole group."""
    with trio.CancelScope(shield=True):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
        # the worker ran in its own session: this reaches its forkserver and job
        # processes too, and nothing else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@contextlib.asynccontextmanager
async def reference_worker(
    python: str, url: str, tmp_path: Path, **env_extra: str
) -> AsyncIterator[ReferenceWorker]:
    """Run ``reference_agent.py start`` against ``url`` for the duration of the block."""
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir(exist_ok=True)
    log_path = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(
        LIVEKIT_URL=url,
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret",
        REFERENCE_AGENT_NAME=AGENT_NAME,
        REFERENCE_AGENT_MARKER_DIR=str(marker_dir),
        REFERENCE_AGENT_EXECUTOR="process",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra)
    with log_path.open("wb") as log:
        started_at = time.monotonic()
        process = await trio.lowlevel.open_process(
            [python, str(AGENT_SCRIPT), "start"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield ReferenceWorker(process, marker_dir, log_path, started_at)
        finally:
            await _stop(process)


def _dispatch(server: LocalServer, room: str, mode: str) -> tuple[str, str]:
    """Create ``room`` with an explicit dispatch to the agent; (dispatch id, metadata)."""
    metadata = json.dumps({"mode": mode, "nonce": uuid.uuid4().hex})
    created, _ = server.rooms.create(
        room,
        agents=[agent_dispatch.RoomAgentDispatch(agent_name=AGENT_NAME, metadata=metadata)],
    )
    (dispatch,) = created.dispatches.values()
    return dispatch.id, metadata


def _only_job(server: LocalServer, room: str) -> str:
    (job_id,) = [j for j, r in server.agents.jobs.items() if r.job.room.name == room]
    return job_id


async def test_official_worker_runs_an_explicit_dispatch_to_completion(
    reference_python: str, tmp_path: Path
) -> None:
    async with (
        open_local_server(port=0) as server,
        reference_worker(reference_python, server.url, tmp_path) as ref,
    ):
        record = await ref.registered(server)
        register_s = time.monotonic() - ref.started_at
        assert record.id.startswith("AW_")
        assert record.version == REFERENCE_VERSION
        assert (record.job_type, record.deployment) == (agent.JT_ROOM, "")
        assert record.permissions.agent
        assert record.permissions.can_subscribe
        assert record.permissions.can_publish

        dispatched_wall, dispatched = time.time(), time.monotonic()
        dispatch_id, metadata = _dispatch(server, "conformance-room", "shutdown")
        with trio.fail_after(TIMEOUT):
            job = await server.wait_for_job(room="conformance-room")
        job_id = job.job.id
        seen = await ref.marker(job_id)
        with trio.fail_after(TIMEOUT):
            done = await server.wait_for_job_status(job_id, agent.JS_SUCCESS, agent.JS_FAILED)
        done_s = time.monotonic() - dispatched

        # the entrypoint saw the job the server built, and the worker it registered as
        assert seen["job_id"] == job_id
        assert seen["metadata"] == metadata
        assert seen["room"] == "conformance-room"
        assert seen["agent_name"] == AGENT_NAME
        assert seen["dispatch_id"] == dispatch_id == job.job.dispatch_id
        assert seen["worker_id"] == record.id == job.worker_id
        # and joined with the server's token for the identity the worker answered
        token = seen["token"]
        assert token["identity"] == f"agent-{job_id}"  # the official default identity
        assert token["name"] == "conformance agent"
        assert token["kind"] == "agent"
        assert token["attributes"] == {
            "lk.agent.name": AGENT_NAME,  # set by the worker in its answer
            "conformance.mode": "shutdown",
            "lk.agent_name": AGENT_NAME,  # added by the server
        }
        assert (token["room"], token["room_join"], token["agent"]) == (
            "conformance-room",
            True,
            True,
        )
        assert job.job.state.participant_identity == f"agent-{job_id}"

        # the official worker reports JS_RUNNING when the job launches, then
        # JS_SUCCESS when its process exits with code 0 after ctx.shutdown()
        assert done.status == agent.JS_SUCCESS
        assert done.history == [agent.JS_RUNNING, agent.JS_RUNNING, agent.JS_SUCCESS]
        assert done.error == ""
        assert job_id not in record.running

        print(
            f"\nlivekit-agents {REFERENCE_VERSION}: start->register {register_s:.2f} s, "
            f"dispatch->entrypoint {(seen['entered_at'] - dispatched_wall) * 1000:.0f} ms, "
            f"dispatch->JS_SUCCESS {done_s * 1000:.0f} ms"
        )

    # SIGTERM: the official worker drains, closes its socket and exits cleanly
    assert ref.process.returncode == 0, ref.log_tail()
    assert server.agents.workers == {}


async def test_official_worker_obeys_termination_and_reports_its_load(
    reference_python: str, tmp_path: Path
) -> None:
    async with (
        open_local_server(port=0) as server,
        reference_worker(reference_python, server.url, tmp_path) as ref,
    ):
        record = await ref.registered(server)
        _dispatch(server, "stay-room", "stay")
        with trio.fail_after(TIMEOUT):
            job = await server.wait_for_job(room="stay-room")
        await ref.marker(job.job.id)
        # UpdateWorkerStatus every 2.5 s: the running job shows in job_count
        with trio.fail_after(TIMEOUT):
            await server.agents.changes.wait_until(lambda: record.job_count == 1)
        assert record.status == agent.WS_AVAILABLE
        assert job.status == agent.JS_RUNNING

        assert server.agents.terminate(job.job.id) is True
        with trio.fail_after(TIMEOUT):
            done = await server.wait_for_job_status(job.job.id, agent.JS_SUCCESS, agent.JS_FAILED)
        assert done.status == agent.JS_SUCCESS
        assert done.history == [agent.JS_RUNNING, agent.JS_RUNNING, agent.JS_SUCCESS]
        assert server.agents.terminate(job.job.id) is False
        with trio.fail_after(TIMEOUT):
            await server.agents.changes.wait_until(lambda: record.job_count == 0)


async def test_official_worker_rejection_ends_the_job_without_entrypoint(
    reference_python: str, tmp_path: Path
) -> None:
    async with (
        open_local_server(port=0) as server,
        reference_worker(reference_python, server.url, tmp_path) as ref,
    ):
        await ref.registered(server)
        _dispatch(server, "reject-room", "reject")
        with trio.fail_after(TIMEOUT):
            await server.agents.changes.wait_until(lambda: bool(server.agents.jobs))
        job_id = _only_job(server, "reject-room")
        with trio.fail_after(TIMEOUT):
            done = await server.wait_for_job_status(job_id, agent.JS_SUCCESS, agent.JS_FAILED)
        # reject(terminate=True): the server ends the job as a success, with no assignment
        assert done.status == agent.JS_SUCCESS
        assert done.history == [agent.JS_SUCCESS]
        assert done.worker_id is None
        assert not ref.marker_path(job_id).exists()


async def test_official_worker_reports_a_raising_entrypoint_as_success(
    reference_python: str, tmp_path: Path
) -> None:
    async with (
        open_local_server(port=0) as server,
        reference_worker(reference_python, server.url, tmp_path) as ref,
    ):
        await ref.registered(server)
        _dispatch(server, "raise-room", "raise")
        with trio.fail_after(TIMEOUT):
            job = await server.wait_for_job(room="raise-room")
        assert (await ref.marker(job.job.id))["job_id"] == job.job.id
        with trio.fail_after(TIMEOUT):
            done = await server.wait_for_job_status(job.job.id, agent.JS_SUCCESS, agent.JS_FAILED)
        # livekit-agents logs the exception, shuts the job down and its process
        # exits with code 0: the server is told JS_SUCCESS, not JS_FAILED
        assert done.status == agent.JS_SUCCESS
        assert done.error == ""


async def _serve(
    port: int, stopped: trio.Event, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a stand-in on ``port`` until cancelled; report (server, its cancel scope)."""
    try:
        with trio.CancelScope() as scope:
            async with open_local_server(port=port) as server:
                task_status.started((server, scope))
                await trio.sleep_forever()
    finally:
        stopped.set()


async def test_official_worker_reregisters_after_a_server_restart_with_its_jobs(
    reference_python: str,
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        first_stopped = trio.Event()
        first, first_scope = await nursery.start(_serve, 0, first_stopped)
        port = int(first.url.rsplit(":", 1)[1])
        async with reference_worker(reference_python, first.url, tmp_path) as ref:
            old = await ref.registered(first)
            _dispatch(first, "migrate-room", "stay")
            with trio.fail_after(TIMEOUT):
                job = await first.wait_for_job(room="migrate-room")
            job_id = job.job.id
            await ref.marker(job_id)

            # the server goes away; a new one comes up on the same address
            first_scope.cancel()
            await first_stopped.wait()
            second, second_scope = await nursery.start(_serve, port, trio.Event())
            new = await ref.registered(second)
            assert new.id != old.id
            # right after registering, the worker announces the job it still runs
            with trio.fail_after(TIMEOUT):
                await second.agents.changes.wait_until(lambda: job_id in new.running)
            # and the job still obeys the server: end it through the new connection
            new.send(protocol.JobTermination(job_id=job_id))
            with trio.fail_after(TIMEOUT):
                await second.agents.changes.wait_until(lambda: job_id not in new.running)
        assert ref.process.returncode == 0, ref.log_tail()
        second_scope.cancel()
