# ruff: noqa: E501  (the scenario tables read best one call per line)
"""Scenario functions: each drives one server as a client would and returns what it saw.

Every scenario takes a ``ServerUnderTest`` and returns a flat observation
(``observe.flatten``).  The tests run each one on the real ``livekit-server``
and on the stand-in (configured with the real one's keys and timeouts) and
compare the two.

Names are unique per call (``fresh``), so scenarios can share the session's
real server with other tests and run side by side.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import httpx
import jwt
import trio
from google.protobuf import json_format
from livekit import api as lkapi
from livekit.protocol import agent, models
from livekit.protocol import room as room_pb

from tests.differential.observe import flatten, proto_fields, scrub
from tests.testing.worker_client import ScriptedWorker, accept, decline, open_worker, worker_token
from trio_agents import protocol
from trio_agents._errors import ConnectionClosed, HandshakeRejected

JSON = "application/json"
PROTOBUF = "application/protobuf"
#: How long any single wait may take before the scenario records "never".
PATIENCE = 15.0

Observation = dict[str, Any]
#: ``join(token)``: a participant (the token's identity, in its room) for the block.
Join = Callable[[str], AbstractAsyncContextManager[object]]


@attrs.frozen
class ServerUnderTest:
    """One server as the scenarios reach it: the same shape for both servers."""

    name: str
    url: str
    api_key: str
    api_secret: str
    departure_timeout: int
    empty_timeout: int
    join: Join = attrs.field(repr=False)

    @property
    def http_url(self) -> str:
        return "http" + self.url.removeprefix("ws")

    def token(
        self,
        grants: lkapi.VideoGrants | None = None,
        *,
        key: str | None = None,
        secret: str | None = None,
        ttl: datetime.timedelta = datetime.timedelta(minutes=10),
        nbf: datetime.datetime | None = None,
        identity: str = "",
    ) -> str:
        """A JWT signed with this server's keys (or the ones given)."""
        tok = lkapi.AccessToken(key or self.api_key, secret or self.api_secret).with_ttl(ttl)
        tok.with_identity(identity)
        if grants is not None:
            tok.with_grants(grants)
        encoded = tok.to_jwt()
        if nbf is None:
            return encoded
        claims = jwt.decode(encoded, options={"verify_signature": False})
        claims["nbf"] = int(nbf.timestamp())
        return jwt.encode(claims, secret or self.api_secret, algorithm="HS256")

    def participant(self, room: str, identity: str) -> AbstractAsyncContextManager[object]:
        """A standard participant ``identity`` in ``room`` for the block."""
        grants = lkapi.VideoGrants(room_join=True, room=room)
        return self.join(self.token(grants, identity=identity))

    def admin(self, room: str) -> str:
        return self.token(lkapi.VideoGrants(room_admin=True, room=room))

    def creator(self) -> str:
        return self.token(lkapi.VideoGrants(room_create=True, room_list=True))


def fresh(what: str) -> str:
    return f"diff-{what}-{secrets.token_hex(4)}"


# --- Twirp ---------------------------------------------------------------------------


@attrs.define
class Twirp:
    """Raw Twirp calls (httpx), so that every status, header and byte is visible."""

    sut: ServerUnderTest
    client: httpx.AsyncClient

    async def call(
        self,
        method: str,
        body: dict[str, Any] | bytes,
        *,
        token: str | None,
        service: str = "RoomService",
        content_type: str = JSON,
        http_method: str = "POST",
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, Any]:
        """``(status, media type, body)``; a JSON body parsed, text left as text."""
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = self.sut.http_url + (path or f"/twirp/livekit.{service}/{method}")
        resp = await self.client.request(http_method, url, content=data, headers=hdrs)
        media = resp.headers.get("content-type", "")
        parsed: Any = resp.content
        if media.startswith(JSON):
            parsed = resp.json()
        elif media.startswith("text/"):
            parsed = scrub(resp.text)
        return resp.status_code, media, parsed

    async def observe(
        self, label: str, method: str, body: dict[str, Any] | bytes, **kw: Any
    ) -> Observation:
        status, media, parsed = await self.call(method, body, **kw)
        if isinstance(parsed, bytes):
            parsed = f"<{len(parsed)} bytes>"
        elif isinstance(parsed, dict) and "agent_dispatches" in parsed:
            # the real server lists a room's dispatches in Go map order (random)
            parsed["agent_dispatches"].sort(key=lambda d: (d["agent_name"], d["metadata"]))
        return flatten({"status": status, "type": media, "body": parsed}, label)


@contextlib.asynccontextmanager
async def twirp_client(sut: ServerUnderTest) -> AsyncIterator[Twirp]:
    async with httpx.AsyncClient(timeout=PATIENCE) as client:
        yield Twirp(sut, client)


