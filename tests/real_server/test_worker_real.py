"""The worker against the real livekit-server, with the official worker beside it.

Every scenario runs twice: once with trio-agents (``trio_agent.py``) and once
with the official ``livekit-agents`` worker (``tests/conformance/
reference_agent.py``, from its own venv).  Both are the same agent: the job's
metadata picks what the entrypoint does, and it writes marker files saying
what it saw.  No entrypoint joins its room (that needs WebRTC in the
namespace), so these workers only signal and run in the root namespace.

What the server recorded is read from its Twirp API (``ListDispatch``) and,
where the API shows nothing (worker registration, the worker's job status
updates, its load), from the server's debug log.  Where the two workers
differ, the test says what each one does (``EXPECTED[...]``) and
docs/deviations.md says which is right.

The shared workers (one per peer, on the session's server) serve the
scenarios that leave the server as they found it; automatic dispatch (which
would take every room of the session), the server restart, and SIGTERM run on
a dedicated server per peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio
from livekit.protocol import agent

from tests.real_server.harness import ServerProcess
from trio_agents import api

pytestmark = pytest.mark.real_server

PEERS = ("trio-agents", "livekit-agents")
SCRIPTS = {
    "trio-agents": Path(__file__).with_name("trio_agent.py"),
    "livekit-agents": Path(__file__).parents[1] / "conformance" / "reference_agent.py",
}
#: Generous bound on every wait: workers start forkservers and job processes.
TIMEOUT = 60.0
#: How long a worker gets to drain and exit after SIGTERM before it is killed.
STOP_GRACE = 30.0
#: Not the defaults, so that the room token shows the worker's permissions.
PERMISSIONS = {"can_publish_data": False, "hidden": True}
LOAD_THRESHOLD = 0.75
#: Rooms of these tests outlive the server's 5 s empty timeout.
ROOM_EMPTY_TIMEOUT = 300

#: Where the two workers legitimately behave differently (docs/deviations.md).
EXPECTED: dict[str, dict[str, Any]] = {
    "trio-agents": {
        # the job's outcome: the entrypoint raised
        "raise_status": (
            "JS_FAILED",
            "entrypoint raised RuntimeError: conformance entrypoint failed on purpose",
        ),
        "termination_reason": "job terminated by the server",
        # after re-registering, the running job is re-announced as JS_RUNNING
        "reannounces_running_jobs": True,
    },
    "livekit-agents": {
        # the job process exited with code 0: success, whatever the entrypoint did
        "raise_status": ("JS_SUCCESS", ""),
        "termination_reason": "parent process shutdown",
        "reannounces_running_jobs": False,
    },
}
T = TypeVar("T")
_FOREIGN_ENV = (
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LIVEKIT_AGENT_NAME",
    "LIVEKIT_AGENT_NAME_OVERRIDE",
    "LIVEKIT_WORKER_TOKEN",
    "LIVEKIT_AGENT_DEPLOYMENT",
    "LIVEKIT_LOG_LEVEL",
)


# --- the server's log --------------------------------------------------------------------


def server_events(server: ServerProcess, message: str, since: int = 0, **fields: Any) -> list[
    dict[str, Any]
]:
    """The server's log records with ``message`` (from byte ``since``) whose fields match."""
    found = []
    for line in server.log_text()[since:].splitlines():
        parts = line.split("\t")
        if len(parts) < 5 or parts[4] != message:
            continue
        record: dict[str, Any] = {"level": parts[1]}
        if len(parts) > 5:
            with contextlib.suppress(ValueError):
                record.update(json.loads(parts[5]))
        if all(record.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


async def until(predicate: Callable[[], T], timeout: float = TIMEOUT) -> T:  # noqa: ASYNC109
    """Poll what other processes show (a log, a file, an exit) until ``predicate()`` is true."""
    with trio.fail_after(timeout):
        while not (value := predicate()):  # noqa: ASYNC110 - nothing to wait on but polling
            await trio.sleep(0.05)
    return value


async def server_event(
    server: ServerProcess, message: str, since: int = 0, **fields: Any
) -> dict[str, Any]:
    """Wait for the first log record of ``message`` with these fields."""
    return (await until(lambda: server_events(server, message, since, **fields)))[0]


def log_size(server: ServerProcess) -> int:
    return len(server.log_text())


# --- a worker in a subprocess --------------------------------------------------------------


@attrs.define(eq=False)
class Worker:
    """One worker process (either peer), as the test sees it."""

    peer: str
    agent_name: str
    process: subprocess.Popen[bytes]
    marker_dir: Path
    log_path: Path
    load_file: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"the {self.peer} worker exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def marker_path(self, job_id: str, suffix: str = "") -> Path:
        return self.marker_dir / f"{job_id}{suffix}.json"

    async def marker(self, job_id: str, suffix: str = "") -> dict[str, Any]:
        """What the job recorded: at entry (``""``) or in its shutdown callback (``".end"``)."""
        path = self.marker_path(job_id, suffix)

        def written() -> bool:
            if suffix == "":
                self.check_alive()
            return path.exists()

        await until(written)
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def release(self, job_id: str | None = None) -> None:
        """Let a ``wait`` job (or all of them) shut itself down."""
        name = f"{job_id}.release" if job_id else "release-all"
        (self.marker_dir / name).touch()

    def set_load(self, load: float) -> None:
        tmp = self.load_file.with_suffix(".tmp")
        tmp.write_text(str(load))
        tmp.replace(self.load_file)

    def stop(self) -> None:
        """Release every job, SIGTERM (drain), then SIGKILL the whole process group."""
        self.release()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE)
        # the worker ran in its own session: this reaches its job processes, and nothing else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def python_for(peer: str, request: pytest.FixtureRequest) -> str:
    if peer == "livekit-agents":
        python: str = request.getfixturevalue("reference_python")
        return python
    return sys.executable


