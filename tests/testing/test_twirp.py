"""The stand-in's Twirp RoomService and AgentDispatchService.

The official ``livekit-api`` client (asyncio + aiohttp), unchanged, talks to
``open_local_server(port=0)`` over real loopback: each group of calls runs in
its own ``asyncio.run`` in a worker thread while trio keeps serving.  Raw
httpx covers what the official client cannot send (no token, a token without
the grant, malformed bodies, wrong methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio
from livekit import api as lkapi
from livekit.protocol import agent, models
from livekit.protocol import rtc as rtc_pb

from trio_agents import _transport, protocol
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET, LocalServer, open_local_server

T = TypeVar("T")
ROOM_SVC = "/twirp/livekit.RoomService"
DISPATCH_SVC = "/twirp/livekit.AgentDispatchService"
HOUR = datetime.timedelta(hours=1)


async def official(
    server: LocalServer,
    fn: Callable[[lkapi.LiveKitAPI], Awaitable[T]],
    *,
    key: str = DEV_API_KEY,
    secret: str = DEV_API_SECRET,
) -> T:
    """Run ``fn(client)`` with the official client in a fresh asyncio loop (worker thread)."""

    async def main() -> T:
        async with lkapi.LiveKitAPI(server.url, key, secret) as lk:
            return await fn(lk)

    return await trio.to_thread.run_sync(lambda: asyncio.run(main()))


async def official_error(
    server: LocalServer,
    fn: Callable[[lkapi.LiveKitAPI], Awaitable[object]],
    **kwargs: str,
) -> lkapi.TwirpError:
    """Run ``fn`` with the official client; return the TwirpError it raised."""

    async def catch(lk: lkapi.LiveKitAPI) -> lkapi.TwirpError:
        try:
            await fn(lk)
        except lkapi.TwirpError as exc:
            return exc
        raise AssertionError("the call did not fail")

    return await official(server, catch, **kwargs)


def token(grants: lkapi.VideoGrants | None = None, **kwargs: Any) -> str:
    tok = lkapi.AccessToken(kwargs.pop("key", DEV_API_KEY), kwargs.pop("secret", DEV_API_SECRET))
    if grants is not None:
        tok.with_grants(grants)
    if "ttl" in kwargs:
        tok.with_ttl(kwargs.pop("ttl"))
    if "identity" in kwargs:
        tok.with_identity(kwargs.pop("identity"))
    assert not kwargs
    return tok.to_jwt()


def http_base(server: LocalServer) -> str:
    return _transport.http_base_url(server.url)


def join(server: LocalServer, room: str, identity: str) -> list[object]:
    """Add a STANDARD participant whose connection records what the room sends it."""
    inbox: list[object] = []
    r = server.rooms.get(room)
    assert r is not None
    server.rooms.join(
        r,
        models.ParticipantInfo(identity=identity, kind=models.ParticipantInfo.STANDARD),
        deliver=inbox.append,
    )
    return inbox


def signals(inbox: list[object], kind: str) -> list[Any]:
    return [
        getattr(m, kind)
        for m in inbox
        if isinstance(m, rtc_pb.SignalResponse) and m.WhichOneof("message") == kind
    ]


def data_packets(inbox: list[object]) -> list[models.DataPacket]:
    return [m for m in inbox if isinstance(m, models.DataPacket)]


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server(port=0) as s:
        yield s


# --- a minimal in-memory agent worker ------------------------------------------------


@attrs.define
class FakeWorker:
    agent_name: str
    assigned: list[agent.Job] = attrs.field(factory=list)
    terminated: list[str] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def _touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(5):
            while not predicate():
                await self.changed.wait()

    async def run(self, server: LocalServer, *, task_status: trio.TaskStatus[None]) -> None:
        """Register over ``/agent`` (in memory), accept every job, end terminated ones."""
        headers = {"Authorization": f"Bearer {token(lkapi.VideoGrants(agent=True))}"}
        conn = protocol.Connection(protocol.Role.WORKER, clock=trio.current_time)
        async with _transport.open_websocket(server.memory_url, "/agent", headers=headers) as ws:
            await ws.send_message(conn.send(protocol.Register(agent_name=self.agent_name)))
            raw = await ws.get_message()
            assert isinstance(raw, bytes)
            assert isinstance(conn.receive_message(raw), protocol.Registered)
            task_status.started()
            while True:
                raw = await ws.get_message()
                assert isinstance(raw, bytes)
                event = conn.receive_message(raw)
                if isinstance(event, protocol.AvailabilityRequest):
                    answer = protocol.Availability(
                        job_id=event.job.id,
                        available=True,
                        participant_identity=f"agent-{event.job.id}",
                    )
                    await ws.send_message(conn.send(answer))
                elif isinstance(event, protocol.JobAssignment):
                    self.assigned.append(event.job)
                    running = protocol.UpdateJobStatus(job_id=event.job.id, status=agent.JS_RUNNING)
                    await ws.send_message(conn.send(running))
                elif isinstance(event, protocol.JobTermination):
                    self.terminated.append(event.job_id)
                    done = protocol.UpdateJobStatus(job_id=event.job_id, status=agent.JS_SUCCESS)
                    await ws.send_message(conn.send(done))
                self._touch()


async def start_worker(nursery: trio.Nursery, server: LocalServer, agent_name: str) -> FakeWorker:
    worker = FakeWorker(agent_name)
    await nursery.start(worker.run, server)
    await server.wait_for_workers(agent_name=agent_name)
    return worker


# --- RoomService through the official client -----------------------------------------


async def test_official_client_room_service(server: LocalServer) -> None:
    async def create(lk: lkapi.LiveKitAPI) -> tuple[models.Room, models.Room, list[str], list[str]]:
        first = await lk.room.create_room(
            lkapi.CreateRoomRequest(
                name="demo",
                metadata="hello",
                empty_timeout=60,
                departure_timeout=5,
                max_participants=7,
            )
        )
        again = await lk.room.create_room(lkapi.CreateRoomRequest(name="demo", metadata="ignored"))
        await lk.room.create_room(lkapi.CreateRoomRequest(name="other"))
        everything = await lk.room.list_rooms(lkapi.ListRoomsRequest())
        only = await lk.room.list_rooms(lkapi.ListRoomsRequest(names=["other", "missing"]))
        return (
            first,
            again,
            sorted(r.name for r in everything.rooms),
            [r.name for r in only.rooms],
        )

    first, again, names, only = await official(server, create)
    assert first.name == "demo"
    assert first.sid.startswith("RM_")
    assert (first.metadata, first.empty_timeout, first.departure_timeout) == ("hello", 60, 5)
    assert first.max_participants == 7
    assert again.sid == first.sid  # get-or-create
    assert again.metadata == "hello"
    assert names == ["demo", "other"]
    assert only == ["other"]

    alice = join(server, "demo", "alice")
    bob = join(server, "demo", "bob")

    async def participants(lk: lkapi.LiveKitAPI) -> tuple[list[str], models.ParticipantInfo]:
        listed = await lk.room.list_participants(lkapi.ListParticipantsRequest(room="demo"))
        got = await lk.room.get_participant(
            lkapi.RoomParticipantIdentity(room="demo", identity="alice")
        )
        return sorted(p.identity for p in listed.participants), got

    listed, got = await official(server, participants)
    assert listed == ["alice", "bob"]
    assert got.identity == "alice"
    assert got.sid == server.rooms.get("demo").participants["alice"].info.sid  # type: ignore[union-attr]
    assert got.state == models.ParticipantInfo.ACTIVE

    async def update(lk: lkapi.LiveKitAPI) -> tuple[models.ParticipantInfo, models.Room]:
        info = await lk.room.update_participant(
            lkapi.UpdateParticipantRequest(
                room="demo",
                identity="alice",
                name="Alice",
                metadata="m2",
                attributes={"mood": "good"},
                permission=models.ParticipantPermission(can_subscribe=True, can_publish=False),
            )
        )
        room = await lk.room.update_room_metadata(
            lkapi.UpdateRoomMetadataRequest(room="demo", metadata="meta2")
        )
        return info, room

    info, room = await official(server, update)
    assert (info.name, info.metadata, dict(info.attributes)) == ("Alice", "m2", {"mood": "good"})
    assert info.permission.can_subscribe
    assert not info.permission.can_publish
    assert room.name == "demo"
    assert room.metadata == "meta2"
    assert room.num_participants == 2
    # bob's connection saw both changes, as LiveKit's signal messages
    updates = [p for u in signals(bob, "update") for p in u.participants if p.identity == "alice"]
    assert updates[-1].metadata == "m2"
    assert updates[-1].attributes["mood"] == "good"
    assert signals(bob, "room_update")[-1].room.metadata == "meta2"

    async def send(lk: lkapi.LiveKitAPI) -> None:
        await lk.room.send_data(
            lkapi.SendDataRequest(
                room="demo",
                data=b"to bob",
                kind=models.DataPacket.RELIABLE,
                topic="chat",
                destination_identities=["bob"],
            )
        )
        await lk.room.send_data(lkapi.SendDataRequest(room="demo", data=b"to all"))

    await official(server, send)
    to_bob = [p.user for p in data_packets(bob)]
    to_alice = [p.user for p in data_packets(alice)]
    assert [(u.payload, u.topic) for u in to_bob] == [(b"to bob", "chat"), (b"to all", "")]
    assert [u.payload for u in to_alice] == [b"to all"]
    assert len(to_bob[0].nonce) == 16  # the official client's nonce went through
    assert data_packets(bob)[0].participant_identity == ""  # sent by the server

    async def remove(lk: lkapi.LiveKitAPI) -> list[str]:
        await lk.room.remove_participant(lkapi.RoomParticipantIdentity(room="demo", identity="bob"))
        listed = await lk.room.list_participants(lkapi.ListParticipantsRequest(room="demo"))
        return [p.identity for p in listed.participants]

    assert await official(server, remove) == ["alice"]
    leave = signals(bob, "leave")
    assert [lv.reason for lv in leave] == [models.PARTICIPANT_REMOVED]
    assert leave[0].action == rtc_pb.LeaveRequest.DISCONNECT
    gone = [p for u in signals(alice, "update") for p in u.participants if p.identity == "bob"]
    assert gone[-1].state == models.ParticipantInfo.DISCONNECTED
    assert gone[-1].disconnect_reason == models.PARTICIPANT_REMOVED

    async def delete(lk: lkapi.LiveKitAPI) -> list[str]:
        await lk.room.delete_room(lkapi.DeleteRoomRequest(room="demo"))
        return [r.name for r in (await lk.room.list_rooms(lkapi.ListRoomsRequest())).rooms]

    assert await official(server, delete) == ["other"]
    assert server.rooms.get("demo") is None
    assert [lv.reason for lv in signals(alice, "leave")] == [models.ROOM_DELETED]


async def test_official_client_not_found(server: LocalServer) -> None:
    server.create_room("here")
    join(server, "here", "alice")

    async def run(lk: lkapi.LiveKitAPI) -> list[tuple[str, str, int]]:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: lk.room.delete_room(lkapi.DeleteRoomRequest(room="nowhere")),
            lambda: lk.room.get_participant(
                lkapi.RoomParticipantIdentity(room="here", identity="nobody")
            ),
            lambda: lk.room.get_participant(
                lkapi.RoomParticipantIdentity(room="nowhere", identity="alice")
            ),
            lambda: lk.room.remove_participant(
                lkapi.RoomParticipantIdentity(room="here", identity="nobody")
            ),
            lambda: lk.room.update_participant(
                lkapi.UpdateParticipantRequest(room="here", identity="nobody", metadata="x")
            ),
            lambda: lk.room.update_room_metadata(
                lkapi.UpdateRoomMetadataRequest(room="nowhere", metadata="x")
            ),
            lambda: lk.room.send_data(lkapi.SendDataRequest(room="nowhere", data=b"x")),
            lambda: lk.agent_dispatch.list_dispatch("nowhere"),
            lambda: lk.agent_dispatch.delete_dispatch("AD_unknown", "here"),
            lambda: lk.agent_dispatch.delete_dispatch("AD_unknown", "nowhere"),
        ]
        out = []
        for call in calls:
            try:
                await call()
            except lkapi.TwirpError as exc:
                out.append((exc.code, exc.message, exc.status))
            else:
                out.append(("no error", "", 200))
        return out

    # LiveKit v1.13 answers these from the room, through its internal RPC: hence the
    # prefix, and 503 when there is no room to answer at all
    room_gone = ("not_found", "twirp error unknown: requested room does not exist", 404)
    no_participant = ("not_found", "twirp error unknown: participant does not exist", 404)
    no_node = ("unavailable", "twirp error unknown: no response from servers", 503)
    assert await official(server, run) == [
        room_gone,
        no_participant,
        no_participant,
        no_participant,
        no_participant,
        room_gone,
        no_node,  # SendData
        no_node,  # ListDispatch
        ("not_found", "twirp error unknown: dispatch ID not found", 404),
        no_node,  # DeleteDispatch
    ]
    # nothing changed, and ListParticipants of an unknown room is empty, as in LiveKit
    listed = await official(
        server,
        lambda lk: lk.room.list_participants(lkapi.ListParticipantsRequest(room="nowhere")),
    )
    assert list(listed.participants) == []
    assert list(server.rooms.get("here").participants) == ["alice"]  # type: ignore[union-attr]


# --- dispatch ------------------------------------------------------------------------


async def test_create_room_dispatches(server: LocalServer, nursery: trio.Nursery) -> None:
    worker = await start_worker(nursery, server, "x")

    async def run(lk: lkapi.LiveKitAPI) -> tuple[list[str], list[str]]:
        await lk.room.create_room(
            lkapi.CreateRoomRequest(
                name="explicit",
                agents=[lkapi.RoomAgentDispatch(agent_name="x", metadata="job-md")],
            )
        )
        await lk.room.create_room(lkapi.CreateRoomRequest(name="plain"))
        explicit = await lk.agent_dispatch.list_dispatch("explicit")
        plain = await lk.agent_dispatch.list_dispatch("plain")
        return [d.agent_name for d in explicit], [d.agent_name for d in plain]

    explicit, plain = await official(server, run)
    assert explicit == ["x"]  # only the listed agent: no default dispatch
    assert plain == [""]  # automatic dispatch
    # the listed dispatch launched a room job on the "x" worker
    await worker.wait_for(lambda: bool(worker.assigned))
    job = worker.assigned[0]
    assert (job.room.name, job.agent_name, job.metadata) == ("explicit", "x", "job-md")
    assert job.type == agent.JT_ROOM
    room = server.rooms.get("explicit")
    assert room is not None
    assert job.dispatch_id in room.dispatches


async def test_official_client_dispatch_lifecycle(
    server: LocalServer, nursery: trio.Nursery
) -> None:
    worker = await start_worker(nursery, server, "helper")
    server.create_room("busy")
    join(server, "busy", "alice")  # a participant already present

    async def create(lk: lkapi.LiveKitAPI) -> tuple[lkapi.AgentDispatch, list[str]]:
        d = await lk.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(
                agent_name="helper", room="fresh", metadata="md", attributes={"k": "v"}
            )
        )
        listed = await lk.agent_dispatch.list_dispatch("fresh")
        return d, sorted(x.agent_name for x in listed)

    d, names = await official(server, create)
    assert d.id.startswith("AD_")
    assert (d.agent_name, d.room, d.metadata, dict(d.attributes)) == (
        "helper",
        "fresh",
        "md",
        {"k": "v"},
    )
    assert d.state.created_at > 0
    assert d.state.deleted_at == 0
    # the room did not exist: it was created, with the default dispatch too
    assert names == ["", "helper"]
    assert server.rooms.get("fresh") is not None
    await worker.wait_for(lambda: len(worker.assigned) == 1)
    job = worker.assigned[0]
    assert (job.dispatch_id, job.room.name, job.metadata) == (d.id, "fresh", "md")

    async def get(lk: lkapi.LiveKitAPI) -> tuple[Any, Any]:
        found = await lk.agent_dispatch.get_dispatch(d.id, "fresh")
        missing = await lk.agent_dispatch.get_dispatch("AD_nope", "fresh")
        return found, missing

    found, missing = await official(server, get)
    assert found is not None
    assert found.id == d.id
    # the job state LiveKit records at assignment
    assert [j.id for j in found.state.jobs] == [job.id]
    assert missing is None

    async def delete(lk: lkapi.LiveKitAPI) -> tuple[lkapi.AgentDispatch, list[str]]:
        deleted = await lk.agent_dispatch.delete_dispatch(d.id, "fresh")
        listed = await lk.agent_dispatch.list_dispatch("fresh")
        return deleted, [x.agent_name for x in listed]

    deleted, left = await official(server, delete)
    assert deleted.id == d.id
    assert deleted.state.deleted_at >= deleted.state.created_at > 0
    assert left == [""]
    # its running job was terminated on the worker, which reported the end
    await worker.wait_for(lambda: worker.terminated == [job.id])
    await server.wait_for_job_status(job.id, agent.JS_SUCCESS)

    # a dispatch into a room with a participant also starts the participant jobs
    # that match the worker's type (ROOM here): one room job
    d2 = await official(
        server,
        lambda lk: lk.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(agent_name="helper", room="busy")
        ),
    )
    await worker.wait_for(lambda: len(worker.assigned) == 2)
    assert worker.assigned[1].dispatch_id == d2.id
    busy = server.rooms.get("busy")
    assert busy is not None
    assert sorted(x.agent_name for x in busy.dispatches.values()) == ["", "helper"]


async def test_a_retried_create_dispatch_makes_a_second_dispatch(server: LocalServer) -> None:
    """LiveKit v1.13 gives every CreateDispatch a random id, whatever X-Livekit-Request-Id says."""
    body = lkapi.CreateAgentDispatchRequest(agent_name="a", room="idem").SerializeToString()
    request_id = str(uuid.uuid4())

    async def post(rid: str) -> lkapi.AgentDispatch:
        headers = {
            "Authorization": f"Bearer {token(lkapi.VideoGrants(room_admin=True, room='idem'))}",
            "Content-Type": "application/protobuf",
            "X-Livekit-Request-Id": rid,
        }
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"{http_base(server)}{DISPATCH_SVC}/CreateDispatch", content=body, headers=headers
            )
        assert r.status_code == 200, r.text
        return lkapi.AgentDispatch.FromString(r.content)

    first = await post(request_id)
    retry = await post(request_id)
    assert retry.id != first.id
    room = server.rooms.get("idem")
    assert room is not None
    assert sorted(d.id for d in room.dispatches.values() if d.agent_name == "a") == sorted(
        [first.id, retry.id]
    )


# --- authentication ------------------------------------------------------------------


async def test_official_client_bad_credentials(server: LocalServer) -> None:
    async def list_rooms(lk: lkapi.LiveKitAPI) -> object:
        return await lk.room.list_rooms(lkapi.ListRoomsRequest())

    bad_secret = await official_error(server, list_rooms, secret="not-the-secret")
    assert (bad_secret.code, bad_secret.status) == ("unknown", 401)  # plain-text 401
    other_pair = await official_error(server, list_rooms, key="otherkey", secret="othersecret")
    assert (other_pair.code, other_pair.status) == ("unknown", 401)
    # and the server still answers a good client
    assert list((await official(server, list_rooms)).rooms) == []  # type: ignore[attr-defined]


async def raw_post(
    server: LocalServer,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    hdrs = {"Content-Type": "application/protobuf"}
    hdrs.update(headers or {})
    async with httpx.AsyncClient() as client:
        return await client.request(
            method, f"{http_base(server)}{path}", content=body, headers=hdrs
        )


async def assert_still_serves(server: LocalServer) -> None:
    auth = {"Authorization": f"Bearer {token(lkapi.VideoGrants(room_list=True))}"}
    r = await raw_post(server, f"{ROOM_SVC}/ListRooms", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/protobuf"
    lkapi.ListRoomsResponse.FromString(r.content)


def twirp_error(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/json"
    data = json.loads(r.content)
    assert isinstance(data, dict)
    return data


async def test_missing_token_and_missing_grants(server: LocalServer) -> None:
    server.create_room("a")
    listing = lkapi.ListParticipantsRequest(room="a").SerializeToString()
    denied = {"code": "unauthenticated", "msg": "permissions denied"}

    # no token at all: the grant check fails with a Twirp JSON 401
    r = await raw_post(server, f"{ROOM_SVC}/ListParticipants", listing)
    assert r.status_code == 401
    assert twirp_error(r) == denied

    # valid tokens without the needed grant (LiveKit answers these as
    # unauthenticated too, never permission_denied)
    cases = [
        (lkapi.VideoGrants(room_list=True), f"{ROOM_SVC}/ListParticipants", listing),
        (lkapi.VideoGrants(room_admin=True, room="b"), f"{ROOM_SVC}/ListParticipants", listing),
        (lkapi.VideoGrants(room_join=True, room="a"), f"{ROOM_SVC}/ListParticipants", listing),
        (lkapi.VideoGrants(room_admin=True, room="a"), f"{ROOM_SVC}/ListRooms", b""),
        (lkapi.VideoGrants(room_list=True), f"{ROOM_SVC}/CreateRoom", b"\n\x01z"),
        (lkapi.VideoGrants(room_admin=True, room="a"), f"{ROOM_SVC}/DeleteRoom", b"\n\x01a"),
        (
            lkapi.VideoGrants(room_admin=True, room="a"),
            f"{DISPATCH_SVC}/CreateDispatch",
            lkapi.CreateAgentDispatchRequest(room="other").SerializeToString(),
        ),
        (None, f"{DISPATCH_SVC}/ListDispatch", b"\x12\x01a"),
    ]
    for grants, path, body in cases:
        tok = token(grants, identity="someone")
        r = await raw_post(server, path, body, headers={"Authorization": f"Bearer {tok}"})
        assert (r.status_code, twirp_error(r)) == (401, denied), (grants, path)
    assert server.rooms.get("z") is None
    assert server.rooms.get("a") is not None
    assert server.rooms.get("other") is None
    await assert_still_serves(server)


async def test_invalid_tokens_get_plain_text_401(server: LocalServer) -> None:
    grants = lkapi.VideoGrants(room_list=True)
    cases = {
        "Basic dXNlcjpwYXNz": "invalid authorization header. Must start with Bearer ",
        "Bearer not-a-jwt": "invalid authorization token",
        f"Bearer {token(grants, key='otherkey', secret='o')}": "invalid API key: otherkey",
        f"Bearer {token(grants, secret='wrong-secret')}": "invalid token: ",
        f"Bearer {token(grants, ttl=-HOUR)}": "invalid token: ",
    }
    for header, text in cases.items():
        r = await raw_post(server, f"{ROOM_SVC}/ListRooms", headers={"Authorization": header})
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text.startswith(text), (header, r.text)
    # checked before routing, as LiveKit's middleware does
    r = await raw_post(
        server, f"{ROOM_SVC}/Nope", headers={"Authorization": "Bearer x"}, method="GET"
    )
    assert (r.status_code, r.text) == (401, "invalid authorization token")
    await assert_still_serves(server)


# --- bad input -----------------------------------------------------------------------


async def post_oversized(server: LocalServer, path: str, size: int) -> tuple[int, bytes]:
    """POST ``size`` bytes over a raw socket, reading the answer while still sending.

    (httpx would do, but when the server answers before taking the whole body,
    httpx leaves its body generator unfinished and trio warns about it.)
    """
    parts = urlsplit(http_base(server))
    assert parts.hostname is not None
    assert parts.port is not None
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/protobuf\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:

        async def send_body() -> None:
            chunk = b"x" * 65536
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(head)
                for _ in range(size // len(chunk)):
                    await stream.send_all(chunk)

        answer = bytearray()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_body)
                while True:
                    header_end = answer.find(b"\r\n\r\n")
                    if header_end >= 0:
                        fields = bytes(answer[:header_end]).decode("latin-1").split("\r\n")
                        length = next(
                            int(f.split(":", 1)[1])
                            for f in fields
                            if f.lower().startswith("content-length:")
                        )
                        if len(answer) >= header_end + 4 + length:
                            break
                    data = await stream.receive_some()
                    assert data, "the server closed the connection without an answer"
                    answer += data
                nursery.cancel_scope.cancel()
    status = int(bytes(answer).split(b" ", 2)[1])
    return status, bytes(answer[header_end + 4 :])


async def test_names_over_256_bytes_are_refused_as_livekit_does(server: LocalServer) -> None:
    creator = {"Authorization": f"Bearer {token(lkapi.VideoGrants(room_create=True))}"}
    long_room = lkapi.CreateRoomRequest(name="é" * 128 + "x").SerializeToString()  # 257 bytes
    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", long_room, headers=creator)
    assert (r.status_code, twirp_error(r)) == (
        400,
        {
            "code": "invalid_argument",
            "msg": "twirp error unknown: room name length exceeds limits: max length 256",
        },
    )
    longest = lkapi.CreateRoomRequest(name="é" * 128).SerializeToString()
    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", longest, headers=creator)
    assert r.status_code == 200

    # the participant name is checked before the grant (a token without one here)
    rename = lkapi.UpdateParticipantRequest(room="r", identity="p", name="n" * 257)
    r = await raw_post(server, f"{ROOM_SVC}/UpdateParticipant", rename.SerializeToString())
    assert (r.status_code, twirp_error(r)) == (
        400,
        {
            "code": "invalid_argument",
            "msg": "name length exceeds limits 256",
            "meta": {"argument": "name length exceeds limits"},
        },
    )


async def test_bad_requests_get_twirp_errors(server: LocalServer) -> None:
    admin = {"Authorization": f"Bearer {token(lkapi.VideoGrants(room_create=True))}"}

    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", b"\x0a\xff\xff", headers=admin)
    assert r.status_code == 400
    assert twirp_error(r) == {
        "code": "malformed",
        "msg": "the protobuf request could not be decoded",
    }
    await assert_still_serves(server)

    json_admin = {**admin, "Content-Type": "application/json"}
    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", b'{"name": ', headers=json_admin)
    assert r.status_code == 400
    assert twirp_error(r) == {"code": "malformed", "msg": "the json request could not be decoded"}
    await assert_still_serves(server)

    status, _ = await post_oversized(server, f"{ROOM_SVC}/CreateRoom", 3 * 1024 * 1024)
    assert status == 413
    await assert_still_serves(server)

    r = await raw_post(server, f"{ROOM_SVC}/Explode", headers=admin)
    assert r.status_code == 404
    assert twirp_error(r) == {
        "code": "bad_route",
        "msg": f'no handler for path "{ROOM_SVC}/Explode"',
        "meta": {"twirp_invalid_route": f"POST {ROOM_SVC}/Explode"},
    }
    await assert_still_serves(server)

    # an unknown service or package is no Twirp route at all: Go's mux answers
    for path in ("/twirp/livekit.NoService/CreateRoom", "/twirp/other.RoomService/CreateRoom"):
        r = await raw_post(server, path, headers=admin)
        assert (r.status_code, r.text) == (404, "404 page not found\n")
        assert r.headers["content-type"].startswith("text/plain")

    r = await raw_post(server, f"{ROOM_SVC}/ListRooms", headers=admin, method="GET")
    assert r.status_code == 404
    err = twirp_error(r)
    assert err["code"] == "bad_route"
    assert err["msg"] == 'unsupported method "GET" (only POST is allowed)'
    await assert_still_serves(server)

    text = {**admin, "Content-Type": "text/plain"}
    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", b"\n\x01q", headers=text)
    assert r.status_code == 404
    assert twirp_error(r)["msg"] == 'unexpected Content-Type: "text/plain"'

    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", b"", headers=admin)  # no name
    assert (r.status_code, twirp_error(r)["code"]) == (400, "invalid_argument")
    bad_nonce = lkapi.SendDataRequest(room="q", data=b"x", nonce=b"123").SerializeToString()
    room_admin = {"Authorization": f"Bearer {token(lkapi.VideoGrants(room_admin=True, room='q'))}"}
    r = await raw_post(server, f"{ROOM_SVC}/SendData", bad_nonce, headers=room_admin)
    assert (r.status_code, twirp_error(r)["code"]) == (400, "invalid_argument")

    assert [r.name for r in server.rooms.list()] == []  # nothing was created by bad requests
    await assert_still_serves(server)


async def test_json_requests_get_json_answers(server: LocalServer) -> None:
    admin = {
        "Authorization": f"Bearer {token(lkapi.VideoGrants(room_create=True))}",
        "Content-Type": "application/json",
    }
    # camelCase and snake_case keys are both accepted; unknown keys are ignored
    body = b'{"name": "j", "emptyTimeout": 33, "metadata": "m", "unknown_field": 1}'
    r = await raw_post(server, f"{ROOM_SVC}/CreateRoom", body, headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    room = r.json()
    assert (room["name"], room["empty_timeout"], room["metadata"]) == ("j", 33, "m")
    assert room["num_participants"] == 0  # unpopulated fields are emitted, as twirp does
    assert room["sid"] == server.rooms.get("j").info.sid  # type: ignore[union-attr]

    r = await raw_post(server, f"{ROOM_SVC}/DeleteRoom", b'{"room": "nope"}', headers=admin)
    assert r.status_code == 404
    assert twirp_error(r) == {
        "code": "not_found",
        "msg": "twirp error unknown: requested room does not exist",
    }