async def room_lifecycle(sut: ServerUnderTest) -> Observation:
    """CreateRoom (twice), ListRooms, UpdateRoomMetadata, ListParticipants, DeleteRoom."""
    name = fresh("room")
    obs: Observation = {}
    async with twirp_client(sut) as t:
        create = {"name": name, "metadata": "m0"}
        first = await t.call("CreateRoom", create, token=sut.creator())
        obs |= flatten({"status": first[0], "body": first[2]}, "create")
        again = await t.call("CreateRoom", {**create, "metadata": "other"}, token=sut.creator())
        obs["create_again.status"] = again[0]
        obs["create_again.same_sid"] = again[2]["sid"] == first[2]["sid"]
        obs["create_again.metadata"] = again[2]["metadata"]
        obs |= await t.observe(
            "list", "ListRooms", {"names": [name, fresh("missing")]}, token=sut.creator()
        )
        obs |= await t.observe(
            "update_metadata",
            "UpdateRoomMetadata",
            {"room": name, "metadata": "m1"},
            token=sut.admin(name),
        )
        obs |= await t.observe(
            "participants", "ListParticipants", {"room": name}, token=sut.admin(name)
        )
        obs |= await t.observe(
            "dispatches",
            "ListDispatch",
            {"room": name},
            token=sut.admin(name),
            service="AgentDispatchService",
        )
        obs |= await t.observe("delete", "DeleteRoom", {"room": name}, token=sut.creator())
        obs |= await t.observe("list_after", "ListRooms", {"names": [name]}, token=sut.creator())
    return obs


async def room_with_options(sut: ServerUnderTest) -> Observation:
    """CreateRoom with its own timeouts, limits and agent dispatches; the protobuf encoding."""
    name = fresh("opts")
    obs: Observation = {}
    async with twirp_client(sut) as t:
        req = room_pb.CreateRoomRequest(
            name=name,
            empty_timeout=7,
            departure_timeout=3,
            max_participants=4,
            metadata="meta",
            agents=[lkapi.RoomAgentDispatch(agent_name="nobody", metadata="dm")],
        )
        status, media, raw = await t.call(
            "CreateRoom", req.SerializeToString(), token=sut.creator(), content_type=PROTOBUF
        )
        obs |= flatten({"status": status, "type": media}, "create")
        obs |= flatten(proto_fields(models.Room.FromString(raw)), "create.proto")
        obs |= await t.observe(
            "dispatches",
            "ListDispatch",
            {"room": name},
            token=sut.admin(name),
            service="AgentDispatchService",
        )
        obs |= await t.observe("delete", "DeleteRoom", {"room": name}, token=sut.creator())
    return obs


async def missing_things(sut: ServerUnderTest) -> Observation:
    """Every method on a room, participant or dispatch that does not exist."""
    room = fresh("there")
    gone = fresh("gone")
    admin_gone = sut.admin(gone)
    calls: list[tuple[str, str, dict[str, Any], str, str]] = [
        ("delete_room", "DeleteRoom", {"room": gone}, sut.creator(), "RoomService"),
        ("update_metadata", "UpdateRoomMetadata", {"room": gone, "metadata": "x"}, admin_gone, "RoomService"),
        ("list_participants", "ListParticipants", {"room": gone}, admin_gone, "RoomService"),
        ("get_participant_no_room", "GetParticipant", {"room": gone, "identity": "x"}, admin_gone, "RoomService"),
        ("get_participant", "GetParticipant", {"room": room, "identity": "x"}, sut.admin(room), "RoomService"),
        ("remove_participant", "RemoveParticipant", {"room": room, "identity": "x"}, sut.admin(room), "RoomService"),
        ("update_participant", "UpdateParticipant", {"room": room, "identity": "x", "metadata": "m"}, sut.admin(room), "RoomService"),
        ("send_data_no_room", "SendData", {"room": gone, "data": "aGk="}, admin_gone, "RoomService"),
        ("send_data", "SendData", {"room": room, "data": "aGk="}, sut.admin(room), "RoomService"),
        ("send_data_bad_nonce", "SendData", {"room": room, "data": "aGk=", "nonce": "AAE="}, sut.admin(room), "RoomService"),
        ("list_dispatch_no_room", "ListDispatch", {"room": gone}, admin_gone, "AgentDispatchService"),
        ("delete_dispatch", "DeleteDispatch", {"room": room, "dispatch_id": "AD_nothere"}, sut.admin(room), "AgentDispatchService"),
        ("delete_dispatch_no_room", "DeleteDispatch", {"room": gone, "dispatch_id": "AD_nothere"}, admin_gone, "AgentDispatchService"),
    ]  # fmt: skip
    obs: Observation = {}
    async with twirp_client(sut) as t:
        await t.call("CreateRoom", {"name": room}, token=sut.creator())

        async def one(
            label: str, method: str, body: dict[str, Any], token: str, service: str
        ) -> None:
            start = time.monotonic()
            obs.update(await t.observe(label, method, body, token=token, service=service))
            # the real server routes some of these to the room's node and gives up
            # after its RPC timeout: a client sees a slow answer, not a quick one
            obs[f"{label}.answered_at_once"] = time.monotonic() - start < 1.5

        async with trio.open_nursery() as nursery:
            for call in calls:
                nursery.start_soon(one, *call)
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def bad_grants(sut: ServerUnderTest) -> Observation:
    """Tokens that verify but do not grant what the method needs (and no token at all)."""
    room = fresh("grants")
    g = lkapi.VideoGrants
    cases: list[tuple[str, str, dict[str, Any], str | None, str]] = [
        ("create_no_token", "CreateRoom", {"name": room}, None, "RoomService"),
        ("create_list_only", "CreateRoom", {"name": room}, sut.token(g(room_list=True)), "RoomService"),
        ("create_no_grants", "CreateRoom", {"name": room}, sut.token(), "RoomService"),
        ("list_create_only", "ListRooms", {}, sut.token(g(room_create=True)), "RoomService"),
        ("delete_list_only", "DeleteRoom", {"room": room}, sut.token(g(room_list=True)), "RoomService"),
        ("participants_other_room", "ListParticipants", {"room": room}, sut.admin("another"), "RoomService"),
        ("participants_join_only", "ListParticipants", {"room": room}, sut.token(g(room_join=True, room=room), identity="p"), "RoomService"),
        ("participants_agent_token", "ListParticipants", {"room": room}, worker_token(api_key=sut.api_key, api_secret=sut.api_secret), "RoomService"),
        ("dispatch_create_only", "CreateDispatch", {"room": room, "agent_name": "a"}, sut.token(g(room_create=True)), "AgentDispatchService"),
        ("dispatch_other_room", "ListDispatch", {"room": room}, sut.admin("another"), "AgentDispatchService"),
        ("dispatch_no_token", "DeleteDispatch", {"room": room, "dispatch_id": "AD_x"}, None, "AgentDispatchService"),
    ]  # fmt: skip
    obs: Observation = {}
    async with twirp_client(sut) as t:
        for label, method, body, token, service in cases:
            obs |= await t.observe(label, method, body, token=token, service=service)
        # none of them did anything
        obs |= await t.observe("list_after", "ListRooms", {"names": [room]}, token=sut.creator())
    return obs