def start_worker(
    peer: str,
    python: str,
    server: ServerProcess,
    workdir: Path,
    agent_name: str,
    *,
    api_secret: str | None = None,
    args: tuple[str, ...] = (),
) -> Worker:
    workdir.mkdir(parents=True, exist_ok=True)
    marker_dir = workdir / "markers"
    marker_dir.mkdir(exist_ok=True)
    load_file = workdir / "load"
    load_file.write_text("0.0")
    log_path = workdir / "worker.log"
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(
        LIVEKIT_URL=server.url,
        LIVEKIT_API_KEY=server.api_key,
        LIVEKIT_API_SECRET=api_secret or server.api_secret,
        REFERENCE_AGENT_NAME=agent_name,
        REFERENCE_AGENT_MARKER_DIR=str(marker_dir),
        REFERENCE_AGENT_EXECUTOR="process",
        REFERENCE_AGENT_PERMISSIONS=json.dumps(PERMISSIONS),
        REFERENCE_AGENT_LOAD_FILE=str(load_file),
        REFERENCE_AGENT_LOAD_THRESHOLD=str(LOAD_THRESHOLD),
        PYTHONUNBUFFERED="1",
    )
    argv = [python, str(SCRIPTS[peer]), "start", *args]
    if peer == "trio-agents" and not args:
        argv += ["--log-format", "text"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(peer, agent_name, process, marker_dir, log_path, load_file)


def wait_registered(worker: Worker, server: ServerProcess, since: int = 0) -> dict[str, Any]:
    """Block until the server logged this worker's registration; that record."""
    end = time.monotonic() + TIMEOUT
    while True:
        found = server_events(server, "worker registered", since, agentName=worker.agent_name)
        if found:
            return found[0]
        worker.check_alive()
        if time.monotonic() > end:
            pytest.fail(f"the {worker.peer} worker did not register:\n{worker.log_tail()}")
        time.sleep(0.05)


@attrs.define
class Shared:
    """A worker of one peer on the session's server, shared by a module's scenarios."""

    peer: str
    worker: Worker
    server: ServerProcess
    registration: dict[str, Any]

    @property
    def worker_id(self) -> str:
        worker_id: str = self.registration["workerID"]
        return worker_id

    def lk(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret)

    async def room(self, lk: api.LiveKitAPI, label: str, **kwargs: Any) -> str:
        name = f"{label}-{self.peer}-{uuid.uuid4().hex[:8]}"
        await lk.room.create_room(
            api.CreateRoomRequest(name=name, empty_timeout=ROOM_EMPTY_TIMEOUT, **kwargs)
        )
        return name

    async def dispatch(
        self, lk: api.LiveKitAPI, room: str, mode: str
    ) -> tuple[api.AgentDispatch, str]:
        metadata = json.dumps({"mode": mode, "nonce": uuid.uuid4().hex})
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=self.worker.agent_name, room=room, metadata=metadata
            )
        )
        return dispatch, metadata

    async def listed(
        self, lk: api.LiveKitAPI, room: str, dispatch_id: str, *, jobs: int = 0
    ) -> api.AgentDispatch:
        """The dispatch as ``ListDispatch`` shows it, once it lists ``jobs`` jobs.

        LiveKit adds a job to its dispatch only when the launch is over, which
        waits for its check of the registered agent names (up to 5 s after a
        worker registered).
        """
        with trio.fail_after(TIMEOUT):
            while True:
                for dispatch in await lk.agent_dispatch.list_dispatch(room):
                    if dispatch.id == dispatch_id and len(dispatch.state.jobs) >= jobs:
                        return dispatch
                await trio.sleep(0.1)

    async def assigned(self, room: str, since: int = 0) -> str:
        """The id of the job the server assigned to this worker in ``room``."""
        record = await server_event(
            self.server, "assigned job to worker", since, room=room, workerID=self.worker_id
        )
        job_id: str = record["jobID"]
        return job_id


