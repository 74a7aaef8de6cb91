"""The worker's connection: drops, reconnects, retries, refusals, bad frames.

Jobs join their rooms straight at the stand-in, while the worker's ``/agent``
connection goes through an ``AgentTap`` (or a TCP relay) that the test can
break.  What must hold every time: the running job does not notice, the
worker registers again, re-announces the job (MigrateJob) and reports its
status on the new connection.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
from livekit.protocol import agent
from worker_helpers import (
    AgentTap,
    FakeConnection,
    TapConnection,
    TCPProxy,
    make_worker,
    open_fake_server,
    open_tap,
    refuse_connect,
    register_then,
    running,
    watchdog,
)

from trio_agents import AgentServer, JobContext, WorkerError, protocol
from trio_agents._errors import HandshakeRejected
from trio_agents.testing import LocalServer, open_local_server

TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as s, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        yield s
        nursery.cancel_scope.cancel()


@pytest.fixture
async def tap(server: LocalServer) -> AsyncIterator[AgentTap]:
    async with open_tap(server) as t:
        yield t


class Probe:
    """An entrypoint that joins its room, then waits for ``finish``; records what it saw."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.finish = trio.Event()
        self.cancelled_early = False
        self.shutdown_reasons: list[str] = []
        self.job_ids: list[str] = []

    async def entry(self, ctx: JobContext) -> None:
        self.job_ids.append(ctx.job.id)
        ctx.add_shutdown_callback(lambda reason: self.shutdown_reasons.append(reason))
        await ctx.connect()
        self.started.set()
        try:
            await self.finish.wait()
        except trio.Cancelled:
            self.cancelled_early = True
            raise
        ctx.shutdown("finished")


def updates(conn: TapConnection) -> list[tuple[str, int, str]]:
    return [
        (m.update_job.job_id, m.update_job.status, m.update_job.error)
        for k, m in conn.from_worker
        if k == "update_job"
    ]


def migrated(conn: TapConnection) -> list[list[str]]:
    return [list(m.migrate_job.job_ids) for k, m in conn.from_worker if k == "migrate_job"]


async def start_job(server: LocalServer, ws: AgentServer, probe: Probe, room: str) -> Any:
    server.create_room(room)
    record = await server.wait_for_job(room=room)
    await probe.started.wait()
    await server.agents.changes.wait_until(lambda: len(record.history) >= 2)
    return record


def agent_in_room(server: LocalServer, room: str, job_id: str) -> bool:
    r = server.rooms.get(room)
    return r is not None and f"agent-{job_id}" in r.participants


# --- a dropped connection --------------------------------------------------------------


async def test_dropped_connection_reconnects_and_the_job_goes_on(
    autojump_clock: trio.abc.Clock, server: LocalServer, tap: AgentTap
) -> None:
    ws = make_worker(tap.url)
    probe = Probe()
    ws.rtc_session(probe.entry)
    async with running(ws):
        first_id = ws.worker_id
        record = await start_job(server, ws, probe, "steady")
        job_id = record.job.id
        conn1 = tap.connections[0]

        dropped_at = trio.current_time()
        conn1.drop()
        conn2 = await tap.wait_connections(2)
        await tap.wait_for(lambda: "update_job" in conn2.kinds())
        assert trio.current_time() == dropped_at  # the first retry is immediate
        assert first_id not in server.agents.workers
        assert ws.worker_id != first_id
        assert ws.worker_id in server.agents.workers

        # register, then the running job is re-announced, then its status
        assert conn2.kinds()[:3] == ["register", "migrate_job", "update_job"]
        assert migrated(conn2) == [[job_id]]
        assert updates(conn2) == [(job_id, agent.JS_RUNNING, "")]
        assert record.worker_id == ws.worker_id  # the stand-in took the migration

        # the job saw nothing of it
        await trio.sleep(30)
        assert not probe.cancelled_early
        assert probe.shutdown_reasons == []
        assert agent_in_room(server, "steady", job_id)
        assert [j.job.id for j in ws.active_jobs] == [job_id]

        probe.finish.set()
        await server.wait_for_job_status(job_id, *TERMINAL)
        assert updates(conn2)[-1] == (job_id, agent.JS_SUCCESS, "")
        assert updates(conn1) == [(job_id, agent.JS_RUNNING, "")]
    assert probe.shutdown_reasons == ["finished"]
    assert record.status == agent.JS_SUCCESS