async def bad_tokens(sut: ServerUnderTest) -> Observation:
    """Authorization headers and tokens that LiveKit's middleware refuses before routing."""
    room_list = lkapi.VideoGrants(room_list=True)
    now = datetime.datetime.now(datetime.UTC)
    headers: list[tuple[str, dict[str, str]]] = [
        ("basic", {"Authorization": "Basic ZGV2a2V5OnNlY3JldA=="}),
        ("bearer_alone", {"Authorization": "Bearer"}),
        ("garbage", {"Authorization": "Bearer not-a-jwt"}),
        ("wrong_key", {"Authorization": "Bearer " + sut.token(room_list, key="otherkey")}),
        ("wrong_secret", {"Authorization": "Bearer " + sut.token(room_list, secret="x" * 40)}),
        ("expired", {"Authorization": "Bearer " + sut.token(room_list, ttl=datetime.timedelta(seconds=-60))}),
        ("not_yet_valid", {"Authorization": "Bearer " + sut.token(room_list, nbf=now + datetime.timedelta(hours=1))}),
    ]  # fmt: skip
    obs: Observation = {}
    async with twirp_client(sut) as t:
        for label, hdrs in headers:
            obs |= await t.observe(label, "ListRooms", {}, token=None, headers=hdrs)
        # the token may also come as a query parameter
        tok = sut.token(room_list)
        obs |= await t.observe(
            "query_token", "ListRooms", {}, token=None,
            path=f"/twirp/livekit.RoomService/ListRooms?access_token={tok}",
        )  # fmt: skip
    return obs


async def malformed_requests(sut: ServerUnderTest) -> Observation:
    """Bodies, content types, methods and routes Twirp refuses."""
    tok = sut.creator()
    room = fresh("malformed")
    cases: list[tuple[str, str, dict[str, Any] | bytes, dict[str, Any]]] = [
        ("bad_json", "CreateRoom", b"{not json", {}),
        ("bad_protobuf", "CreateRoom", b"\xff\xff\xff", {"content_type": PROTOBUF}),
        ("json_wrong_type", "CreateRoom", {"name": 5}, {}),
        ("json_unknown_field", "ListRooms", {"names": [room], "bogus": 1}, {}),
        ("text_plain", "CreateRoom", {"name": room}, {"content_type": "text/plain"}),
        ("no_content_type", "CreateRoom", {"name": room}, {"content_type": ""}),
        ("json_charset", "ListRooms", {"names": [room]}, {"content_type": "application/json; charset=utf-8"}),
        ("get", "ListRooms", {}, {"http_method": "GET"}),
        ("unknown_method", "Nope", {}, {}),
        ("unknown_service", "ListRooms", {}, {"service": "NopeService"}),
        ("wrong_prefix", "ListRooms", {}, {"path": "/rpc/livekit.RoomService/ListRooms"}),
        ("wrong_package", "ListRooms", {}, {"path": "/twirp/other.RoomService/ListRooms"}),
    ]  # fmt: skip
    obs: Observation = {}
    async with twirp_client(sut) as t:
        for label, method, body, kw in cases:
            obs |= await t.observe(label, method, body, token=tok, **kw)
        obs |= await t.observe("list_after", "ListRooms", {"names": [room]}, token=tok)
    return obs