@pytest.fixture(scope="module", params=PEERS)
def shared(
    request: pytest.FixtureRequest,
    livekit_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    peer: str = request.param
    python = python_for(peer, request)
    name = f"real-{peer}-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        peer, python, livekit_server, tmp_path_factory.mktemp(f"worker-{peer}"), name
    )
    try:
        registration = wait_registered(worker, livekit_server)
        yield Shared(peer, worker, livekit_server, registration)
    finally:
        worker.stop()


# --- scenarios on the shared workers ------------------------------------------------------


async def test_registers_and_runs_an_explicit_dispatch_with_its_metadata(shared: Shared) -> None:
    # registered as what it is: its agent name, no namespace (deprecated; neither
    # worker sends one), room jobs
    assert shared.registration["agentName"] == shared.worker.agent_name
    assert shared.registration["namespace"] == ""
    assert shared.registration["jobType"] == "JT_ROOM"
    assert shared.worker_id.startswith("AW_")

    async with shared.lk() as lk:
        room = await shared.room(lk, "explicit")
        since = log_size(shared.server)
        dispatch, metadata = await shared.dispatch(lk, room, "shutdown")
        assert dispatch.id.startswith("AD_")
        job_id = await shared.assigned(room, since)
        seen = await shared.worker.marker(job_id)
        ended = await server_event(shared.server, "job ended", since, jobID=job_id)
        end = await shared.worker.marker(job_id, ".end")
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    # the entrypoint got the job the server built, for the worker it registered as
    assert seen["job_id"] == job_id
    assert seen["dispatch_id"] == dispatch.id
    assert seen["metadata"] == metadata
    assert seen["agent_name"] == shared.worker.agent_name
    assert seen["room"] == room
    assert seen["namespace"] == ""
    assert seen["worker_id"] == shared.worker_id
    # with the server's token: the identity and attributes the worker answered,
    # and the permissions it registered with
    token = seen["token"]
    assert token["identity"] == f"agent-{job_id}"
    assert token["name"] == "conformance agent"
    assert token["kind"] == "agent"
    assert token["attributes"] == {
        "lk.agent.name": shared.worker.agent_name,
        "conformance.mode": "shutdown",
        "lk.agent_name": shared.worker.agent_name,  # added by the server
    }
    assert (token["room"], token["room_join"], token["agent"]) == (room, True, True)
    assert token["can_publish"] is True
    assert token["can_subscribe"] is True
    assert token["can_publish_data"] is False  # PERMISSIONS
    assert token["can_update_own_metadata"] is True
    assert token["hidden"] is True  # PERMISSIONS

    # the job ended itself; the worker's UpdateJobStatus reached the server
    assert (ended["status"], ended["error"], ended["workerID"]) == (
        "JS_SUCCESS",
        "",
        shared.worker_id,
    )
    assert end["reason"] == "conformance entrypoint done"


async def test_list_dispatch_keeps_the_state_of_the_assignment(shared: Shared) -> None:
    """LiveKit OSS does not copy UpdateJobStatus into the dispatch's job state."""
    async with shared.lk() as lk:
        room = await shared.room(lk, "list")
        since = log_size(shared.server)
        dispatch, _ = await shared.dispatch(lk, room, "shutdown")
        job_id = await shared.assigned(room, since)
        await shared.worker.marker(job_id)
        # the worker reported the end, and the server's worker record took it
        ended = await server_event(shared.server, "job ended", since, jobID=job_id)
        assert ended["status"] == "JS_SUCCESS"
        listed = await shared.listed(lk, room, dispatch.id, jobs=1)
        # (every room also has the automatic dispatch, agent name "", from its creation)
        assert sorted(d.agent_name for d in await lk.agent_dispatch.list_dispatch(room)) == [
            "",
            shared.worker.agent_name,
        ]
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    assert listed.agent_name == shared.worker.agent_name
    (job,) = listed.state.jobs
    assert job.id == job_id
    assert job.dispatch_id == dispatch.id
    # ... but ListDispatch still shows the job as the assignment left it
    assert job.state.status == agent.JS_RUNNING
    assert job.state.ended_at == 0
    assert job.state.error == ""
    assert job.state.worker_id == shared.worker_id
    assert job.state.participant_identity == f"agent-{job_id}"
    assert job.state.started_at > 0


