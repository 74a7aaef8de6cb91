"""The stand-in server's ``/agent`` endpoint, driven by a scripted worker.

Each test checks one rule of LiveKit's worker protocol as the server side
implements it (reference/worker_protocol.md section 3): authentication,
registration, dispatch, worker choice, the availability exchange, job state,
termination, disconnects and bad input.  Everything runs in memory under an
autojumping mock clock, so LiveKit's 10 s timeouts cost nothing, except the
tests marked as TCP ones, which use real loopback sockets.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import trio
from google.protobuf import json_format
from livekit import api as lkapi
from livekit.protocol import agent, agent_dispatch, models
from livekit.protocol import rtc as rtc_pb
from worker_client import (
    Policy,
    ScriptedWorker,
    accept,
    decline,
    open_worker,
    worker_token,
)

from trio_agents import protocol
from trio_agents._errors import HandshakeRejected
from trio_agents._transport import MAX_MESSAGE_SIZE, open_websocket
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET, LocalServer, open_local_server

RoomAgentDispatch = agent_dispatch.RoomAgentDispatch


#: Virtual seconds after which a test counts as hung (with an autojumping clock a
#: test that waits for something that never happens would otherwise block forever).
WATCHDOG = 600.0


async def _watchdog() -> None:
    await trio.sleep(WATCHDOG)
    raise TimeoutError(f"test still running after {WATCHDOG} (virtual) seconds")


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as s, trio.open_nursery() as nursery:
        nursery.start_soon(_watchdog)
        yield s
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def answering(policy: Policy, *workers: ScriptedWorker) -> AsyncIterator[None]:
    """Let ``workers`` answer every offer with ``policy`` for the duration of the block."""
    async with trio.open_nursery() as nursery:
        for w in workers:
            await nursery.start(w.auto_answer, policy)
        yield
        nursery.cancel_scope.cancel()


def jobs_in(server: LocalServer, room: str) -> list[str]:
    return [j for j, rec in server.agents.jobs.items() if rec.job.room.name == room]


async def quiet(seconds: float = 30.0) -> None:
    """Let (virtual) time pass so that anything that was going to happen has happened."""
    await trio.sleep(seconds)


# --- authentication ---------------------------------------------------------------


def _token(**grants: object) -> str:
    return (
        lkapi.AccessToken(DEV_API_KEY, DEV_API_SECRET)
        .with_identity("someone")
        .with_grants(lkapi.VideoGrants(**grants))  # type: ignore[arg-type]
        .to_jwt()
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


NO_PERMISSION = "no permissions to access the room"

# (headers, query) builders: tokens are made when the test runs, not at import
REFUSED = {
    "no-token": (lambda: ({}, ""), NO_PERMISSION),
    "no-agent-grant": (lambda: (_bearer(_token(room_join=True, room="r")), ""), NO_PERMISSION),
    "query-no-agent-grant": (lambda: ({}, f"access_token={_token()}"), NO_PERMISSION),
    "bad-signature": (
        lambda: (_bearer(worker_token(api_secret="not-the-secret")), ""),
        # LiveKit quotes the token and golang-jwt's reason
        re.compile(
            r"invalid token: [\w.-]+, error: token signature is invalid: signature is invalid"
        ),
    ),
    "unknown-api-key": (
        lambda: (_bearer(worker_token(api_key="otherkey")), ""),
        "invalid API key: otherkey",
    ),
    "garbage": (lambda: (_bearer("not-a-jwt"), ""), "invalid authorization token"),
    "not-bearer": (
        lambda: ({"Authorization": f"Basic {worker_token()}"}, ""),
        "invalid authorization header. Must start with Bearer ",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_credentials_get_401_with_livekits_plain_text_body(
    autojump_clock: trio.abc.Clock, server: LocalServer, case: str
) -> None:
    make, body = REFUSED[case]
    headers, query = make()
    with pytest.raises(HandshakeRejected) as info:
        async with open_worker(server.url, headers=headers, query=query, register=False):
            pytest.fail("the upgrade should have been refused")
    assert info.value.status == 401
    if isinstance(body, re.Pattern):
        assert body.fullmatch(info.value.body), info.value.body
    else:
        assert info.value.body == body
    assert server.agents.workers == {}


async def test_expired_token_is_refused(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    token = worker_token(ttl=datetime.timedelta(hours=-1))
    with pytest.raises(HandshakeRejected) as info:
        async with open_worker(server.url, token=token, register=False):
            pass
    assert info.value.status == 401
    assert info.value.body.startswith("invalid token: ")
    assert info.value.body.endswith(", error: token has invalid claims: token is expired")


async def test_access_token_query_parameter_is_accepted(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url, headers={}, query=f"access_token={worker_token()}") as w:
        assert w.worker_id in server.agents.workers


async def test_plain_http_get_on_agent_path_is_404(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://stand-in") as client:
        resp = await client.get("/agent", headers={"Authorization": f"Bearer {worker_token()}"})
    assert resp.status_code == 404


async def test_websocket_on_another_path_is_404(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    headers = {"Authorization": f"Bearer {worker_token()}"}
    with pytest.raises(HandshakeRejected) as info:
        async with open_websocket(server.url, "/agents", headers=headers):
            pass
    assert info.value.status == 404


# --- registration and ping --------------------------------------------------------------


async def test_register_answers_worker_id_and_server_info(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    perms = models.ParticipantPermission(can_subscribe=True, hidden=True, agent=True)
    async with (
        open_worker(server.url, agent_name="a", version="9.9.9", permissions=perms) as w1,
        open_worker(server.url, job_type=agent.JT_PUBLISHER) as w2,
    ):
        assert w1.registered is not None
        assert w1.worker_id is not None
        assert w1.worker_id.startswith("AW_")
        assert w2.worker_id is not None
        assert w2.worker_id != w1.worker_id
        info = w1.registered.server_info
        assert info.edition == models.ServerInfo.Standard
        assert info.agent_protocol == 1
        assert info.version
        assert info.protocol > 0

        record = server.agents.workers[w1.worker_id]
        assert (record.agent_name, record.version, record.job_type) == ("a", "9.9.9", agent.JT_ROOM)
        assert record.permissions == perms
        assert (record.status, record.load) == (agent.WS_AVAILABLE, 0.0)
        assert server.agents.workers[w2.worker_id].job_type == agent.JT_PUBLISHER
    await server.agents.changes.wait_until(lambda: not server.agents.workers)


async def test_ping_is_answered_with_pong_before_and_after_registration(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url, register=False) as w:
        pong = await w.ping(123)
        assert pong.last_timestamp == 123
        assert abs(pong.timestamp - time.time() * 1000) < 60_000  # server wall clock, in ms
        await w.register()
        pong = await w.ping(-7)
        assert pong.last_timestamp == -7


async def test_worker_that_never_registers_is_closed_after_10_s(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url, register=False) as w:
        start = trio.current_time()
        await trio.sleep(6)
        assert (await w.ping(1)).last_timestamp == 1  # pings do not count as registering
        await w.wait_closed()
        assert 10.0 <= trio.current_time() - start < 11.0
    assert server.agents.workers == {}


# --- dispatch -------------------------------------------------------------------------------


async def test_automatic_dispatch_offers_each_new_room_to_unnamed_workers(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as w:
        room = server.create_room("lobby", metadata="room-meta")
        assignment = await w.take_job()
        job = assignment.job
        assert job.id.startswith("AJ_")
        assert (job.room.name, job.room.metadata, job.agent_name) == ("lobby", "room-meta", "")
        assert job.type == agent.JT_ROOM
        assert not job.HasField("participant")
        (dispatch,) = room.dispatches.values()
        assert (job.dispatch_id, dispatch.agent_name) == (dispatch.id, "")
        assert job.state.status == agent.JS_RUNNING
        assert job.state.worker_id == w.worker_id
        assert job.state.participant_identity == f"agent-{job.id}"
        # OSS leaves url unset; the stand-in names its simulated rooms (docs/deviations.md)
        assert assignment.url == server.url

        record = server.agents.jobs[job.id]
        assert record.worker_id == w.worker_id
        assert record.history == [agent.JS_RUNNING]
        assert job.id in server.agents.workers[w.worker_id].running
        assert [j.id for j in dispatch.state.jobs] == [job.id]

        server.create_room("second")
        assert (await w.take_job()).job.room.name == "second"


async def test_named_worker_gets_only_explicit_dispatches(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with (
        open_worker(server.url, agent_name="alice") as named,
        open_worker(server.url) as unnamed,
        answering(accept, named, unnamed),
    ):
        server.create_room("plain")
        await unnamed.wait_for(lambda: len(unnamed.assignments) == 1)
        await quiet()
        assert named.offers == []

        server.rooms.create(
            "explicit",
            agents=[RoomAgentDispatch(agent_name="alice", metadata="for alice")],
        )
        await named.wait_for(lambda: len(named.assignments) == 1)
        job = named.assignments[0].job
        assert (job.room.name, job.agent_name, job.metadata) == ("explicit", "alice", "for alice")
        await quiet()
        # a room that lists its agents gets no default (automatic) dispatch
        assert len(unnamed.offers) == 1
        assert len(named.offers) == 1


async def test_dispatch_without_a_matching_worker_launches_nothing(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url, agent_name="alice") as w, answering(accept, w):
        room = server.create_room("ghost-room", agents=[RoomAgentDispatch(agent_name="ghost")])
        await quiet()
        assert jobs_in(server, "ghost-room") == []
        assert w.offers == []
        (dispatch,) = room.dispatches.values()
        assert list(dispatch.state.jobs) == []


async def test_jobs_go_only_to_workers_of_the_matching_job_type(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with (
        open_worker(server.url, job_type=agent.JT_ROOM) as room_w,
        open_worker(server.url, job_type=agent.JT_PARTICIPANT) as part_w,
        open_worker(server.url, job_type=agent.JT_PUBLISHER) as pub_w,
        answering(accept, room_w, part_w, pub_w),
    ):
        room = server.create_room("typed")
        await room_w.wait_for(lambda: len(room_w.assignments) == 1)
        await quiet()
        assert (len(part_w.offers), len(pub_w.offers)) == (0, 0)

        server.rooms.join(room, models.ParticipantInfo(identity="alice"))
        await part_w.wait_for(lambda: len(part_w.assignments) == 1)
        job = part_w.assignments[0].job
        assert (job.type, job.participant.identity) == (agent.JT_PARTICIPANT, "alice")

        # agents are "dependent" participants: they trigger no jobs
        server.rooms.join(
            room, models.ParticipantInfo(identity="bot", kind=models.ParticipantInfo.AGENT)
        )
        await quiet()
        assert len(part_w.offers) == 1
        assert pub_w.offers == []

        server.rooms.publish_track(room, "alice", models.TrackInfo(name="mic", type=models.AUDIO))
        await pub_w.wait_for(lambda: len(pub_w.assignments) == 1)
        job = pub_w.assignments[0].job
        assert (job.type, job.participant.identity) == (agent.JT_PUBLISHER, "alice")
        await quiet()
        assert (len(room_w.offers), len(part_w.offers), len(pub_w.offers)) == (1, 1, 1)


# --- the availability exchange ----------------------------------------------------------------


async def test_assignment_token_joins_the_room_as_the_answered_agent(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    perms = models.ParticipantPermission(
        can_subscribe=True,
        can_publish=False,
        can_publish_data=True,
        can_update_metadata=False,
        hidden=True,
        agent=True,
    )
    async with open_worker(server.url, agent_name="tok", permissions=perms) as w:
        server.rooms.create("tok-room", agents=[RoomAgentDispatch(agent_name="tok")])
        assignment = await w.take_job(
            identity="bot-1", name="Bot", metadata='{"k": 1}', attributes={"color": "blue"}
        )

    claims = lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(assignment.token)
    assert (claims.identity, claims.name, claims.metadata) == ("bot-1", "Bot", '{"k": 1}')
    assert claims.kind == "agent"
    assert claims.attributes == {"color": "blue", "lk.agent_name": "tok"}
    video = claims.video
    assert video is not None
    assert (video.room_join, video.agent, video.room) == (True, True, "tok-room")
    assert (video.can_subscribe, video.can_publish, video.can_publish_data) == (True, False, True)
    assert (video.hidden, video.can_update_own_metadata) == (True, False)

    raw = jwt.decode(assignment.token, options={"verify_signature": False})
    assert raw["iss"] == DEV_API_KEY
    assert raw["exp"] - raw["nbf"] == 3600  # LiveKit's agent tokens live one hour

    assert assignment.job.state.participant_identity == "bot-1"
    assert server.agents.jobs[assignment.job.id].job.state.participant_identity == "bot-1"


async def test_declined_offer_is_retried_on_another_worker(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    server.agents.rng.seed(7)
    async with (
        open_worker(server.url, agent_name="x") as refuser,
        open_worker(server.url, agent_name="x") as taker,
    ):
        async with answering(decline, refuser), answering(accept, taker):
            for i in range(8):
                server.rooms.create(f"r{i}", agents=[RoomAgentDispatch(agent_name="x")])
            await taker.wait_for(lambda: len(taker.assignments) == 8)
            await quiet()
        assert refuser.assignments == []
        retried = [r for r in server.agents.jobs.values() if len(r.attempts) == 2]
        assert retried, "with 8 jobs and equal weights the refuser should be asked at least once"
        for record in server.agents.jobs.values():
            assert record.worker_id == taker.worker_id
            assert record.attempts[-1] == taker.worker_id
            assert record.history == [agent.JS_RUNNING]
        for record in retried:
            assert record.attempts == [refuser.worker_id, taker.worker_id]
        assert {o.job.id for o in refuser.offers} == {r.job.id for r in retried}


async def test_offer_declined_by_every_worker_fails(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with (
        open_worker(server.url) as a,
        open_worker(server.url) as b,
        answering(decline, a, b),
    ):
        server.create_room("nobody")
        (job_id,) = jobs_in(server, "nobody")
        record = await server.wait_for_job_status(job_id, agent.JS_FAILED)
        assert sorted(record.attempts) == sorted([a.worker_id, b.worker_id])
        assert record.worker_id is None
        assert (len(a.offers), len(b.offers)) == (1, 1)


async def test_terminate_answer_ends_the_job_without_retry(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    def refuse_for_good(req: protocol.AvailabilityRequest) -> protocol.Availability:
        return decline(req, terminate=True)

    async with (
        open_worker(server.url) as a,
        open_worker(server.url) as b,
        answering(refuse_for_good, a, b),
    ):
        server.create_room("done")
        (job_id,) = jobs_in(server, "done")
        record = await server.wait_for_job_status(job_id, agent.JS_SUCCESS)
        await quiet()
        assert len(a.offers) + len(b.offers) == 1
        assert a.assignments == b.assignments == []
        assert len(record.attempts) == 1
        assert record.worker_id is None
        assert record.history == [agent.JS_SUCCESS]
        assert record.job.state.ended_at > 0


async def test_unanswered_offer_times_out_after_10_s_without_assignment(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as slow, open_worker(server.url) as other:
        await other.send(protocol.UpdateWorkerStatus(status=agent.WS_FULL))
        await server.agents.changes.wait_until(
            lambda: server.agents.workers[other.worker_id].status == agent.WS_FULL  # type: ignore[index]
        )
        server.create_room("slow")
        offer = await slow.expect(protocol.AvailabilityRequest)
        start = trio.current_time()
        record = await server.wait_for_job_status(offer.job.id, agent.JS_FAILED)
        assert 10.0 <= trio.current_time() - start <= 11.0
        assert record.worker_id is None
        assert record.attempts == [slow.worker_id]  # a timeout is not retried elsewhere
        # the late answer is ignored: no assignment, and the connection stays up
        await slow.send(accept(offer))
        assert (await slow.ping(5)).last_timestamp == 5
        assert server.agents.jobs[offer.job.id].status == agent.JS_FAILED
        assert slow.worker_id in server.agents.workers


# --- job state and termination ---------------------------------------------------------------


async def test_update_job_status_is_tracked_into_history(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as w:
        server.create_room("tracked")
        job_id = (await w.take_job()).job.id
        await w.send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_RUNNING))
        await w.send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_FAILED, error="boom"))
        record = await server.wait_for_job_status(job_id, agent.JS_FAILED)
        assert record.history == [agent.JS_RUNNING, agent.JS_RUNNING, agent.JS_FAILED]
        assert record.error == "boom"
        st = record.job.state
        assert 0 < st.started_at <= st.updated_at
        assert st.ended_at >= st.started_at
        assert job_id not in server.agents.workers[w.worker_id].running  # type: ignore[index]

        # an update for a job the server does not run is ignored, not fatal
        unknown = agent.WorkerMessage(
            update_job=agent.UpdateJobStatus(job_id="AJ_unknown", status=agent.JS_SUCCESS)
        )
        await w.send_raw(unknown.SerializeToString())
        assert (await w.ping(9)).last_timestamp == 9
        assert "AJ_unknown" not in server.agents.jobs


async def test_terminate_sends_job_termination_only_for_running_jobs(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as w:
        server.create_room("t1")
        job_id = (await w.take_job()).job.id
        assert server.agents.terminate(job_id) is True
        assert (await w.expect(protocol.JobTermination)).job_id == job_id

        await w.send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_SUCCESS))
        await server.wait_for_job_status(job_id, agent.JS_SUCCESS)
        assert server.agents.terminate(job_id) is False
        assert server.agents.terminate("AJ_nonexistent") is False

        server.create_room("t2")  # offered, not answered yet: not running
        offer = await w.expect(protocol.AvailabilityRequest)
        assert server.agents.terminate(offer.job.id) is False
        # nothing was queued for the worker: the next message is the pong
        assert (await w.ping(3)).last_timestamp == 3


async def test_delete_dispatch_removes_an_agent_that_does_not_leave_within_3_s(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    """As LiveKit: JobTermination, then 3 s for the agent participant to go, then removal."""
    async with open_worker(server.url, agent_name="stay") as w:
        room = server.create_room("evict")
        d = server.rooms.add_dispatch(room, "stay")
        server.agents.launch_dispatch(room, d)
        assignment = await w.take_job()
        identity = assignment.job.state.participant_identity
        inbox: list[object] = []
        server.rooms.join(
            room,
            models.ParticipantInfo(identity=identity, kind=models.ParticipantInfo.AGENT),
            deliver=inbox.append,
        )
        admin = lkapi.VideoGrants(room_admin=True, room="evict")
        headers = {
            "Authorization": "Bearer "
            + lkapi.AccessToken(DEV_API_KEY, DEV_API_SECRET).with_grants(admin).to_jwt(),
            "Content-Type": "application/json",
        }
        async with httpx.AsyncClient(transport=server.http_transport()) as client:
            r = await client.post(
                "http://stand-in/twirp/livekit.AgentDispatchService/DeleteDispatch",
                json={"room": "evict", "dispatch_id": d.id},
                headers=headers,
            )
        assert r.status_code == 200, r.text
        start = trio.current_time()
        assert (await w.expect(protocol.JobTermination)).job_id == assignment.job.id
        p = room.participants[identity]
        await p.left.wait()
        assert trio.current_time() - start == pytest.approx(3.0)
        assert p.info.disconnect_reason == models.PARTICIPANT_REMOVED
        leaves = [m for m in inbox if isinstance(m, rtc_pb.SignalResponse) and m.HasField("leave")]
        assert [m.leave.reason for m in leaves] == [models.PARTICIPANT_REMOVED]


async def test_migrate_job_readopts_jobs_after_a_reconnect(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url, agent_name="m") as first:
        server.rooms.create("mig", agents=[RoomAgentDispatch(agent_name="m")])
        job_id = (await first.take_job()).job.id
        old_id = first.worker_id
    await server.agents.changes.wait_until(lambda: old_id not in server.agents.workers)
    # LiveKit neither reassigns nor fails the running job of a vanished worker
    assert server.agents.jobs[job_id].status == agent.JS_RUNNING
    assert server.agents.terminate(job_id) is False

    async with open_worker(server.url, agent_name="m") as second:
        await second.send(protocol.MigrateJob(job_ids=[job_id]))
        await server.agents.changes.wait_until(
            lambda: server.agents.jobs[job_id].worker_id == second.worker_id
        )
        assert job_id in server.agents.workers[second.worker_id].running  # type: ignore[index]
        assert server.agents.terminate(job_id) is True
        assert (await second.expect(protocol.JobTermination)).job_id == job_id
        await second.send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_SUCCESS))
        record = await server.wait_for_job_status(job_id, agent.JS_SUCCESS)
        assert record.history[-1] == agent.JS_SUCCESS


# --- worker status, disconnects, load ------------------------------------------------------------


async def test_update_worker_status_sets_status_only_when_present_and_always_load(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as w:
        record = server.agents.workers[w.worker_id]  # type: ignore[index]
        await w.send(protocol.UpdateWorkerStatus(status=agent.WS_FULL, job_count=2))
        await server.agents.changes.wait_until(lambda: record.status == agent.WS_FULL)
        assert (record.load, record.job_count) == (0.0, 2)
        await w.send(protocol.UpdateWorkerStatus(load=0.25, job_count=1))
        await server.agents.changes.wait_until(lambda: record.load == 0.25)
        assert record.status == agent.WS_FULL  # absent status leaves it alone
        await w.send(protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE))
        await server.agents.changes.wait_until(lambda: record.status == agent.WS_AVAILABLE)
        assert record.load == 0.0  # absent load counts as 0, like LiveKit


async def test_disconnected_worker_is_dropped_and_its_pending_offer_moves_on(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    async with open_worker(server.url) as stays:
        await stays.send(protocol.UpdateWorkerStatus(status=agent.WS_FULL))
        stays_record = server.agents.workers[stays.worker_id]  # type: ignore[index]
        await server.agents.changes.wait_until(lambda: stays_record.status == agent.WS_FULL)
        async with open_worker(server.url) as leaves:
            server.create_room("handover")
            offer = await leaves.expect(protocol.AvailabilityRequest)
            await stays.send(protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE))
            await server.agents.changes.wait_until(
                lambda: stays_record.status == agent.WS_AVAILABLE
            )
            leaves_id = leaves.worker_id
        # the socket closed with the offer unanswered: it moves on at once, not at the timeout
        closed_at = trio.current_time()
        assignment = await stays.take_job()
        assert trio.current_time() - closed_at < 1.0
        assert assignment.job.id == offer.job.id
        assert leaves_id not in server.agents.workers
        assert list(server.agents.workers) == [stays.worker_id]
        record = server.agents.jobs[offer.job.id]
        assert record.attempts == [leaves_id, stays.worker_id]
        assert record.worker_id == stays.worker_id


async def test_jobs_are_weighted_by_spare_capacity_and_full_workers_get_none(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    loads = {"idle": 0.0, "half": 0.5, "busy": 0.8}
    async with contextlib.AsyncExitStack() as stack:
        workers = {
            name: await stack.enter_async_context(open_worker(server.url, agent_name="w"))
            for name in [*loads, "full"]
        }
        for name, w in workers.items():
            if name == "full":
                await w.send(protocol.UpdateWorkerStatus(status=agent.WS_FULL, load=0.0))
            else:
                await w.send(
                    protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=loads[name])
                )
        records = {n: server.agents.workers[w.worker_id] for n, w in workers.items()}  # type: ignore[index]
        await server.agents.changes.wait_until(
            lambda: (
                records["full"].status == agent.WS_FULL
                and all(records[n].load == pytest.approx(x) for n, x in loads.items())
            )
        )
        await stack.enter_async_context(answering(accept, *workers.values()))
        server.agents.rng.seed(2024)
        n_jobs = 300
        for i in range(n_jobs):
            server.rooms.create(f"w{i}", agents=[RoomAgentDispatch(agent_name="w")])
        await server.agents.changes.wait_until(
            lambda: sum(1 for r in server.agents.jobs.values() if r.worker_id) == n_jobs
        )
        by_worker = Counter(r.worker_id for r in server.agents.jobs.values())
        counts = {name: by_worker[w.worker_id] for name, w in workers.items()}
        assert counts["full"] == 0
        assert workers["full"].offers == []
        total_weight = sum(1 - x for x in loads.values())
        for name, load in loads.items():
            expected = (1 - load) / total_weight  # 0.59, 0.29, 0.12
            assert counts[name] / n_jobs == pytest.approx(expected, abs=0.07), counts
        assert counts["idle"] > counts["half"] > counts["busy"] > 0


# --- JSON frames and bad input -------------------------------------------------------------------


async def test_json_text_frames_are_accepted_and_answered_in_json(
    autojump_clock: trio.abc.Clock, server: LocalServer
) -> None:
    def to_json(msg: agent.WorkerMessage) -> str:
        return json_format.MessageToJson(msg)

    async def receive(ws: object) -> agent.ServerMessage:
        raw = await ws.get_message()  # type: ignore[attr-defined]
        assert isinstance(raw, str), f"expected a JSON text frame, got {raw!r}"
        return json_format.Parse(raw, agent.ServerMessage())

    headers = {"Authorization": f"Bearer {worker_token()}"}
    async with open_websocket(server.url, "/agent", headers=headers) as ws:
        register = agent.RegisterWorkerRequest(type=agent.JT_ROOM, agent_name="js", version="0.1")
        await ws.send_message(to_json(agent.WorkerMessage(register=register)))
        msg = await receive(ws)
        assert msg.WhichOneof("message") == "register"
        assert msg.register.worker_id.startswith("AW_")
        assert server.agents.workers[msg.register.worker_id].agent_name == "js"

        await ws.send_message(to_json(agent.WorkerMessage(ping=agent.WorkerPing(timestamp=42))))
        msg = await receive(ws)
        assert msg.pong.last_timestamp == 42

        server.rooms.create("json-room", agents=[RoomAgentDispatch(agent_name="js")])
        msg = await receive(ws)
        job = msg.availability.job
        assert job.room.name == "json-room"
        answer = agent.AvailabilityResponse(job_id=job.id, available=True, participant_identity="j")
        await ws.send_message(to_json(agent.WorkerMessage(availability=answer)))
        msg = await receive(ws)
        assert msg.assignment.job.id == job.id
        claims = lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(msg.assignment.token)
        assert claims.identity == "j"


def _register_bytes(**fields: object) -> bytes:
    return agent.WorkerMessage(register=agent.RegisterWorkerRequest(**fields)).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "registered"),
    [
        pytest.param(b"\xff\xff\xff\xff", False, id="garbage-bytes"),
        pytest.param(b"", False, id="empty-worker-message"),
        pytest.param(_register_bytes(type=7), False, id="unknown-job-type"),
        pytest.param(b"\x1a" + b"\x00" * (MAX_MESSAGE_SIZE), False, id="oversized"),
        pytest.param("{not json", False, id="bad-json-text"),
        pytest.param(
            agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus()).SerializeToString(),
            False,
            id="status-before-register",
        ),
        pytest.param(_register_bytes(), True, id="second-register"),
        pytest.param(b"\xff\xff\xff\xff", True, id="garbage-after-register"),
    ],
)
async def test_malformed_frame_closes_only_that_connection(
    autojump_clock: trio.abc.Clock,
    server: LocalServer,
    payload: bytes | str,
    registered: bool,
) -> None:
    async with (
        open_worker(server.url, agent_name="good") as good,
        open_worker(server.url, register=registered) as bad,
    ):
        bad_id = bad.worker_id
        await bad.send_raw(payload)
        await bad.wait_closed()
        await server.agents.changes.wait_until(lambda: bad_id not in server.agents.workers)
        assert list(server.agents.workers) == [good.worker_id]
        # the other worker is still served
        assert (await good.ping(11)).last_timestamp == 11
        server.rooms.create("still-served", agents=[RoomAgentDispatch(agent_name="good")])
        assert (await good.take_job()).job.room.name == "still-served"


# --- over real TCP ---------------------------------------------------------------------


async def test_agent_endpoint_over_loopback_tcp() -> None:
    with trio.fail_after(30):
        async with open_local_server(port=0) as server:
            assert server.url.startswith("ws://127.0.0.1:")
            http_url = server.url.replace("ws://", "http://")

            with pytest.raises(HandshakeRejected) as info:
                async with open_worker(server.url, headers={}, register=False):
                    pass
            assert (info.value.status, info.value.body) == (401, NO_PERMISSION)

            async with httpx.AsyncClient() as client:
                resp = await client.get(f"{http_url}/agent")
            assert resp.status_code == 404

            async with (
                open_worker(server.url, agent_name="tcp") as good,
                open_worker(server.url, agent_name="tcp") as big,
            ):
                assert good.worker_id is not None
                assert good.worker_id.startswith("AW_")
                assert (await good.ping(77)).last_timestamp == 77

                # a frame over LiveKit's 2 MiB limit closes that socket, and only that one
                big_id = big.worker_id
                await big.send_raw(b"\x1a" + b"\x00" * MAX_MESSAGE_SIZE)
                await big.wait_closed()
                await server.agents.changes.wait_until(lambda: big_id not in server.agents.workers)

                server.rooms.create("tcp-room", agents=[RoomAgentDispatch(agent_name="tcp")])
                assignment = await good.take_job(identity="tcp-agent")
                assert assignment.job.room.name == "tcp-room"
                assert assignment.url == "sim+" + server.url  # the simulated-room backend
                claims = lkapi.TokenVerifier(DEV_API_KEY, DEV_API_SECRET).verify(assignment.token)
                assert (claims.identity, claims.video.room) == ("tcp-agent", "tcp-room")

                await good.send(
                    protocol.UpdateJobStatus(job_id=assignment.job.id, status=agent.JS_SUCCESS)
                )
                record = await server.wait_for_job_status(assignment.job.id, agent.JS_SUCCESS)
                assert record.history == [agent.JS_RUNNING, agent.JS_SUCCESS]