async def empty_and_odd_names(sut: ServerUnderTest) -> Observation:
    """CreateRoom and CreateDispatch with names LiveKit has rules for."""
    obs: Observation = {}
    room = fresh("odd")
    async with twirp_client(sut) as t:
        status, _, body = await t.call("CreateRoom", {"name": ""}, token=sut.creator())
        obs["create_empty.status"] = status
        obs["create_empty.code"] = body.get("code") if status != 200 else None
        obs["create_empty.name"] = body.get("name") if status == 200 else None
        obs |= await t.observe(
            "dispatch_bad_deployment",
            "CreateDispatch",
            {"room": room, "agent_name": "a", "deployment": "has space"},
            token=sut.admin(room),
            service="AgentDispatchService",
        )
        obs |= await t.observe(
            "dispatch_empty_room",
            "CreateDispatch",
            {"room": "", "agent_name": "a"},
            token=sut.admin(""),
            service="AgentDispatchService",
        )
        obs |= await t.observe(
            "create_long_name", "CreateRoom", {"name": "n" * 257}, token=sut.creator()
        )
        # 256 bytes (128 two-byte characters) is still allowed
        longest = await t.call("CreateRoom", {"name": "é" * 128}, token=sut.creator())
        obs["create_longest_name.status"] = longest[0]
        obs |= await t.observe(
            "participant_long_name", "UpdateParticipant",
            {"room": room, "identity": "x", "name": "n" * 257}, token=sut.creator(),
        )  # fmt: skip
        # no default limit on metadata
        obs |= await t.observe(
            "big_metadata", "CreateDispatch",
            {"room": room, "agent_name": "a", "metadata": "m" * 100_000},
            token=sut.admin(room), service="AgentDispatchService",
        )  # fmt: skip
        obs |= await t.observe("list_after", "ListRooms", {"names": [room]}, token=sut.creator())
        for name in ("é" * 128, room):
            await t.call("DeleteRoom", {"room": name}, token=sut.creator())
        if status == 200:
            await t.call("DeleteRoom", {"room": ""}, token=sut.creator())
    return obs


async def dispatch_lifecycle(sut: ServerUnderTest) -> Observation:
    """CreateDispatch (room made on the fly), ListDispatch by id, DeleteDispatch; no worker."""
    room = fresh("dispatch")
    obs: Observation = {}
    svc = "AgentDispatchService"
    async with twirp_client(sut) as t:
        status, _, created = await t.call(
            "CreateDispatch",
            {"room": room, "agent_name": fresh("agent"), "metadata": "md",
             "attributes": {"k": "v"}},
            token=sut.admin(room),
            service=svc,
        )  # fmt: skip
        obs |= flatten({"status": status, "body": created}, "create")
        obs |= await t.observe("rooms", "ListRooms", {"names": [room]}, token=sut.creator())
        listed = await t.call("ListDispatch", {"room": room}, token=sut.admin(room), service=svc)
        # the room's own (empty agent_name) dispatch and ours, in no particular order
        obs["list.status"] = listed[0]
        obs["list.agent_names"] = sorted(
            d["agent_name"] == created["agent_name"] for d in listed[2]["agent_dispatches"]
        )
        obs |= await t.observe(
            "list_by_id", "ListDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        obs |= await t.observe(
            "delete", "DeleteDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        obs |= await t.observe(
            "list_by_id_after", "ListDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        obs |= await t.observe(
            "delete_again", "DeleteDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        # a retry with the same request id (the official clients send one per call)
        retry_headers = {"X-Livekit-Request-Id": f"req-{secrets.token_hex(8)}"}
        ids = []
        for _ in range(2):
            _, _, made = await t.call(
                "CreateDispatch", {"room": room, "agent_name": "again"},
                token=sut.admin(room), service=svc, headers=retry_headers,
            )  # fmt: skip
            ids.append(made["id"])
        obs["retry.same_id"] = ids[0] == ids[1]
        listed = await t.call("ListDispatch", {"room": room}, token=sut.admin(room), service=svc)
        obs["retry.dispatches"] = sum(
            d["agent_name"] == "again" for d in listed[2]["agent_dispatches"]
        )
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


# --- the worker protocol ----------------------------------------------------------------


def frame_fields(frame: agent.ServerMessage) -> dict[str, Any]:
    return proto_fields(frame)


def token_claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def _frame(worker: ScriptedWorker) -> tuple[protocol.Event, agent.ServerMessage]:
    with trio.fail_after(PATIENCE):
        return await worker.receive_frame()


async def _no_frame(worker: ScriptedWorker, seconds: float) -> str | None:
    """None if nothing arrives for ``seconds``; else the kind of what came."""
    with trio.move_on_after(seconds):
        _, frame = await worker.receive_frame()
        return str(frame.WhichOneof("message"))
    return None


def _worker_token(sut: ServerUnderTest) -> str:
    return worker_token(api_key=sut.api_key, api_secret=sut.api_secret)


async def worker_registration(sut: ServerUnderTest) -> Observation:
    """Register, Registered, Ping/Pong, and the upgrade refused for bad credentials."""
    obs: Observation = {}
    name = fresh("agent")
    async with open_worker(sut.url, token=_worker_token(sut), register=False) as worker:
        await worker.send(protocol.Register(agent_name=name, version="9.9.9"))
        _, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "registered")
        await worker.send(protocol.Ping(timestamp=1234))
        _, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "pong")
        obs["pong.echoes_timestamp"] = frame.pong.last_timestamp == 1234
    refusals: list[tuple[str, dict[str, str]]] = [
        ("no_token", {}),
        ("no_agent_grant", {"Authorization": "Bearer " + sut.creator()}),
        ("wrong_key", {"Authorization": "Bearer " + worker_token(api_key="otherkey", api_secret=sut.api_secret)}),
        ("wrong_secret", {"Authorization": "Bearer " + worker_token(api_key=sut.api_key, api_secret="y" * 40)}),
    ]  # fmt: skip
    for label, headers in refusals:
        try:
            async with open_worker(sut.url, headers=headers, register=False):
                obs[f"{label}.refused"] = False
        except HandshakeRejected as exc:
            obs[f"{label}.status"] = exc.status
            obs[f"{label}.body"] = scrub(exc.body.strip())
    return obs