async def test_a_job_that_ends_while_disconnected_reports_after_reconnecting(
    autojump_clock: trio.abc.Clock, server: LocalServer, tap: AgentTap
) -> None:
    ws = make_worker(tap.url)
    probe = Probe()
    ws.rtc_session(probe.entry)
    async with running(ws):
        record = await start_job(server, ws, probe, "offline-end")
        job_id = record.job.id
        tap.refuse = True
        t0 = trio.current_time()
        tap.connections[0].drop()
        await tap.wait_for(lambda: len(tap.refusals) >= 3)
        probe.finish.set()  # the job ends while there is no connection
        await tap.wait_for(lambda: len(tap.refusals) >= 4)
        # backoff between attempts: 0, 2, 4, 6 s
        assert [round(t - t0, 6) for t in tap.refusals[:4]] == [0, 2, 6, 12]
        assert ws.active_jobs == []
        tap.refuse = False
        conn2 = await tap.wait_connections(2)
        await tap.wait_for(lambda: "update_job" in conn2.kinds())
        assert conn2.kinds()[:3] == ["register", "migrate_job", "update_job"]
        assert migrated(conn2) == [[job_id]]
        # only the final status: the job no longer runs
        assert updates(conn2) == [(job_id, agent.JS_SUCCESS, "")]
        await server.wait_for_job_status(job_id, *TERMINAL)
    assert record.history[-1] == agent.JS_SUCCESS
    assert probe.shutdown_reasons == ["finished"]


async def test_dropped_tcp_connection_reconnects_and_the_job_goes_on() -> None:
    """Over real loopback: the worker's TCP link is cut with no close frame."""
    with trio.fail_after(30):
        async with open_local_server(port=0) as server, trio.open_nursery() as nursery:
            proxy = TCPProxy(int(server.url.rsplit(":", 1)[1]))
            await nursery.start(proxy.serve)
            ws = make_worker(proxy.url)
            probe = Probe()
            ws.rtc_session(probe.entry)
            async with running(ws):
                first_id = ws.worker_id
                record = await start_job(server, ws, probe, "tcp-steady")
                job_id = record.job.id
                assert proxy.cut() == 1
                await server.agents.changes.wait_until(
                    lambda: first_id not in server.agents.workers
                    and ws.worker_id in server.agents.workers
                    and record.worker_id == ws.worker_id  # MigrateJob arrived
                )
                assert ws.worker_id != first_id
                assert proxy.accepted == 2
                await trio.sleep(0.5)
                assert not probe.cancelled_early
                assert probe.shutdown_reasons == []
                assert agent_in_room(server, "tcp-steady", job_id)
                probe.finish.set()
                await server.wait_for_job_status(job_id, *TERMINAL)
            assert record.status == agent.JS_SUCCESS
            assert probe.shutdown_reasons == ["finished"]
            nursery.cancel_scope.cancel()


# --- retries -------------------------------------------------------------------------------


async def test_a_server_that_never_answers_register_is_retried_then_given_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def silent(fc: FakeConnection) -> None:
        await trio.sleep_forever()

    async with open_fake_server(silent) as fake:
        ws = make_worker(fake.url, max_retry=3)
        ws.rtc_session(_never_runs)
        with pytest.raises(WorkerError) as info:
            await ws.run()
    # each attempt waits 10 s for the answer, then backs off 0, 2, 4 s
    times = [t for t, _ in fake.attempts]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [10, 12, 14]
    for _, fc in fake.attempts:
        assert fc is not None
        assert isinstance(fc.received[0], protocol.Register)
    message = str(info.value)
    assert message.startswith(f"failed to connect to livekit at {fake.url} after 4 attempts")
    assert "no register response" in message
    assert ws._connection_failed