async def test_a_raising_entrypoint_is_reported_as_each_worker_decides(shared: Shared) -> None:
    async with shared.lk() as lk:
        room = await shared.room(lk, "raise")
        since = log_size(shared.server)
        await shared.dispatch(lk, room, "raise")
        job_id = await shared.assigned(room, since)
        assert (await shared.worker.marker(job_id))["job_id"] == job_id
        ended = await server_event(shared.server, "job ended", since, jobID=job_id)
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    status, error = EXPECTED[shared.peer]["raise_status"]
    assert (ended["status"], ended["error"]) == (status, error)


async def test_a_rejected_job_ends_and_a_declined_one_finds_no_worker(shared: Shared) -> None:
    async with shared.lk() as lk:
        # reject(terminate=True): the server records the job as done, never assigned
        rejected = await shared.room(lk, "reject")
        dispatch, _ = await shared.dispatch(lk, rejected, "reject")
        (job,) = (await shared.listed(lk, rejected, dispatch.id, jobs=1)).state.jobs
        assert job.dispatch_id == dispatch.id
        assert job.state.status == agent.JS_SUCCESS
        assert job.state.ended_at > 0
        assert job.state.worker_id == shared.worker_id
        assert job.state.participant_identity == ""

        # reject(terminate=False): the server tries the other workers (there are
        # none with this name) and leaves the dispatch without a job
        declined = await shared.room(lk, "decline")
        since = log_size(shared.server)
        dispatch, _ = await shared.dispatch(lk, declined, "decline")
        refused = await server_event(
            shared.server, "failed to assign job to worker", since, room=declined
        )
        assert refused["workerID"] == shared.worker_id
        assert refused["error"] == "worker not available"
        await server_event(shared.server, "no worker available to handle job", since, room=declined)
        assert list((await shared.listed(lk, declined, dispatch.id)).state.jobs) == []
        for room in (rejected, declined):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    # neither entrypoint ran
    assert not shared.worker.marker_path(job.id).exists()
    assert not shared.worker.marker_path(refused["jobID"]).exists()


async def test_delete_dispatch_terminates_the_job(shared: Shared) -> None:
    async with shared.lk() as lk:
        room = await shared.room(lk, "terminate")
        since = log_size(shared.server)
        dispatch, _ = await shared.dispatch(lk, room, "wait")
        job_id = await shared.assigned(room, since)
        await shared.worker.marker(job_id)
        await lk.agent_dispatch.delete_dispatch(dispatch.id, room)
        # the server sends JobTermination and records the end itself ...
        ended = await server_event(shared.server, "job ended", since, jobID=job_id)
        assert (ended["status"], ended["error"]) == ("JS_SUCCESS", "")
        # ... the job shuts down (not released by the test) ...
        end = await shared.worker.marker(job_id, ".end")
        assert end["reason"] == EXPECTED[shared.peer]["termination_reason"]
        # ... and the worker's own final report comes after the server forgot the job
        await server_event(
            shared.server, "received job update for unknown job", since, jobID=job_id
        )
        assert [d.agent_name for d in await lk.agent_dispatch.list_dispatch(room)] == [""]
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_delete_room_does_not_reach_a_job_that_did_not_join(shared: Shared) -> None:
    """LiveKit ends a job on DeleteRoom only through its agent participant."""
    async with shared.lk() as lk:
        room = await shared.room(lk, "delete-room")
        since = log_size(shared.server)
        await shared.dispatch(lk, room, "wait")
        job_id = await shared.assigned(room, since)
        await shared.worker.marker(job_id)
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        await server_event(shared.server, "room closed", since, room=room)
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        assert list(listed.rooms) == []
    # the server sends no JobTermination: the job goes on (a joined job would
    # have been disconnected from the room, and shut down by that)
    await trio.sleep(2.0)
    shared.worker.check_alive()
    assert not shared.worker.marker_path(job_id, ".end").exists()
    assert server_events(shared.server, "job ended", since, jobID=job_id) == []
    # it ends when it decides to; the server's worker record still had it
    shared.worker.release(job_id)
    assert (await shared.worker.marker(job_id, ".end"))["reason"] == "released by the test"
    ended = await server_event(shared.server, "job ended", since, jobID=job_id)
    assert (ended["status"], ended["workerID"]) == ("JS_SUCCESS", shared.worker_id)