async def _create_room(t: Twirp, name: str, **fields: Any) -> None:
    """A room that outlives the scenario's waits (the agent never joins it)."""
    status, _, body = await t.call(
        "CreateRoom", {"name": name, "empty_timeout": 60, **fields}, token=t.sut.creator()
    )
    assert status == 200, body


async def _dispatch(t: Twirp, room: str, agent_name: str) -> dict[str, Any]:
    _, _, listed = await t.call(
        "ListDispatch", {"room": room}, token=t.sut.admin(room), service="AgentDispatchService"
    )
    return next(d for d in listed["agent_dispatches"] if d["agent_name"] == agent_name)


async def _dispatch_with_job(t: Twirp, room: str, agent_name: str) -> tuple[int, dict[str, Any]]:
    """``(jobs listed at once, the dispatch once its job is listed)``.

    The real server lists a job under its dispatch only when its internal job
    request returns, seconds after the worker got the assignment.
    """
    at_once = len((await _dispatch(t, room, agent_name))["state"]["jobs"])
    with trio.fail_after(PATIENCE):
        while True:
            d = await _dispatch(t, room, agent_name)
            if d["state"]["jobs"]:
                return at_once, d
            await trio.sleep(0.25)


async def worker_room_job(sut: ServerUnderTest) -> Observation:
    """A room created with an agent dispatch: the frames the worker receives, to DeleteRoom."""
    obs: Observation = {}
    name, room = fresh("agent"), fresh("jobroom")
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        await _create_room(t, room, agents=[{"agent_name": name, "metadata": "job-meta"}])
        offer, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "offer")
        assert isinstance(offer, protocol.AvailabilityRequest)
        await worker.send(
            accept(offer, identity="agent-x", name="Agent X", metadata="pm",
                   attributes={"a": "1"})
        )  # fmt: skip
        _, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "assignment")
        claims = token_claims(frame.assignment.token)
        obs |= flatten(claims, "assignment.claims")
        job_id = frame.assignment.job.id
        obs["assignment.same_job"] = job_id == offer.job.id

        obs["jobs_listed_at_once"], d = await _dispatch_with_job(t, room, name)
        obs |= flatten(d, "dispatch_assigned")
        await worker.send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_RUNNING))
        await worker.send(
            protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.5, job_count=1)
        )
        await trio.sleep(0.5)
        obs |= flatten(await _dispatch(t, room, name), "dispatch_running")
        obs |= await t.observe("delete_room", "DeleteRoom", {"room": room}, token=sut.creator())
        kind = await _no_frame(worker, 3.0)
        obs["after_delete_room"] = kind
    return obs


