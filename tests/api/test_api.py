"""``trio_agents.api.LiveKitAPI``: the Twirp server API on trio.

Most tests reach an in-process stand-in through ``memory://`` under the
``autojump_clock`` fixture (no socket); one goes over real loopback, and
``httpx.MockTransport`` pins down what goes on the wire.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest
import trio
import trio.testing
from livekit import api as lkapi
from livekit.api.version import __version__ as LIVEKIT_API_VERSION
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from trio_agents import api
from trio_agents._errors import TrioAgentsError
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET, LocalServer, open_local_server

KEY, SECRET = DEV_API_KEY, DEV_API_SECRET


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as s:
        yield s


@pytest.fixture
async def lk(server: LocalServer) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(server.url, KEY, SECRET) as client:
        yield client


async def expect_error(call: Awaitable[object], code: str, status: int) -> lkapi.TwirpError:
    with pytest.raises(lkapi.TwirpError) as info:
        await call
    assert (info.value.code, info.value.status) == (code, status), str(info.value)
    return info.value


async def test_room_service_in_memory(
    autojump_clock: trio.testing.MockClock, server: LocalServer, lk: api.LiveKitAPI
) -> None:
    assert server.url.startswith("memory://")
    room = await lk.room.create_room(
        api.CreateRoomRequest(name="demo", metadata="m", empty_timeout=30, max_participants=3)
    )
    assert (room.name, room.metadata, room.empty_timeout, room.max_participants) == (
        "demo",
        "m",
        30,
        3,
    )
    assert (await lk.room.create_room(api.CreateRoomRequest(name="demo"))).sid == room.sid
    await lk.room.create_room(api.CreateRoomRequest(name="other"))
    listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["demo"]))
    assert [r.name for r in listed.rooms] == ["demo"]
    assert len((await lk.room.list_rooms(api.ListRoomsRequest())).rooms) == 2

    demo = server.rooms.get("demo")
    assert demo is not None
    inbox: list[object] = []
    server.rooms.join(demo, models.ParticipantInfo(identity="alice"), deliver=inbox.append)
    server.rooms.join(demo, models.ParticipantInfo(identity="bob"))

    people = await lk.room.list_participants(api.ListParticipantsRequest(room="demo"))
    assert sorted(p.identity for p in people.participants) == ["alice", "bob"]
    alice = await lk.room.get_participant(
        api.RoomParticipantIdentity(room="demo", identity="alice")
    )
    assert alice.sid == demo.participants["alice"].info.sid

    updated = await lk.room.update_participant(
        api.UpdateParticipantRequest(
            room="demo", identity="alice", metadata="md", attributes={"a": "1"}
        )
    )
    assert (updated.metadata, dict(updated.attributes)) == ("md", {"a": "1"})
    dropped = await lk.room.update_participant(
        api.UpdateParticipantRequest(room="demo", identity="alice", attributes={"a": ""})
    )
    assert dict(dropped.attributes) == {}  # an empty value deletes the key
    assert dropped.metadata == "md"  # an empty metadata leaves it alone

    assert (
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="demo", metadata="x"))
    ).metadata == "x"

    request = api.SendDataRequest(
        room="demo", data=b"hi", topic="t", destination_identities=["alice"]
    )
    await lk.room.send_data(request)
    assert request.nonce == b""  # the caller's message is left alone
    packets = [m for m in inbox if isinstance(m, models.DataPacket)]
    assert [(p.user.payload, p.user.topic, len(p.user.nonce)) for p in packets] == [
        (b"hi", "t", 16)
    ]

    await lk.room.remove_participant(api.RoomParticipantIdentity(room="demo", identity="alice"))
    assert "alice" not in demo.participants
    leaves = [
        m.leave for m in inbox if isinstance(m, rtc_pb.SignalResponse) and m.HasField("leave")
    ]
    assert [lv.reason for lv in leaves] == [models.PARTICIPANT_REMOVED]

    await lk.room.delete_room(api.DeleteRoomRequest(room="demo"))
    assert server.rooms.get("demo") is None

    # errors are the official client's TwirpError
    err = await expect_error(
        lk.room.delete_room(api.DeleteRoomRequest(room="demo")), "not_found", 404
    )
    assert err.message == "twirp error unknown: requested room does not exist"
    assert isinstance(err, api.TwirpError)
    await expect_error(
        lk.room.get_participant(api.RoomParticipantIdentity(room="other", identity="ghost")),
        "not_found",
        404,
    )
    await expect_error(
        lk.room.remove_participant(api.RoomParticipantIdentity(room="other", identity="ghost")),
        "not_found",
        404,
    )


async def test_agent_dispatch_in_memory(
    autojump_clock: trio.testing.MockClock, server: LocalServer, lk: api.LiveKitAPI
) -> None:
    d = await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="x", room="fresh", metadata="md")
    )
    assert (d.agent_name, d.room, d.metadata) == ("x", "fresh", "md")
    listed = await lk.agent_dispatch.list_dispatch("fresh")
    assert sorted(x.agent_name for x in listed) == ["", "x"]  # auto-created room: default too
    got = await lk.agent_dispatch.get_dispatch(d.id, "fresh")
    assert got is not None
    assert got.id == d.id
    assert await lk.agent_dispatch.get_dispatch("AD_missing", "fresh") is None

    deleted = await lk.agent_dispatch.delete_dispatch(d.id, "fresh")
    assert deleted.id == d.id
    assert deleted.state.deleted_at > 0
    assert [x.agent_name for x in await lk.agent_dispatch.list_dispatch("fresh")] == [""]

    err = await expect_error(lk.agent_dispatch.delete_dispatch(d.id, "fresh"), "not_found", 404)
    assert err.message == "twirp error unknown: dispatch ID not found"
    # as LiveKit v1.13: no room to route the call to
    await expect_error(lk.agent_dispatch.list_dispatch("nowhere"), "unavailable", 503)

    room = await lk.room.create_room(
        api.CreateRoomRequest(name="named", agents=[api.RoomAgentDispatch(agent_name="y")])
    )
    assert room.name == "named"
    assert [x.agent_name for x in await lk.agent_dispatch.list_dispatch("named")] == ["y"]


async def test_over_loopback() -> None:
    async with open_local_server(port=0) as server, api.LiveKitAPI(server.url, KEY, SECRET) as lk:
        assert server.url.startswith("ws://127.0.0.1:")
        room = await lk.room.create_room(api.CreateRoomRequest(name="tcp"))
        assert room.sid == server.rooms.get("tcp").info.sid  # type: ignore[union-attr]
        d = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="a", room="tcp")
        )
        assert d.id in server.rooms.get("tcp").dispatches  # type: ignore[union-attr]
        await expect_error(
            lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="nope", metadata="x")),
            "not_found",
            404,
        )
    # a wrong secret: LiveKit's plain-text 401, whose text we keep as the message
    async with (
        open_local_server(port=0) as server,
        api.LiveKitAPI(server.url, KEY, "wrong-secret") as bad,
    ):
        err = await expect_error(bad.room.list_rooms(api.ListRoomsRequest()), "unknown", 401)
        assert err.message.startswith("invalid token: ")


async def test_requests_match_the_official_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"", headers={"content-type": "application/protobuf"})

    transport = httpx.MockTransport(handler)
    async with api.LiveKitAPI("wss://example.test/base/", KEY, SECRET, transport=transport) as lk:
        await lk.room.list_participants(api.ListParticipantsRequest(room="r1"))
        await lk.room.create_room(api.CreateRoomRequest(name="r2"))
        await lk.room.list_rooms(api.ListRoomsRequest())
        await lk.agent_dispatch.delete_dispatch("AD_1", "r3")

    paths = [str(r.url) for r in seen]
    assert paths == [
        "https://example.test/base/twirp/livekit.RoomService/ListParticipants",
        "https://example.test/base/twirp/livekit.RoomService/CreateRoom",
        "https://example.test/base/twirp/livekit.RoomService/ListRooms",
        "https://example.test/base/twirp/livekit.AgentDispatchService/DeleteDispatch",
    ]
    verifier = lkapi.TokenVerifier(KEY, SECRET)
    grants = []
    for r in seen:
        assert r.method == "POST"
        assert r.headers["content-type"] == "application/protobuf"
        assert r.headers["user-agent"].startswith(
            f"livekit-server-sdk-python/{LIVEKIT_API_VERSION}"
        )
        assert uuid.UUID(r.headers["x-livekit-request-id"]).version == 4
        auth = r.headers["authorization"]
        assert auth.startswith("Bearer ")
        video = verifier.verify(auth[len("Bearer ") :]).video
        assert video is not None
        grants.append((video.room_admin, video.room, video.room_create, video.room_list))
    assert grants == [
        (True, "r1", None, None),
        (None, "", True, None),
        (None, "", None, True),
        (True, "r3", None, None),
    ]
    assert api.ListParticipantsRequest.FromString(seen[0].content).room == "r1"
    assert len({r.headers["x-livekit-request-id"] for r in seen}) == 4


async def test_error_bodies() -> None:
    answers = [
        httpx.Response(404, json={"code": "not_found", "msg": "gone", "meta": {"k": "v"}}),
        httpx.Response(401, text="invalid API key"),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, content=b"\x0a\xff"),  # an undecodable success
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    async with api.LiveKitAPI(
        "http://h", KEY, SECRET, transport=httpx.MockTransport(handler)
    ) as lk:
        call = lk.room.list_rooms(api.ListRoomsRequest())
        err = await expect_error(call, "not_found", 404)
        assert (err.message, err.metadata) == ("gone", {"k": "v"})
        err = await expect_error(lk.room.list_rooms(api.ListRoomsRequest()), "unknown", 401)
        assert err.message == "invalid API key"
        err = await expect_error(lk.room.list_rooms(api.ListRoomsRequest()), "unknown", 502)
        assert "bad gateway" in err.message
        err = await expect_error(lk.room.list_rooms(api.ListRoomsRequest()), "malformed", 200)
        assert "livekit.ListRoomsResponse" in err.message


async def test_unreachable_servers_raise_api_connection_error(
    server: LocalServer,
) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with api.LiveKitAPI(f"ws://127.0.0.1:{port}", KEY, SECRET, timeout=5) as lk:
        with pytest.raises(api.APIConnectionError, match="cannot reach") as info:
            await lk.room.list_rooms(api.ListRoomsRequest())
    assert isinstance(info.value, TrioAgentsError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)

    async with api.LiveKitAPI("memory://no-such-server", KEY, SECRET) as lk:
        with pytest.raises(api.APIConnectionError, match="memory://no-such-server"):
            await lk.room.list_rooms(api.ListRoomsRequest())

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with api.LiveKitAPI(
        "http://h", KEY, SECRET, transport=httpx.MockTransport(timeout), timeout=2.5
    ) as lk:
        with pytest.raises(api.APIConnectionError, match=r"within 2\.5 s"):
            await lk.room.list_rooms(api.ListRoomsRequest())


async def test_memory_server_that_stopped(autojump_clock: trio.testing.MockClock) -> None:
    async with open_local_server() as server:
        lk = api.LiveKitAPI(server.url, KEY, SECRET)
        await lk.room.create_room(api.CreateRoomRequest(name="r"))
    with pytest.raises(api.APIConnectionError, match="no in-process server"):
        await lk.room.list_rooms(api.ListRoomsRequest())
    await lk.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await lk.room.list_rooms(api.ListRoomsRequest())
    await lk.aclose()  # idempotent


async def test_settings_from_environment(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock, server: LocalServer
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", server.url)
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    async with api.LiveKitAPI() as lk:
        assert lk.url == server.url
        await lk.room.create_room(api.CreateRoomRequest(name="env"))
    assert server.rooms.get("env") is not None
    # an explicit argument wins over the environment
    assert api.LiveKitAPI("http://explicit:7880").url == "http://explicit:7880"

    for name, env in [
        ("url", "LIVEKIT_URL"),
        ("api_key", "LIVEKIT_API_KEY"),
        ("api_secret", "LIVEKIT_API_SECRET"),
    ]:
        with monkeypatch.context() as m:
            m.delenv(env)
            with pytest.raises(ValueError, match=rf"^{name} is required.*{env}"):
                api.LiveKitAPI()


def test_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(ValueError, match="url must be"):
        api.LiveKitAPI("ftp://host", KEY, SECRET)
    with pytest.raises(ValueError, match="url has no host"):
        api.LiveKitAPI("ws://", KEY, SECRET)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        api.LiveKitAPI("ws://h", KEY, SECRET, timeout=0)
    with pytest.raises(TypeError, match="timeout must be a number"):
        api.LiveKitAPI("ws://h", KEY, SECRET, timeout="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"transport must be an httpx\.AsyncBaseTransport"):
        api.LiveKitAPI("ws://h", KEY, SECRET, transport=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key is required"):
        api.LiveKitAPI("ws://h", "", SECRET)