async def test_load_reaches_the_server_and_decides_dispatch(shared: Shared) -> None:
    worker_id = shared.worker_id
    async with shared.lk() as lk:
        try:
            since = log_size(shared.server)
            shared.worker.set_load(1.0)  # >= LOAD_THRESHOLD: the worker says WS_FULL
            await server_event(
                shared.server, "worker status changed", since, workerID=worker_id, status="WS_FULL"
            )
            full = await shared.room(lk, "full")
            dispatch, _ = await shared.dispatch(lk, full, "shutdown")
            # the server asks its nodes who can take it; none can
            await server_event(
                shared.server,
                "failed to send job request",
                since,
                agentName=shared.worker.agent_name,
                error="no servers available (received 1 responses)",
            )
            assert list((await shared.listed(lk, full, dispatch.id)).state.jobs) == []
        finally:
            since = log_size(shared.server)
            shared.worker.set_load(0.0)
        await server_event(
            shared.server, "worker status changed", since, workerID=worker_id, status="WS_AVAILABLE"
        )
        room = await shared.room(lk, "available")
        await shared.dispatch(lk, room, "shutdown")
        job_id = await shared.assigned(room, since)
        await shared.worker.marker(job_id)
        # the dispatch made while the worker was full is not tried again
        assert list((await shared.listed(lk, full, dispatch.id)).state.jobs) == []
        for name in (full, room):
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def dispatch_until(shared: Shared, lk: api.LiveKitAPI, *, assigned: bool) -> list[str]:
    """Dispatch into new rooms until the server assigns a job, or finds no worker for
    one while the worker's status is ``WS_AVAILABLE``; the rooms it made.

    Nothing says when a worker's load report arrived (the server logs changes of
    status only), so the test asks until the answer changes.  A worker also says
    ``WS_FULL`` for a moment while it launches a job (the job it reserved counts
    towards its load); a refusal then proves nothing about the load and is not
    counted.
    """
    server, name, worker_id = shared.server, shared.worker.agent_name, shared.worker_id
    start = log_size(server)
    rooms: list[str] = []
    with trio.fail_after(TIMEOUT):
        while True:
            since = log_size(server)
            changes = server_events(server, "worker status changed", start, workerID=worker_id)
            status = changes[-1]["status"] if changes else "WS_AVAILABLE"
            room = await shared.room(lk, "load")
            rooms.append(room)
            await shared.dispatch(lk, room, "shutdown")

            def answer(room: str = room, since: int = since) -> str | None:
                if server_events(server, "assigned job to worker", since, room=room):
                    return "assigned"
                if server_events(server, "failed to send job request", since, agentName=name):
                    return "refused"
                return None

            got = await until(answer)
            if assigned and got == "assigned":
                return rooms
            available_throughout = status == "WS_AVAILABLE" and not server_events(
                server, "worker status changed", since, workerID=worker_id
            )
            if not assigned and got == "refused" and available_throughout:
                return rooms


async def test_a_load_above_the_servers_target_keeps_an_available_worker_idle(
    shared: Shared,
) -> None:
    """LiveKit offers jobs only to workers whose load is below its target load, 0.7."""
    async with shared.lk() as lk:
        try:
            shared.worker.set_load(0.72)  # below LOAD_THRESHOLD: the worker stays available
            rooms = await dispatch_until(shared, lk, assigned=False)
        finally:
            shared.worker.set_load(0.0)
        rooms += await dispatch_until(shared, lk, assigned=True)
        for room in rooms:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))


# --- scenarios on a dedicated server ------------------------------------------------------