async def worker_explicit_dispatch(sut: ServerUnderTest) -> Observation:
    """CreateDispatch to a worker, a job status report, DeleteDispatch, then DeleteRoom."""
    obs: Observation = {}
    name, room = fresh("agent"), fresh("explicit")
    svc = "AgentDispatchService"
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        await _create_room(t, room)
        status, _, created = await t.call(
            "CreateDispatch",
            {"room": room, "agent_name": name, "metadata": "dm", "attributes": {"k": "v"}},
            token=sut.admin(room),
            service=svc,
        )
        assert status == 200, created
        offer, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "offer")
        obs["offer.names_the_dispatch"] = frame.availability.job.dispatch_id == created["id"]
        assert isinstance(offer, protocol.AvailabilityRequest)
        await worker.send(accept(offer))
        _, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "assignment")
        job_id = frame.assignment.job.id
        obs["jobs_listed_at_once"], _ = await _dispatch_with_job(t, room, name)
        await worker.send(
            protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_FAILED, error="boom")
        )
        await trio.sleep(0.5)
        obs |= await t.observe(
            "list", "ListDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        obs |= await t.observe(
            "delete", "DeleteDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        # a job that reported its end gets no JobTermination
        obs["after_delete_dispatch"] = await _no_frame(worker, 2.0)
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def worker_termination(sut: ServerUnderTest) -> Observation:
    """DeleteDispatch while the job runs: JobTermination, and what ListDispatch says after."""
    obs: Observation = {}
    name, room = fresh("agent"), fresh("terminate")
    svc = "AgentDispatchService"
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        await _create_room(t, room)
        _, _, created = await t.call(
            "CreateDispatch", {"room": room, "agent_name": name},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        offer, _ = await _frame(worker)
        assert isinstance(offer, protocol.AvailabilityRequest)
        await worker.send(accept(offer))
        await _frame(worker)
        await worker.send(protocol.UpdateJobStatus(job_id=offer.job.id, status=agent.JS_RUNNING))
        obs["jobs_listed_at_once"], _ = await _dispatch_with_job(t, room, name)
        obs |= await t.observe(
            "delete", "DeleteDispatch", {"room": room, "dispatch_id": created["id"]},
            token=sut.admin(room), service=svc,
        )  # fmt: skip
        _, frame = await _frame(worker)
        obs |= flatten(frame_fields(frame), "termination")
        obs["termination.same_job"] = frame.termination.job_id == offer.job.id
        obs |= await t.observe(
            "list_after", "ListDispatch", {"room": room}, token=sut.admin(room), service=svc
        )
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def worker_declines(sut: ServerUnderTest) -> Observation:
    """The only worker declines (and, for a second job, declines with terminate)."""
    obs: Observation = {}
    name = fresh("agent")
    svc = "AgentDispatchService"
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        for label, terminate in (("decline", False), ("terminate", True)):
            room = fresh(label)
            await t.call(
                "CreateDispatch", {"room": room, "agent_name": name},
                token=sut.admin(room), service=svc,
            )  # fmt: skip
            offer, _ = await _frame(worker)
            assert isinstance(offer, protocol.AvailabilityRequest)
            await worker.send(decline(offer, terminate=terminate))
            obs[f"{label}.then"] = await _no_frame(worker, 2.0)
            obs |= await t.observe(
                f"{label}.list", "ListDispatch", {"room": room}, token=sut.admin(room),
                service=svc,
            )  # fmt: skip
            await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = PATIENCE) -> bool:
    """Poll ``check`` (a server answer: there is no event to wait for) for up to ``seconds``."""
    with trio.move_on_after(seconds):
        while True:
            if await check():
                return True
            await trio.sleep(0.1)
    return False


async def _participants(t: Twirp, room: str) -> list[str]:
    status, _, body = await t.call("ListParticipants", {"room": room}, token=t.sut.admin(room))
    assert status == 200, body
    return sorted(p["identity"] for p in body["participants"])


async def _running_job(
    t: Twirp, worker: ScriptedWorker, room: str, name: str
) -> tuple[str, protocol.JobAssignment]:
    """Dispatch ``name`` to ``room``, accept, report it running; ``(dispatch id, assignment)``."""
    svc = "AgentDispatchService"
    await _create_room(t, room)
    _, _, created = await t.call(
        "CreateDispatch", {"room": room, "agent_name": name}, token=t.sut.admin(room), service=svc
    )
    offer, _ = await _frame(worker)
    assert isinstance(offer, protocol.AvailabilityRequest), offer
    await worker.send(accept(offer))
    assignment, _ = await _frame(worker)
    assert isinstance(assignment, protocol.JobAssignment), assignment
    await worker.send(protocol.UpdateJobStatus(job_id=offer.job.id, status=agent.JS_RUNNING))
    await _dispatch_with_job(t, room, name)
    return created["id"], assignment


async def agent_removed_after_delete_dispatch(sut: ServerUnderTest) -> Observation:
    """DeleteDispatch while the job's agent is in the room: JobTermination, then removal.

    The agent participant joins with the token of its JobAssignment and does
    not leave on its own; the server gives it a few seconds, then removes it.
    """
    obs: Observation = {}
    name, room = fresh("agent"), fresh("evict")
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        dispatch_id, assignment = await _running_job(t, worker, room, name)
        identity = assignment.job.state.participant_identity
        async with sut.join(assignment.token):

            async def agent_in() -> bool:
                return identity in await _participants(t, room)

            assert await _until(agent_in)
            _, _, listed = await t.call("ListParticipants", {"room": room}, token=sut.admin(room))
            agent_info = listed["participants"][0]
            obs["agent.kind"] = agent_info["kind"]
            obs["agent.permission.agent"] = agent_info["permission"]["agent"]
            obs |= flatten(agent_info["attributes"], "agent.attributes")
            await t.call(
                "DeleteDispatch", {"room": room, "dispatch_id": dispatch_id},
                token=sut.admin(room), service="AgentDispatchService",
            )  # fmt: skip
            _, frame = await _frame(worker)
            obs |= flatten(frame_fields(frame), "termination")
            obs["agent_listed_right_after"] = identity in await _participants(t, room)
            start = trio.current_time()

            async def agent_out() -> bool:
                return not await agent_in()

            obs["agent_removed_in_time"] = await _until(agent_out, 3 + 4.0)
            obs["agent_had_a_grace_period"] = trio.current_time() - start > 1.5
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def migrated_job(sut: ServerUnderTest) -> Observation:
    """A worker reconnects and sends MigrateJob for its running job; then DeleteDispatch."""
    obs: Observation = {}
    name, room = fresh("agent"), fresh("migrate")
    async with twirp_client(sut) as t:
        async with open_worker(sut.url, token=_worker_token(sut), agent_name=name) as first:
            dispatch_id, assignment = await _running_job(t, first, room, name)
        async with open_worker(sut.url, token=_worker_token(sut), agent_name=name) as second:
            await second.send(protocol.MigrateJob(job_ids=[assignment.job.id]))
            await trio.sleep(0.5)
            await t.call(
                "DeleteDispatch", {"room": room, "dispatch_id": dispatch_id},
                token=sut.admin(room), service="AgentDispatchService",
            )  # fmt: skip
            obs["new_connection_gets"] = await _no_frame(second, 3.0)
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def participant_view(sut: ServerUnderTest) -> Observation:
    """RoomService on a joined participant: list, get, update, remove.

    On the real server the participant is signal-only (no WebRTC), so it stays
    ``JOINED`` instead of ``ACTIVE``, has no client protocol and no region:
    those fields are left out, they say how the test connects, not how the
    servers differ.
    """
    obs: Observation = {}
    room = fresh("people")
    # how the test connects, not how the servers differ; "version" counts internal
    # updates (only its growth is compared)
    connection_fields = (
        "state", "client_protocol", "region", "joined_at", "joined_at_ms", "version",
    )  # fmt: skip

    async def count() -> int:
        _, _, rooms = await t.call("ListRooms", {"names": [room]}, token=sut.creator())
        return int(rooms["rooms"][0]["num_participants"])

    async with twirp_client(sut) as t:
        await _create_room(t, room)
        async with sut.participant(room, "alice"):

            async def alice_in() -> bool:
                return "alice" in await _participants(t, room)

            assert await _until(alice_in)
            # counted at once?  (the real server refreshes the count at most every
            # 5 s, and this is well within 5 s of the room's creation)
            obs["room.counts_alice_at_once"] = await count() == 1

            async def counted() -> bool:
                return await count() == 1

            obs["room.counts_alice_within_8s"] = await _until(counted, 8.0)
            status, _, got = await t.call(
                "GetParticipant", {"room": room, "identity": "alice"}, token=sut.admin(room)
            )
            version = got["version"]
            for f in connection_fields:
                got.pop(f, None)
            obs |= flatten({"status": status, "body": got}, "get")
            status, _, updated = await t.call(
                "UpdateParticipant",
                {"room": room, "identity": "alice", "metadata": "md", "name": "Alice",
                 "attributes": {"a": "1", "b": "2"}},
                token=sut.admin(room),
            )  # fmt: skip
            obs["update.status"] = status
            obs |= flatten(
                {k: updated.get(k) for k in ("metadata", "name", "attributes")}, "update"
            )
            obs["update.version_grew"] = updated["version"] > version
            _, _, again = await t.call(
                "UpdateParticipant", {"room": room, "identity": "alice", "attributes": {"a": ""}},
                token=sut.admin(room),
            )  # fmt: skip
            obs |= flatten({k: again.get(k) for k in ("metadata", "name", "attributes")}, "again")
            obs |= await t.observe(
                "send_data", "SendData", {"room": room, "data": "aGk=", "topic": "t"},
                token=sut.admin(room),
            )  # fmt: skip
            obs |= await t.observe(
                "remove", "RemoveParticipant", {"room": room, "identity": "alice"},
                token=sut.admin(room),
            )  # fmt: skip
            obs["after_remove"] = await _participants(t, room)
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def participant_job(sut: ServerUnderTest) -> Observation:
    """A JT_PARTICIPANT worker: a participant joins, the worker is offered a job for it."""
    obs: Observation = {}
    name, room = fresh("agent"), fresh("pjob")
    async with (
        twirp_client(sut) as t,
        open_worker(
            sut.url, token=_worker_token(sut), agent_name=name, job_type=agent.JT_PARTICIPANT
        ) as worker,
    ):
        await _create_room(t, room, agents=[{"agent_name": name, "metadata": "pm"}])
        obs["offer_before_anyone_joined"] = await _no_frame(worker, 1.0)
        async with sut.participant(room, "alice"):
            offer, frame = await _frame(worker)
            assert isinstance(offer, protocol.AvailabilityRequest), offer
            job = frame_fields(frame)["availability"]["job"]
            participant = job.pop("participant")
            # the room as the real server last refreshed it (at most every 5 s): its
            # participant count is tested in participant_view
            job["room"].pop("num_participants", None)
            obs |= flatten(job, "offer.job")
            obs["offer.participant.identity"] = participant["identity"]
            obs["offer.participant.kind"] = participant.get("kind", "STANDARD")
            await worker.send(decline(offer, terminate=True))
        await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


async def _after_sending(worker: ScriptedWorker, data: bytes | str) -> dict[str, Any]:
    """Send raw ``data``; what comes back within 3 s: a message, a close, or nothing."""
    await worker.send_raw(data)
    with trio.move_on_after(3.0):
        try:
            raw = await worker.ws.get_message()
        except ConnectionClosed as exc:
            return {"closed": True, "code": int(exc.code) if exc.code is not None else None}
        if isinstance(raw, str):
            return {"text": json.loads(raw)}
        return {"binary": proto_fields(agent.ServerMessage.FromString(raw))}
    return {"nothing": True}


async def worker_protocol_errors(sut: ServerUnderTest) -> Observation:
    """What a worker sees after sending something wrong, or JSON instead of protobuf."""
    obs: Observation = {}
    token = _worker_token(sut)
    register = agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name=fresh("a")))
    before_register: list[tuple[str, bytes | str]] = [
        ("garbage", b"\xff\xff\xff"),
        ("empty", b""),
        ("json_register", json_format.MessageToJson(register)),
    ]
    for label, data in before_register:
        async with open_worker(sut.url, token=token, register=False) as worker:
            obs |= flatten(await _after_sending(worker, data), label)
    after_register: list[tuple[str, agent.WorkerMessage]] = [
        ("register_again", register),
        (
            "answer_unknown_job",
            agent.WorkerMessage(
                availability=agent.AvailabilityResponse(
                    job_id="AJ_neveroffered", available=True, participant_identity="x"
                )
            ),
        ),
        (
            "status_of_unknown_job",
            agent.WorkerMessage(
                update_job=agent.UpdateJobStatus(job_id="AJ_neveroffered", status=agent.JS_SUCCESS)
            ),
        ),
    ]
    for label, msg in after_register:
        async with open_worker(sut.url, token=token, agent_name=fresh("a")) as worker:
            obs |= flatten(await _after_sending(worker, msg.SerializeToString()), label)
            if not obs.get(f"{label}.closed"):
                # still usable?
                ping = agent.WorkerMessage(ping=agent.WorkerPing(timestamp=77))
                obs |= flatten(
                    await _after_sending(worker, ping.SerializeToString()), f"{label}.then"
                )
    return obs


