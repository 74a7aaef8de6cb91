"""AgentServer against the stand-in server (and a scripted one), in memory.

Each test runs worker, stand-in and INLINE jobs in one trio run under an
autojumping mock clock, so LiveKit's timeouts (7.5 s assignment, 10 s
availability, 2.5 s status) cost no real time.  The stand-in is the judge:
what it recorded (workers, job history, participants in rooms) is what a
LiveKit server would have seen.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
from livekit.protocol import agent, agent_dispatch, models
from worker_helpers import (
    FakeConnection,
    make_worker,
    offer,
    open_fake_server,
    register_then,
    running,
    watchdog,
)

from trio_agents import (
    AgentServer,
    AssignmentTimeoutError,
    JobContext,
    JobExecutorType,
    JobRequest,
    ServerType,
    WorkerError,
    WorkerPermissions,
    protocol,
)
from trio_agents._version import __version__
from trio_agents.testing import JobRecord, LocalServer, WorkerRecord, open_local_server

RoomAgentDispatch = agent_dispatch.RoomAgentDispatch
TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as s, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        yield s
        nursery.cancel_scope.cancel()


class PreferOrder(random.Random):
    """Makes the stand-in offer jobs to workers in a fixed order (first listed first)."""

    def __init__(self, order: Sequence[AgentServer]) -> None:
        super().__init__(0)
        self.order = order

    def choices(self, population: Any, weights: Any = None, **kwargs: Any) -> list[Any]:
        rank = {ws.worker_id: i for i, ws in enumerate(self.order)}
        return [min(population, key=lambda w: rank.get(w.id, math.inf))]


async def finished(server: LocalServer, job_id: str) -> Any:
    return await server.wait_for_job_status(job_id, *TERMINAL)


async def launched(server: LocalServer, record: JobRecord) -> None:
    """Wait until the worker reported JS_RUNNING (after the server's own assignment entry)."""
    await server.agents.changes.wait_until(lambda: len(record.history) >= 2)


# --- registration ----------------------------------------------------------------------


async def test_worker_registers_and_reports_status_and_load(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(
        server.url,
        load_fnc=lambda: 0.25,
        permissions=WorkerPermissions(can_publish=False, hidden=True),
    )

    @ws.rtc_session(agent_name="reg-agent")
    async def entry(ctx: JobContext) -> None:
        raise AssertionError("no job expected")

    async with running(ws):
        worker_id = await ws.wait_registered()
        assert worker_id == ws.worker_id
        assert worker_id.startswith("AW_")
        record = server.agents.workers[worker_id]
        assert (record.agent_name, record.version, record.job_type) == (
            "reg-agent",
            __version__,
            agent.JT_ROOM,
        )
        assert record.permissions.agent
        assert record.permissions.hidden
        assert not record.permissions.can_publish
        assert record.permissions.can_subscribe
        # UpdateWorkerStatus every 2.5 s, with the sampled load
        await server.agents.changes.wait_until(lambda: record.load == 0.25)
        assert (record.status, record.job_count) == (agent.WS_AVAILABLE, 0)
    assert worker_id not in server.agents.workers  # aclose() closed the connection


async def test_participant_server_type_gets_one_job_per_joining_participant(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    publishers: list[str] = []

    @ws.rtc_session(type=ServerType.PARTICIPANT)
    async def entry(ctx: JobContext) -> None:
        assert ctx.job.type == agent.JT_PARTICIPANT
        publishers.append(ctx.job.participant.identity)
        ctx.shutdown("seen")

    async with running(ws):
        assert server.agents.workers[ws.worker_id or ""].job_type == agent.JT_PARTICIPANT
        server.create_room("people")
        async with (
            server.simulated_participant("alice", room="people"),
            server.simulated_participant("bob", room="people"),
        ):
            await server.agents.changes.wait_until(
                lambda: sum(r.status == agent.JS_SUCCESS for r in server.agents.jobs.values()) == 2
            )
    assert sorted(publishers) == ["alice", "bob"]


# --- dispatch ------------------------------------------------------------------------------


async def test_automatic_and_explicit_dispatch_reach_only_matching_workers(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    auto = make_worker(server.url)
    named = make_worker(server.url)
    ran: list[tuple[str, str, str, str]] = []

    async def entry(ctx: JobContext) -> None:
        ran.append((ctx.worker_id, ctx.job.room.name, ctx.job.agent_name, ctx.job.metadata))
        ctx.shutdown("done")

    auto.rtc_session(entry, agent_name="")
    named.rtc_session(entry, agent_name="named")

    async with running(auto, named):
        server.create_room("auto-room")
        server.rooms.create(
            "explicit-room", agents=[RoomAgentDispatch(agent_name="named", metadata="m1")]
        )
        await server.agents.changes.wait_until(
            lambda: sum(r.status == agent.JS_SUCCESS for r in server.agents.jobs.values()) == 2
        )
        await trio.sleep(30)  # nothing else arrives
    assert set(ran) == {
        (named.worker_id, "explicit-room", "named", "m1"),
        (auto.worker_id, "auto-room", "", ""),
    }
    assert len(ran) == 2
    assert len(server.agents.jobs) == 2


async def test_default_accept_uses_agent_job_id_identity_and_agent_name_attribute(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    joined = trio.Event()

    @ws.rtc_session(agent_name="ident")
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        joined.set()
        await trio.sleep_forever()

    async with running(ws):
        server.rooms.create("id-room", agents=[RoomAgentDispatch(agent_name="ident")])
        record = await server.wait_for_job(room="id-room")
        await joined.wait()
        room = server.rooms.get("id-room")
        assert room is not None
        identity = f"agent-{record.job.id}"
        assert list(room.participants) == [identity]
        info = room.participants[identity].info
        assert info.kind == models.ParticipantInfo.AGENT
        assert info.attributes["lk.agent.name"] == "ident"  # the worker's key
        assert info.attributes["lk.agent_name"] == "ident"  # the server's key
        assert record.job.state.participant_identity == identity


async def test_custom_accept_arguments_and_request_properties(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    joined = trio.Event()
    seen: dict[str, Any] = {}

    async def on_request(req: JobRequest) -> None:
        seen.update(
            id=req.id, job_id=req.job.id, room=req.room.name, agent_name=req.agent_name,
            publisher=req.publisher,
        )
        with pytest.raises(TypeError, match="identity"):
            await req.accept(identity=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="attributes"):
            await req.accept(attributes={"k": 1})  # type: ignore[dict-item]
        await req.accept(name="Bot", identity="bot-1", metadata="meta", attributes={"k": "v"})
        with pytest.raises(RuntimeError, match="already answered"):
            await req.reject()

    @ws.rtc_session(agent_name="custom", on_request=on_request)
    async def entry(ctx: JobContext) -> None:
        seen["accept_arguments"] = ctx.info.accept_arguments
        await ctx.connect()
        joined.set()
        await trio.sleep_forever()

    async with running(ws):
        server.rooms.create("custom-room", agents=[RoomAgentDispatch(agent_name="custom")])
        record = await server.wait_for_job(room="custom-room")
        await joined.wait()
        room = server.rooms.get("custom-room")
        assert room is not None
        info = room.participants["bot-1"].info
        assert (info.name, info.metadata) == ("Bot", "meta")
        assert dict(info.attributes) == {
            "k": "v",
            "lk.agent.name": "custom",
            "lk.agent_name": "custom",
        }
    assert seen["id"] == seen["job_id"] == record.job.id
    assert (seen["room"], seen["agent_name"], seen["publisher"]) == ("custom-room", "custom", None)
    assert seen["accept_arguments"].identity == "bot-1"


# --- job status ---------------------------------------------------------------------------


async def test_running_then_success_after_the_job_shuts_itself_down(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    go = trio.Event()

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        await go.wait()
        ctx.shutdown("all done")

    async with running(ws):
        server.create_room("status-room")
        record = await server.wait_for_job(room="status-room")
        # the assignment (server) then JS_RUNNING at launch (worker)
        await launched(server, record)
        assert record.history == [agent.JS_RUNNING, agent.JS_RUNNING]
        assert [j.job.id for j in ws.active_jobs] == [record.job.id]
        await trio.sleep(60)  # the entrypoint is parked: nothing changes
        assert record.history == [agent.JS_RUNNING, agent.JS_RUNNING]
        go.set()
        await finished(server, record.job.id)
        assert record.history == [agent.JS_RUNNING, agent.JS_RUNNING, agent.JS_SUCCESS]
        assert record.error == ""
        # reported before the job left its room; it is gone once its teardown ended
        with trio.fail_after(10):
            while ws.active_jobs:  # noqa: ASYNC110
                await trio.sleep(0.01)


async def test_returning_entrypoint_does_not_end_the_job(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()

    async with running(ws):
        server.create_room("returns")
        record = await server.wait_for_job(room="returns")
        await trio.sleep(120)
        assert record.status == agent.JS_RUNNING
        assert len(ws.active_jobs) == 1


@pytest.mark.parametrize(
    ("setup_fails", "expected"),
    [
        (False, "entrypoint raised ValueError: bad metadata 'x'"),
        (True, "setup_fnc failed: OSError: no model file"),
    ],
)
async def test_failures_are_reported_as_js_failed_with_the_real_error(
    autojump_clock: trio.abc.Clock, server: LocalServer, setup_fails: bool, expected: str
) -> None:
    def setup(proc: Any) -> None:
        if setup_fails:
            raise OSError("no model file")

    ws = make_worker(server.url, setup_fnc=setup)

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        raise ValueError(f"bad metadata {ctx.job.metadata or 'x'!r}")

    async with running(ws):
        server.create_room("failing")
        record = await server.wait_for_job(room="failing")
        await finished(server, record.job.id)
    assert record.status == agent.JS_FAILED
    assert record.error == expected


async def test_job_termination_runs_the_normal_teardown(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    reasons: list[str] = []
    cancelled: list[bool] = []
    started = trio.Event()

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: reasons.append(reason))
        await ctx.connect()
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(ctx.shutting_down.is_set())
            raise

    async with running(ws):
        server.create_room("terminated")
        record = await server.wait_for_job(room="terminated")
        await started.wait()
        assert server.agents.terminate(record.job.id)
        await finished(server, record.job.id)
        # reported while the agent was still in the room; it left in teardown
        room = server.rooms.get("terminated")
        assert room is not None
        with trio.fail_after(10):
            while f"agent-{record.job.id}" in room.participants:  # noqa: ASYNC110
                await trio.sleep(0.01)
        # a second termination for an ended job is not even sent
        assert not server.agents.terminate(record.job.id)
    assert reasons == ["job terminated by the server"]
    assert cancelled == [True]
    assert record.history[-1] == agent.JS_SUCCESS
    assert record.error == ""


# --- answering offers ------------------------------------------------------------------------


async def test_reject_with_terminate_ends_the_job_without_retry(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    asked: list[str] = []

    async def on_request(req: JobRequest) -> None:
        asked.append(req.id)
        await req.reject()  # terminate=True is the default

    a, b = make_worker(server.url), make_worker(server.url)
    for ws in (a, b):
        ws.rtc_session(_never_runs, on_request=on_request)

    async with running(a, b):
        server.create_room("rejected")
        await server.agents.changes.wait_until(lambda: len(server.agents.jobs) == 1)
        (record,) = server.agents.jobs.values()
        await finished(server, record.job.id)
        await trio.sleep(30)
    assert record.status == agent.JS_SUCCESS  # LiveKit ends a terminated offer as success
    assert record.worker_id is None
    assert len(record.attempts) == 1
    assert asked == [record.job.id]


async def _never_runs(ctx: JobContext) -> None:
    raise AssertionError("this worker must not run a job")


async def _park(ctx: JobContext) -> None:
    await ctx.connect()
    await trio.sleep_forever()


def _reject_no_terminate() -> Any:
    async def on_request(req: JobRequest) -> None:
        await req.reject(terminate=False)

    return on_request


def _never_answer() -> Any:
    async def on_request(req: JobRequest) -> None:
        await trio.sleep_forever()

    return on_request


def _raise() -> Any:
    async def on_request(req: JobRequest) -> None:
        raise RuntimeError("on_request bug")

    return on_request


def _return_silently() -> Any:
    async def on_request(req: JobRequest) -> None:
        return None

    return on_request


@pytest.mark.parametrize(
    ("make_on_request", "min_delay"),
    [
        (_reject_no_terminate, 0.0),
        (_raise, 0.0),
        (_return_silently, 0.0),
        # bounded: rejected before the server's 10 s availability timeout
        (_never_answer, 8.0),
    ],
    ids=["reject-no-terminate", "raises", "returns-without-answer", "never-answers"],
)
async def test_declining_without_terminate_lets_the_server_try_the_next_worker(
    autojump_clock: trio.abc.Clock,
    server: LocalServer,
    make_on_request: Any,
    min_delay: float,
) -> None:
    picky = make_worker(server.url)
    willing = make_worker(server.url)
    picky.rtc_session(_never_runs, on_request=make_on_request())
    willing.rtc_session(_park)

    async with running(picky, willing):
        server.agents.rng = PreferOrder([picky, willing])
        start = trio.current_time()
        server.create_room("second-choice")
        record = await server.wait_for_job(room="second-choice")
        took = trio.current_time() - start
        await launched(server, record)
        assert record.attempts == [picky.worker_id, willing.worker_id]
        assert record.worker_id == willing.worker_id
        assert min_delay <= took < 10.0
        assert picky.active_jobs == []
        assert len(willing.active_jobs) == 1


async def test_accept_returns_once_the_job_is_launched(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    """Work an on_request does after accept() does not delay (or cancel) the job."""
    ws = make_worker(server.url)
    started_at: list[float] = []
    after_accept: list[bool] = []

    async def on_request(req: JobRequest) -> None:
        await req.accept()
        after_accept.append(req.id in {j.job.id for j in ws.active_jobs})
        await trio.sleep(100)  # lingering: cut at the answer bound, job untouched

    @ws.rtc_session(on_request=on_request)
    async def entry(ctx: JobContext) -> None:
        started_at.append(trio.current_time())
        await ctx.connect()
        await trio.sleep_forever()

    async with running(ws):
        t0 = trio.current_time()
        server.create_room("eager")
        record = await server.wait_for_job(room="eager")
        await launched(server, record)
        assert after_accept == [True]
        assert started_at == [pytest.approx(t0)]
        await trio.sleep(30)
        assert record.status == agent.JS_RUNNING
        assert len(ws.active_jobs) == 1


async def test_a_slow_answer_and_a_slow_assignment_each_get_their_own_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """on_request answers after 5 s (< 8 s), the server assigns 6 s later (< 7.5 s):
    the job runs, though the two together take longer than either bound."""
    job = offer("AJ_patient")

    async def script(fc: FakeConnection) -> None:
        await register_then(fc)
        fc.send(job)
        await fc.wait_for(protocol.Availability)
        await trio.sleep(6)
        fc.send(protocol.JobAssignment(job=job.job, token="t"))
        await trio.sleep_forever()

    async def on_request(req: JobRequest) -> None:
        await trio.sleep(5)
        await req.accept()

    started = trio.Event()

    async def entry(ctx: JobContext) -> None:
        started.set()
        await trio.sleep_forever()

    async with open_fake_server(script) as fake, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        ws = make_worker(fake.url)
        ws.rtc_session(entry, on_request=on_request)
        async with running(ws):
            t0 = trio.current_time()
            await started.wait()
            assert trio.current_time() - t0 == pytest.approx(11)
            fc = fake.attempts[0][1]
            assert fc is not None
            updates = await fc.wait_for(protocol.UpdateJobStatus)
            assert [(u.job_id, u.status) for u in updates] == [("AJ_patient", agent.JS_RUNNING)]
        nursery.cancel_scope.cancel()


async def test_assignment_timeout_and_a_late_assignment(autojump_clock: trio.abc.Clock) -> None:
    """The server takes the accept but never assigns: accept() raises after 7.5 s,
    the job is not launched; an assignment arriving later is reported failed."""
    accepted_at: list[float] = []
    late_assignment = trio.Event()

    async def script(fc: FakeConnection) -> None:
        await register_then(fc)
        fc.send(offer("AJ_slow"))
        (answer,) = await fc.wait_for(protocol.Availability)
        assert answer.available
        accepted_at.append(trio.current_time())
        await late_assignment.wait()
        fc.send(protocol.JobAssignment(job=offer("AJ_slow").job, token="t"))
        await trio.sleep_forever()

    outcome: list[tuple[str, float]] = []

    async def on_request(req: JobRequest) -> None:
        try:
            await req.accept()
        except AssignmentTimeoutError as exc:
            outcome.append((str(exc), trio.current_time()))
            raise

    async with open_fake_server(script) as fake, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        ws = make_worker(fake.url)
        ws.rtc_session(_never_runs, on_request=on_request)
        async with running(ws):
            fc = fake.attempts[0][1]
            assert fc is not None
            await fc.changes.wait_until(lambda: bool(outcome))
            (message, when) = outcome[0]
            assert "AJ_slow" in message
            assert when - accepted_at[0] == pytest.approx(7.5)
            assert ws.active_jobs == []
            late_assignment.set()
            updates = await fc.wait_for(protocol.UpdateJobStatus)
            assert [(u.job_id, u.status) for u in updates] == [("AJ_slow", agent.JS_FAILED)]
            assert "after the worker's timeout" in updates[0].error
            assert ws.active_jobs == []
        nursery.cancel_scope.cancel()


# --- load --------------------------------------------------------------------------------------


async def test_three_workers_share_the_load_and_refuse_past_the_threshold(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    workers = [make_worker(server.url, load_threshold=0.7) for _ in range(3)]
    for ws in workers:
        # each job costs 0.25: the 3rd job takes a worker to 0.75 >= 0.7 (full)
        ws.load_fnc = lambda ws=ws: 0.25 * len(ws.active_jobs)
        ws.rtc_session(_park)

    async with running(*workers):
        for i in range(9):
            server.create_room(f"load-{i}")
            await server.wait_for_job(room=f"load-{i}")
            await trio.sleep(3)  # load sampled, status reported
        assert sorted(len(ws.active_jobs) for ws in workers) == [3, 3, 3]
        records: list[WorkerRecord] = [server.agents.workers[ws.worker_id or ""] for ws in workers]
        assert [(r.status, r.load, r.job_count) for r in records] == [(agent.WS_FULL, 0.75, 3)] * 3
        assert all(ws.worker_info()["status"] == "WS_FULL" for ws in workers)
        # a tenth room finds nobody
        server.create_room("load-9")
        await server.agents.changes.wait_until(
            lambda: any(
                r.job.room.name == "load-9" and r.status == agent.JS_FAILED
                for r in server.agents.jobs.values()
            )
        )
        (tenth,) = [r for r in server.agents.jobs.values() if r.job.room.name == "load-9"]
        assert tenth.worker_id is None
        assert tenth.error == "no workers available"
        # every job ran on exactly one worker
        running_ids = [j.job.id for ws in workers for j in ws.active_jobs]
        assert len(set(running_ids)) == 9


async def test_load_fnc_may_take_the_server_and_its_failures_are_contained(
    autojump_clock: trio.abc.Clock, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[AgentServer] = []
    t0 = trio.current_time()

    def load(ws: AgentServer) -> float:
        seen.append(ws)
        elapsed = trio.current_time() - t0
        if elapsed < 3:  # reported at 2.5 s
            return 0.2
        if elapsed < 8:  # reported at 5 and 7.5 s: still 0.2
            raise RuntimeError("sensor gone")
        return math.nan  # reported at 10 s

    ws = make_worker(server.url, load_fnc=load)
    ws.rtc_session(_park)
    with caplog.at_level(logging.ERROR, logger="trio_agents.worker"):
        async with running(ws):
            record = server.agents.workers[ws.worker_id or ""]
            await trio.sleep(7.6 - (trio.current_time() - t0))
            assert record.load == pytest.approx(0.2)  # failures keep the last load
            await trio.sleep(10.1 - (trio.current_time() - t0))
            assert (record.load, record.status) == (1.0, agent.WS_FULL)  # NaN: fully loaded
    assert seen
    assert all(s is ws for s in seen)
    failures = [r for r in caplog.records if "load_fnc failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, not every half second


@pytest.mark.parametrize(("num_idle", "taken"), [(None, 4), (2, 2), (1, 1)])
async def test_offers_in_flight_reserve_capacity(
    autojump_clock: trio.abc.Clock,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    num_idle: int | None,
    taken: int,
) -> None:
    """Offers answered at once each reserve threshold/num_idle of load (the
    default pool is min(cpus, 4)); past the threshold the worker says no."""
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    ws = make_worker(server.url, load_threshold=0.7, num_idle_processes=num_idle)

    async def slow_accept(req: JobRequest) -> None:
        await trio.sleep(1)
        await req.accept()

    ws.rtc_session(_park, on_request=slow_accept)
    async with running(ws):
        for i in range(6):
            server.create_room(f"burst-{i}")
        await server.agents.changes.wait_until(
            lambda: len(server.agents.jobs) == 6
            and all(r.status != agent.JS_PENDING and r.history for r in server.agents.jobs.values())
        )
        assigned = [r for r in server.agents.jobs.values() if r.worker_id == ws.worker_id]
        failed = [r for r in server.agents.jobs.values() if r.status == agent.JS_FAILED]
        assert (len(assigned), len(failed)) == (taken, 6 - taken)
        assert {r.error for r in failed} <= {"no workers available"}


@pytest.mark.parametrize("why", ["over-threshold", "draining"])
async def test_availability_is_answered_not_available_when_full(
    autojump_clock: trio.abc.Clock, why: str
) -> None:
    asked: list[str] = []
    keep_running = offer("AJ_keep")

    async def script(fc: FakeConnection) -> None:
        await register_then(fc)
        if why == "draining":
            # one running job keeps the draining worker alive
            fc.send(keep_running)
            await fc.wait_for(protocol.Availability)
            fc.send(protocol.JobAssignment(job=keep_running.job, token="t"))
        await trio.sleep_forever()

    async def on_request(req: JobRequest) -> None:
        asked.append(req.id)
        await req.accept()

    async def parked(ctx: JobContext) -> None:
        await trio.sleep_forever()

    async with open_fake_server(script) as fake, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        if why == "over-threshold":
            ws = make_worker(fake.url, load_fnc=lambda: 0.9, load_threshold=0.5)
        else:
            ws = make_worker(fake.url)
        ws.rtc_session(parked, on_request=on_request)
        async with running(ws):
            fc = fake.attempts[0][1]
            assert fc is not None
            if why == "draining":
                await fc.wait_for(protocol.UpdateJobStatus)
                nursery.start_soon(ws.drain)

            def full_reports() -> list[protocol.UpdateWorkerStatus]:
                return [
                    e for e in fc.received
                    if isinstance(e, protocol.UpdateWorkerStatus) and e.status == agent.WS_FULL
                ]

            await fc.changes.wait_until(lambda: bool(full_reports()))
            if why == "over-threshold":
                assert full_reports()[0].load == pytest.approx(0.9)
            else:
                # draining: status only (no load field: 0 on the wire), sent at once
                assert full_reports()[0].load == 0.0
                assert full_reports()[0].job_count == 1
            asked.clear()
            fc.send(offer("AJ_one"))
            await fc.changes.wait_until(
                lambda: any(
                    isinstance(e, protocol.Availability) and e.job_id == "AJ_one"
                    for e in fc.received
                )
            )
            (answer,) = [
                e
                for e in fc.received
                if isinstance(e, protocol.Availability) and e.job_id == "AJ_one"
            ]
            assert (answer.available, answer.terminate) == (False, False)
            assert asked == []  # on_request is not even asked
            assert [j.job.id for j in ws.active_jobs] == (["AJ_keep"] if why == "draining" else [])
            nursery.cancel_scope.cancel()


# --- draining ------------------------------------------------------------------------------------


async def test_drain_sets_shutting_down_refuses_new_jobs_and_waits_for_running_ones(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    noticed: list[float] = []
    started = trio.Event()

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        started.set()
        await ctx.shutting_down.wait()
        noticed.append(trio.current_time())
        await trio.sleep(20)  # wrapping up takes a while
        ctx.shutdown("wrapped up")

    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        worker_id = await ws.wait_registered()
        server.create_room("busy")
        record = await server.wait_for_job(room="busy")
        await started.wait()

        drained = trio.Event()

        async def drain() -> None:
            await ws.drain()
            drained.set()

        t0 = trio.current_time()
        nursery.start_soon(drain)
        await server.agents.changes.wait_until(
            lambda: server.agents.workers[worker_id].status == agent.WS_FULL
        )
        assert ws.draining
        assert ws.worker_info()["draining"] is True
        assert noticed == [pytest.approx(t0)]
        # new rooms are not taken
        server.create_room("too-late")
        await server.agents.changes.wait_until(
            lambda: any(
                r.job.room.name == "too-late" and r.status == agent.JS_FAILED
                for r in server.agents.jobs.values()
            )
        )
        assert not drained.is_set()
        await drained.wait()
        assert trio.current_time() - t0 == pytest.approx(20, abs=1)
    # run() returned: the running job ended on its own, and said so
    assert record.history[-1] == agent.JS_SUCCESS
    assert worker_id not in server.agents.workers


async def test_drain_timeout_shuts_remaining_jobs_down(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url, shutdown_process_timeout=5)
    reasons: list[str] = []

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: reasons.append(reason))
        await ctx.connect()
        await trio.sleep_forever()  # ignores draining

    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await ws.wait_registered()
        server.create_room("stubborn")
        record = await server.wait_for_job(room="stubborn")
        await launched(server, record)
        t0 = trio.current_time()
        await ws.drain(timeout=30)
        assert 30 <= trio.current_time() - t0 <= 30 + 5 + 1
    assert reasons == ["worker shutting down"]
    assert record.history[-1] == agent.JS_SUCCESS


async def test_aclose_shuts_jobs_down_within_their_budget(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url, shutdown_process_timeout=4)
    reasons: list[str] = []

    @ws.rtc_session()
    async def entry(ctx: JobContext) -> None:
        async def slow_callback(reason: str) -> None:
            reasons.append(reason)
            await trio.sleep(100)  # cut at the budget

        ctx.add_shutdown_callback(slow_callback)
        await ctx.connect()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await ws.wait_registered()
        server.create_room("closing")
        record = await server.wait_for_job(room="closing")
        await launched(server, record)
        t0 = trio.current_time()
        await ws.aclose()
        assert trio.current_time() - t0 <= 4 + 1
    assert reasons == ["worker shutting down"]
    # the callbacks run after the status is sent (before the room is left):
    # the cut callback is in the outcome's teardown errors, the status stands
    assert record.status == agent.JS_SUCCESS


# --- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"max_retry": -1}, ValueError, "max_retry"),
        ({"max_retry": "3"}, TypeError, "max_retry"),
        ({"load_threshold": 0}, ValueError, "load_threshold"),
        ({"load_threshold": "high"}, TypeError, "load_threshold"),
        ({"load_threshold": math.nan}, ValueError, "load_threshold"),
        ({"num_idle_processes": -1}, ValueError, "num_idle_processes"),
        ({"num_idle_processes": 1.5}, TypeError, "num_idle_processes"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "8081"}, TypeError, "port"),
        ({"drain_timeout": -1}, ValueError, "drain_timeout"),
        ({"drain_timeout": "1"}, TypeError, "drain_timeout"),
        ({"shutdown_process_timeout": math.nan}, ValueError, "shutdown_process_timeout"),
        ({"initialize_process_timeout": -0.5}, ValueError, "initialize_process_timeout"),
        ({"job_memory_warn_mb": -1}, ValueError, "job_memory_warn_mb"),
        ({"job_memory_limit_mb": "big"}, TypeError, "job_memory_limit_mb"),
        ({"job_executor_type": "inline"}, TypeError, "job_executor_type"),
        ({"permissions": {"hidden": True}}, TypeError, "permissions"),
        ({"load_fnc": 0.5}, TypeError, "load_fnc"),
        ({"setup_fnc": "prewarm"}, TypeError, "setup_fnc"),
        ({"host": 127}, TypeError, "host"),
        ({"ws_url": 7880}, TypeError, "ws_url"),
        ({"api_key": b"devkey"}, TypeError, "api_key"),
    ],
)
def test_bad_options_raise_naming_the_argument(
    kwargs: dict[str, Any], exc: type[Exception], name: str
) -> None:
    with pytest.raises(exc, match=rf"\b{name}\b"):
        AgentServer(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"agent_name": 5}, TypeError, "agent_name"),
        ({"type": "room"}, TypeError, "type"),
        ({"on_request": lambda req: None}, TypeError, "on_request"),
        ({"delete_room_on_close": "yes"}, TypeError, "delete_room_on_close"),
    ],
)
def test_bad_rtc_session_arguments_raise_naming_the_argument(
    kwargs: dict[str, Any], exc: type[Exception], name: str
) -> None:
    ws = AgentServer()
    with pytest.raises(exc, match=rf"\b{name}\b"):
        ws.rtc_session(**kwargs)
    assert ws._session is None


def test_only_one_rtc_session_and_entrypoints_must_be_async() -> None:
    ws = AgentServer()

    def not_async(ctx: JobContext) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        ws.rtc_session(not_async)

    @ws.rtc_session(agent_name="first")
    async def first(ctx: JobContext) -> None:
        pass

    with pytest.raises(RuntimeError, match="one rtc_session"):

        @ws.rtc_session(agent_name="second")
        async def second(ctx: JobContext) -> None:
            pass

    with pytest.raises(RuntimeError, match="one rtc_session"):
        ws.rtc_session(first)
    assert ws.agent_name == "first"


async def test_run_without_an_entrypoint_is_a_clear_error(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(RuntimeError, match="rtc_session"):
        await AgentServer("ws://127.0.0.1:1", "k", "s").run()


URL, KEY, SECRET = (
    "ws_url (LIVEKIT_URL)",
    "api_key (LIVEKIT_API_KEY)",
    "api_secret (LIVEKIT_API_SECRET)",
)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, [URL, KEY, SECRET]),
        ({"ws_url": "ws://127.0.0.1:7880"}, [KEY, SECRET]),
        ({"ws_url": "ws://127.0.0.1:7880", "api_key": "k"}, [SECRET]),
    ],
)
async def test_missing_configuration_names_what_is_missing(
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
    given: dict[str, str],
    missing: list[str],
) -> None:
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    ws = AgentServer(**given, job_executor_type=JobExecutorType.INLINE, port=None)
    ws.rtc_session(_never_runs)
    with pytest.raises(WorkerError) as info:
        await ws.run()
    assert str(info.value) == "missing configuration: " + ", ".join(missing)


async def test_bad_url_scheme_is_a_worker_error(autojump_clock: trio.abc.Clock) -> None:
    ws = make_worker("ftp://example.com")
    ws.rtc_session(_never_runs)
    with pytest.raises(WorkerError, match="ws_url"):
        await ws.run()


async def test_environment_fallbacks(
    autojump_clock: trio.abc.Clock, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", server.url)
    monkeypatch.setenv("LIVEKIT_API_KEY", server.api_key)
    monkeypatch.setenv("LIVEKIT_API_SECRET", server.api_secret)
    monkeypatch.setenv("LIVEKIT_AGENT_NAME", "from-env")
    ws = AgentServer(job_executor_type=JobExecutorType.INLINE, port=None, load_fnc=lambda: 0.0)
    ws.rtc_session(_park)
    explicit = AgentServer(
        job_executor_type=JobExecutorType.INLINE, port=None, load_fnc=lambda: 0.0
    )
    explicit.rtc_session(_park, agent_name="given")
    async with running(ws, explicit):
        assert server.agents.workers[ws.worker_id or ""].agent_name == "from-env"
        assert server.agents.workers[explicit.worker_id or ""].agent_name == "given"


async def test_run_twice_at_once_is_refused(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url)
    ws.rtc_session(_park)
    async with running(ws):
        with pytest.raises(RuntimeError, match="already running"):
            await ws.run()


async def test_aclose_while_an_offer_is_being_answered_does_not_hang(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    ws = make_worker(server.url, shutdown_process_timeout=5)
    entered: list[str] = []

    async def slow_accept(req: JobRequest) -> None:
        await trio.sleep(1)
        await req.accept()

    @ws.rtc_session(on_request=slow_accept)
    async def entry(ctx: JobContext) -> None:
        entered.append(ctx.job.id)
        await ctx.connect()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(ws.run)
        await ws.wait_registered()
        server.create_room("late")
        await trio.sleep(0.5)  # on_request is thinking
        t0 = trio.current_time()
        await ws.aclose()
        assert trio.current_time() - t0 <= 1
    assert ws.active_jobs == []
    (record,) = server.agents.jobs.values()
    # accepted while closing: launched and shut down at once, and reported
    assert record.history[-1] == agent.JS_SUCCESS
    # and a closed worker's aclose() returns at once
    await ws.aclose()


async def test_dispatch_status_and_termination_over_loopback_tcp() -> None:
    """The same exchanges over real sockets: the worker's /agent websocket and
    the jobs' simulated-room links are TCP connections to the stand-in."""
    with trio.fail_after(30):
        async with open_local_server(port=0) as server:
            assert server.url.startswith("ws://127.0.0.1:")
            ws = make_worker(server.url)
            reasons: dict[str, str] = {}
            joined: dict[str, trio.Event] = {"tcp-ok": trio.Event(), "tcp-end": trio.Event()}

            async def on_request(req: JobRequest) -> None:
                if req.room.name == "tcp-no":
                    await req.reject()
                else:
                    await req.accept(identity=f"tcp-agent-{req.room.name}")

            @ws.rtc_session(agent_name="tcp-agent", on_request=on_request)
            async def entry(ctx: JobContext) -> None:
                name = ctx.job.room.name
                ctx.add_shutdown_callback(lambda reason: reasons.__setitem__(name, reason))
                await ctx.connect()
                if name == "tcp-fail":
                    raise RuntimeError("broken on purpose")
                joined[name].set()
                if name == "tcp-end":
                    ctx.shutdown("done here")
                await trio.sleep_forever()

            dispatch = [RoomAgentDispatch(agent_name="tcp-agent")]
            async with running(ws):
                assert ws.worker_id in server.agents.workers
                records = {}
                for name in ("tcp-ok", "tcp-end", "tcp-fail", "tcp-no"):
                    server.rooms.create(name, agents=dispatch)

                    def in_room(n: str = name) -> list[JobRecord]:
                        return [r for r in server.agents.jobs.values() if r.job.room.name == n]

                    await server.agents.changes.wait_until(lambda: bool(in_room()))
                    (records[name],) = in_room()
                    # one offer at a time: with load 0 and no job yet, each pending
                    # offer reserves threshold/min(cpus, 4) of the capacity
                    await server.agents.changes.wait_until(
                        lambda n=name: bool(records[n].history)
                    )
                await joined["tcp-ok"].wait()
                room = server.rooms.get("tcp-ok")
                assert room is not None
                assert "tcp-agent-tcp-ok" in room.participants
                for name in ("tcp-end", "tcp-fail", "tcp-no"):
                    await finished(server, records[name].job.id)
                assert server.agents.terminate(records["tcp-ok"].job.id)
                await finished(server, records["tcp-ok"].job.id)
            summary = {n: (r.history, r.error) for n, r in records.items()}
            running_ = [agent.JS_RUNNING, agent.JS_RUNNING]
            assert summary == {
                "tcp-ok": ([*running_, agent.JS_SUCCESS], ""),
                "tcp-end": ([*running_, agent.JS_SUCCESS], ""),
                "tcp-fail": (
                    [*running_, agent.JS_FAILED],
                    "entrypoint raised RuntimeError: broken on purpose",
                ),
                "tcp-no": ([agent.JS_SUCCESS], ""),
            }
            assert reasons == {
                "tcp-ok": "job terminated by the server",
                "tcp-end": "done here",
                "tcp-fail": "entrypoint raised RuntimeError",
            }