@pytest.mark.parametrize("peer", PEERS)
async def test_automatic_dispatch_survives_a_server_restart_then_drains_on_sigterm(
    peer: str,
    request: pytest.FixtureRequest,
    livekit_server_factory: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    python = python_for(peer, request)
    server = livekit_server_factory()
    worker = start_worker(peer, python, server, tmp_path / "worker", "")  # automatic dispatch
    expected = EXPECTED[peer]
    try:
        first = wait_registered(worker, server)
        assert first["agentName"] == ""
        shared = Shared(peer, worker, server, first)
        async with shared.lk() as lk:
            # a new room gets the worker without asking for it; the mode comes
            # from the room's metadata (an automatic dispatch has none of its own)
            since = log_size(server)
            room1 = await shared.room(lk, "auto", metadata=json.dumps({"mode": "wait"}))
            job1 = await shared.assigned(room1, since)
            seen1 = await worker.marker(job1)
            assert (seen1["agent_name"], seen1["metadata"], seen1["room"]) == ("", "", room1)
            (auto,) = await lk.agent_dispatch.list_dispatch(room1)
            assert auto.agent_name == ""
            assert seen1["dispatch_id"] == auto.id
            auto = await shared.listed(lk, room1, auto.id, jobs=1)
            assert [j.id for j in auto.state.jobs] == [job1]

        # the server restarts (crash); the worker registers again, its job runs on
        since = log_size(server)
        server.kill()
        server.start()
        second = wait_registered(worker, server, since)
        shared.registration = second
        assert second["workerID"] != first["workerID"]
        worker.check_alive()
        assert not worker.marker_path(job1, ".end").exists()

        async with shared.lk() as lk:
            # and it takes jobs from the new server
            room2 = await shared.room(lk, "auto2", metadata=json.dumps({"mode": "wait"}))
            job2 = await shared.assigned(room2, since)
            assert (await worker.marker(job2))["worker_id"] == second["workerID"]
            # the restarted server does not know job1; a JS_RUNNING re-announcement
            # for it is logged as an update for an unknown job
            reannounced = server_events(
                server, "received job update for unknown job", since, jobID=job1
            )
            assert bool(reannounced) is expected["reannounces_running_jobs"]

            # SIGTERM: the worker drains (full for new jobs), its jobs go on
            since = log_size(server)
            worker.process.send_signal(signal.SIGTERM)
            await server_event(
                server,
                "worker status changed",
                since,
                workerID=second["workerID"],
                status="WS_FULL",
            )
            await shared.room(lk, "auto3", metadata=json.dumps({"mode": "wait"}))
            await server_event(
                server,
                "failed to send job request",
                since,
                agentName="",
                error="no servers available (received 1 responses)",
            )
            worker.check_alive()
            for job_id in (job1, job2):
                assert not worker.marker_path(job_id, ".end").exists()

        # once its jobs end, it says goodbye and exits
        worker.release()
        for job_id in (job1, job2):
            assert (await worker.marker(job_id, ".end"))["reason"] == "released by the test"
        await until(lambda: worker.process.poll() is not None)
        assert worker.process.returncode == 0, worker.log_tail()
        ended2 = await server_event(server, "job ended", since, jobID=job2)
        assert ended2["status"] == "JS_SUCCESS"
        await server_event(server, "received job update for unknown job", since, jobID=job1)
        await server_event(server, "last worker deregistered", since, workerID=second["workerID"])
    finally:
        worker.stop()
        server.kill()  # a dedicated server: no need for its slow graceful stop


@pytest.mark.parametrize("peer", PEERS)
async def test_bad_credentials(
    peer: str, request: pytest.FixtureRequest, livekit_server: ServerProcess, tmp_path: Path
) -> None:
    python = python_for(peer, request)
    worker = start_worker(
        peer,
        python,
        livekit_server,
        tmp_path,
        f"bad-{peer}-{uuid.uuid4().hex[:8]}",
        api_secret="not-the-secret-of-this-server-0123456789",
        args=("--log-level", "WARNING" if peer == "trio-agents" else "warn"),
    )

    def output() -> str:
        return worker.log_path.read_text(errors="replace")

    try:
        if peer == "trio-agents":
            # one line, exit status 1, at once
            await until(lambda: worker.process.poll() is not None)
            assert worker.process.returncode == 1, output()
            assert output().splitlines() == [
                f"error: the server at {livekit_server.url} rejected the credentials "
                "(api key 'devkey'): invalid token: <token>, "
                "error: token signature is invalid: signature is invalid"
            ]
        else:
            # it retries (16 attempts, about two minutes, before it gives up)
            await until(
                lambda: worker.process.poll() is not None
                or output().count("failed to connect to livekit") >= 2
            )
            assert worker.process.poll() is None, output()
            assert "401" in output(), output()
        assert server_events(livekit_server, "worker registered", agentName=worker.agent_name) == []
    finally:
        worker.stop()