async def worker_full(sut: ServerUnderTest) -> Observation:
    """A worker that says it is full (or fully loaded) is offered nothing; available again, it is."""
    obs: Observation = {}
    name = fresh("agent")
    svc = "AgentDispatchService"
    async with (
        twirp_client(sut) as t,
        open_worker(sut.url, token=_worker_token(sut), agent_name=name) as worker,
    ):
        states = [
            ("full", protocol.UpdateWorkerStatus(status=agent.WS_FULL, load=0.2, job_count=1)),
            ("loaded", protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=1.0)),
            ("available", protocol.UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.3)),
        ]
        for label, status in states:
            await worker.send(status)
            await trio.sleep(0.3)
            room = fresh(label)
            await t.call(
                "CreateDispatch", {"room": room, "agent_name": name},
                token=sut.admin(room), service=svc,
            )  # fmt: skip
            got = await _no_frame(worker, 2.0)
            obs[f"{label}.offered"] = got
            await t.call("DeleteRoom", {"room": room}, token=sut.creator())
    return obs


# --- room close timing ------------------------------------------------------------------


async def _listed(t: Twirp, room: str) -> bool:
    status, _, body = await t.call("ListRooms", {"names": [room]}, token=t.sut.creator())
    assert status == 200, body
    return any(r["name"] == room for r in body["rooms"])