async def test_unreachable_server_backs_off_0_2_4_capped_at_10_s(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def unused(fc: FakeConnection) -> None:
        raise AssertionError("never connected")

    async with open_fake_server(unused, gate=refuse_connect("connection refused")) as fake:
        ws = make_worker(fake.url, max_retry=8)
        ws.rtc_session(_never_runs)
        with pytest.raises(
            WorkerError, match=r"cannot reach livekit at .* after 9 attempts: connection refused"
        ):
            await ws.run()
    times = [t for t, _ in fake.attempts]
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [
        0, 2, 4, 6, 8, 10, 10, 10
    ]


async def test_max_retry_zero_gives_up_after_one_attempt(autojump_clock: trio.abc.Clock) -> None:
    async def unused(fc: FakeConnection) -> None:
        raise AssertionError("never connected")

    async with open_fake_server(unused, gate=refuse_connect()) as fake:
        ws = make_worker(fake.url, max_retry=0)
        ws.rtc_session(_never_runs)
        with pytest.raises(WorkerError, match="after 1 attempts"):
            await ws.run()
    assert len(fake.attempts) == 1


async def test_each_successful_registration_resets_the_retry_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A server that keeps closing registered connections never exhausts max_retry."""

    async def flaky(fc: FakeConnection) -> None:
        await register_then(fc, worker_id=f"AW_{len(fake.attempts)}")
        if len(fake.attempts) <= 5:
            await trio.sleep(1)
            return  # close
        await trio.sleep_forever()

    async with open_fake_server(flaky) as fake, trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        ws = make_worker(fake.url, max_retry=1)
        ws.rtc_session(_never_runs)
        await nursery.start(ws.run)
        await fake.wait_attempts(6)
        await fake.attempts[5][1].changes.wait_until(lambda: ws.worker_id == "AW_6")  # type: ignore[union-attr]
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_wrong_credentials_fail_at_once_with_a_clear_error(
    autojump_clock: trio.abc.Clock, server: LocalServer, tap: AgentTap
) -> None:
    ws = make_worker(tap.url, api_secret="not-the-secret", max_retry=16)
    ws.rtc_session(_never_runs)
    with pytest.raises(WorkerError) as info:
        await ws.run()
    # the server's own words (LiveKit quotes the token it refused)
    message = str(info.value)
    assert message.startswith(
        f"the server at {tap.url} rejected the credentials (api key 'devkey'): invalid token: "
    ), message
    assert message.endswith(", error: token signature is invalid: signature is invalid")
    assert len(tap.connections) == 1  # no retry: retrying cannot help
    assert trio.current_time() == 0


async def test_a_rejection_that_quotes_the_token_does_not_print_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    # LiveKit's 401 body quotes the whole bearer token; with the right secret
    # but an expired or not-yet-valid token, that is a working credential
    seen: list[str] = []

    def reject(headers: Mapping[str, str]) -> Exception:
        token = headers["Authorization"].removeprefix("Bearer ")
        seen.append(token)
        return HandshakeRejected(
            401, f"invalid token: {token}, error: token has invalid claims: token is expired"
        )

    async with open_fake_server(register_then, gate=reject) as fake:
        ws = make_worker(fake.url, max_retry=16)
        ws.rtc_session(_never_runs)
        with pytest.raises(WorkerError) as info:
            await ws.run()
    (token,) = seen
    assert token.count(".") == 2
    assert token not in str(info.value)
    assert str(info.value) == (
        f"the server at {fake.url} rejected the credentials (api key 'devkey'): "
        "invalid token: <token>, error: token has invalid claims: token is expired"
    )


async def _never_runs(ctx: JobContext) -> None:
    raise AssertionError("no job expected")


# --- malformed frames ------------------------------------------------------------------------


def _second_register() -> bytes:
    msg = agent.ServerMessage(register=agent.RegisterWorkerResponse(worker_id="AW_x"))
    return msg.SerializeToString()


def _unoffered_assignment() -> bytes:
    msg = agent.ServerMessage()
    msg.assignment.job.id = "AJ_never_offered"
    msg.assignment.token = "t"
    return msg.SerializeToString()


@pytest.mark.parametrize(
    "frame",
    [b"\xff\xff\xff not protobuf", _second_register(), _unoffered_assignment()],
    ids=["garbage", "second-register", "unoffered-assignment"],
)
async def test_malformed_server_frames_reset_the_connection_but_not_the_jobs(
    autojump_clock: trio.abc.Clock,
    server: LocalServer,
    tap: AgentTap,
    caplog: pytest.LogCaptureFixture,
    frame: bytes,
) -> None:
    ws = make_worker(tap.url)
    probe = Probe()
    ws.rtc_session(probe.entry)
    async with running(ws):
        record = await start_job(server, ws, probe, "noisy")
        job_id = record.job.id
        conn1 = tap.connections[0]
        with caplog.at_level(logging.ERROR, logger="trio_agents.worker"):
            await conn1.inject(frame)
            conn2 = await tap.wait_connections(2)
            await tap.wait_for(lambda: "update_job" in conn2.kinds())
        await conn1.ended.wait()
        errors = [
            r
            for r in caplog.records
            if r.name == "trio_agents.worker" and r.levelno >= logging.ERROR
        ]
        assert len(errors) == 1
        assert "malformed message from the server" in errors[0].getMessage()
        assert "running jobs are not affected" in errors[0].getMessage()
        assert migrated(conn2) == [[job_id]]
        assert not probe.cancelled_early
        assert probe.shutdown_reasons == []
        assert agent_in_room(server, "noisy", job_id)
        probe.finish.set()
        await server.wait_for_job_status(job_id, *TERMINAL)
        assert updates(conn2)[-1] == (job_id, agent.JS_SUCCESS, "")


async def test_text_frames_are_ignored_without_a_reset(
    autojump_clock: trio.abc.Clock,
    server: LocalServer,
    tap: AgentTap,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = make_worker(tap.url)
    probe = Probe()
    ws.rtc_session(probe.entry)
    async with running(ws):
        record = await start_job(server, ws, probe, "texty")
        with caplog.at_level(logging.WARNING, logger="trio_agents.worker"):
            await tap.connections[0].inject('{"register": {}}')
            await trio.sleep(10)
        assert len(tap.connections) == 1
        assert any("text frame" in r.getMessage() for r in caplog.records)
        probe.finish.set()
        await server.wait_for_job_status(record.job.id, *TERMINAL)
        assert updates(tap.connections[0])[-1] == (record.job.id, agent.JS_SUCCESS, "")


async def test_malformed_frame_over_tcp_resets_the_connection_but_not_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(30):
        async with (
            open_local_server(port=0) as server,
            open_tap(server) as tap,
            trio.open_nursery() as nursery,
        ):
            url = await nursery.start(tap.serve_tcp)
            ws = make_worker(url)
            probe = Probe()
            ws.rtc_session(probe.entry)
            async with running(ws):
                record = await start_job(server, ws, probe, "tcp-noisy")
                with caplog.at_level(logging.ERROR, logger="trio_agents.worker"):
                    await tap.connections[0].inject(b"\xff\xff\xff not protobuf")
                    conn2 = await tap.wait_connections(2)
                    await tap.wait_for(lambda: "update_job" in conn2.kinds())
                assert migrated(conn2) == [[record.job.id]]
                assert any("malformed message" in r.getMessage() for r in caplog.records)
                assert not probe.cancelled_early
                probe.finish.set()
                await server.wait_for_job_status(record.job.id, *TERMINAL)
                assert updates(conn2)[-1] == (record.job.id, agent.JS_SUCCESS, "")
            nursery.cancel_scope.cancel()


async def test_aclose_over_tcp_sends_final_statuses_before_closing() -> None:
    """Closing flushes what is queued (the jobs' final statuses) and then closes
    the websocket; it does not cut the connection with messages still queued."""
    with trio.fail_after(30):
        async with open_local_server(port=0) as server:
            ws = make_worker(server.url)
            probes = [Probe(), Probe()]
            next_probe = iter(probes)

            @ws.rtc_session()
            async def entry(ctx: JobContext) -> None:
                await next(next_probe).entry(ctx)

            async with trio.open_nursery() as nursery:
                await nursery.start(ws.run)
                await ws.wait_registered()
                records = [
                    await start_job(server, ws, probe, f"flush-{i}")
                    for i, probe in enumerate(probes)
                ]
                await ws.aclose()
            for record in records:
                assert record.history[-1] == agent.JS_SUCCESS
            assert all(p.shutdown_reasons == ["worker shutting down"] for p in probes)