async def _gone_within(t: Twirp, room: str, seconds: float) -> float | None:
    """Seconds until ``room`` is no longer listed (polled), or None if it stays."""
    start = trio.current_time()
    while trio.current_time() - start < seconds:
        if not await _listed(t, room):
            return trio.current_time() - start
        await trio.sleep(0.2)
    return None


async def empty_room_closes(sut: ServerUnderTest) -> Observation:
    """A room created by CreateRoom and never joined closes after its empty timeout.

    Two rooms: one with the server's empty timeout, one created with a shorter
    one of its own.  The server's timers work in whole seconds (and, on the real
    server, a 1 s sweep), so the bounds are loose: listed at first, gone after
    the timeout plus a margin, and the shorter one first.
    """
    obs: Observation = {}
    default, short = fresh("empty"), fresh("short")
    async with twirp_client(sut) as t:
        await t.call("CreateRoom", {"name": default}, token=sut.creator())
        await t.call("CreateRoom", {"name": short, "empty_timeout": 2}, token=sut.creator())
        obs["listed_at_once"] = [await _listed(t, default), await _listed(t, short)]
        margin = 4.0
        gone_short = await _gone_within(t, short, 2 + margin)
        obs["short_gone_in_time"] = gone_short is not None
        obs["default_still_listed_when_short_gone"] = await _listed(t, default)
        gone = await _gone_within(t, default, sut.empty_timeout + margin)
        obs["default_gone_in_time"] = gone is not None
    return obs


async def agent_alone_does_not_keep_a_room(sut: ServerUnderTest) -> Observation:
    """An agent participant is "dependent": alone, it does not keep the room open."""
    obs: Observation = {}
    room = fresh("agentonly")
    grants = lkapi.VideoGrants(room_join=True, room=room, agent=True)
    token = (
        lkapi.AccessToken(sut.api_key, sut.api_secret)
        .with_identity("lonely-agent")
        .with_kind("agent")
        .with_grants(grants)
        .to_jwt()
    )
    async with twirp_client(sut) as t:
        await t.call("CreateRoom", {"name": room, "empty_timeout": 2}, token=sut.creator())
        async with sut.join(token):

            async def agent_in() -> bool:
                return "lonely-agent" in await _participants(t, room)

            obs["agent_listed"] = await _until(agent_in, 5.0)
            _, _, listed = await t.call("ListParticipants", {"room": room}, token=sut.admin(room))
            obs["agent_kind"] = [p["kind"] for p in listed["participants"]]

            async def room_gone() -> bool:
                return not await _listed(t, room)

            obs["room_closed_with_the_agent_in_it"] = await _until(room_gone, 2 + 4.0)
    return obs


async def departure_closes(sut: ServerUnderTest) -> Observation:
    """A participant keeps a room open past its empty timeout; its departure closes it.

    One room keeps the server's departure timeout (1 s), the other was created
    with 4 s: right after the participant leaves both are listed (give or take
    the 1 s one), the short one goes first, the long one within its timeout
    plus a margin.
    """
    obs: Observation = {}
    quick, slow = fresh("quick"), fresh("slow")
    async with twirp_client(sut) as t:
        await t.call("CreateRoom", {"name": quick, "empty_timeout": 1}, token=sut.creator())
        await t.call(
            "CreateRoom", {"name": slow, "empty_timeout": 1, "departure_timeout": 4},
            token=sut.creator(),
        )  # fmt: skip
        async with sut.participant(quick, "alice"), sut.participant(slow, "bob"):
            await trio.sleep(3.5)  # well past both rooms' empty timeout
            obs["listed_while_joined"] = [await _listed(t, quick), await _listed(t, slow)]
            _, _, listed = await t.call("ListParticipants", {"room": slow}, token=sut.admin(slow))
            obs["participants"] = [p["identity"] for p in listed["participants"]]
        obs["slow_listed_after_leaving"] = await _listed(t, slow)
        obs["quick_gone_in_time"] = await _gone_within(t, quick, 1 + 4.0) is not None
        obs["slow_listed_when_quick_gone"] = await _listed(t, slow)
        obs["slow_gone_in_time"] = await _gone_within(t, slow, 4 + 4.0) is not None
    return obs
