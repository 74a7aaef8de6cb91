"""The trio-native Room over the simulated backend, against the stand-in server."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import pytest
import trio
import trio.testing
from livekit import api as lkapi
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from trio_agents import rtc
from trio_agents._errors import ConnectionClosed
from trio_agents._transport import (
    MessageStream,
    open_websocket,
    register_memory_endpoint,
    unregister_memory_endpoint,
)
from trio_agents.rtc._simwire import encode_signal
from trio_agents.testing import LocalServer, open_local_server
from trio_agents.testing import Room as ServerRoom
from trio_agents.testing._asgi import Receive, Scope, Send, WebSocket, open_memory_websocket

# Every test but the TCP one runs in memory under an autojump clock (virtual
# time): pytest-trio uses a clock only when it is a test argument.
Clock = trio.testing.MockClock

ROOM = "demo"
E = TypeVar("E", bound=rtc.RoomEvent)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as srv:
        yield srv


class Recorder:
    """Collects a room's events through ``on`` handlers."""

    def __init__(self, room: rtc.Room, *names: str) -> None:
        self.events: list[rtc.RoomEvent] = []
        for name in names:
            room.on(name, self.events.append)

    def of(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]


def server_room(server: LocalServer) -> ServerRoom:
    room = server.rooms.get(ROOM)
    assert room is not None, f"no room {ROOM!r} on the server"
    return room


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (state spread over rooms and server; free in virtual time)."""
    with trio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def start_room(
    nursery: trio.Nursery,
    server: LocalServer,
    identity: str,
    *,
    kind: str = "agent",
    auto_subscribe: bool = True,
    room: rtc.Room | None = None,
    can_update_own_metadata: bool = True,
) -> rtc.Room:
    room = room or rtc.Room()
    token = server.participant_token(
        identity, ROOM, kind=kind, can_update_own_metadata=can_update_own_metadata
    )
    await nursery.start(room.run, server.url, token, rtc.RoomOptions(auto_subscribe=auto_subscribe))
    return room


async def test_join_sees_present_participants(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant(
            "alice", room=ROOM, name="Alice", metadata="m-a", attributes={"role": "caller"}
        ) as alice,
        trio.open_nursery() as nursery,
    ):
        server.rooms.update_metadata(server_room(server), "room-meta")
        room = await start_room(nursery, server, "agent-1")

        assert room.isconnected()
        assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        assert room.name == ROOM
        assert room.sid.startswith("RM_")
        assert room.metadata == "room-meta"
        local = room.local_participant
        assert local.identity == "agent-1"
        assert local.sid.startswith("PA_")
        assert local.kind == rtc.ParticipantKind.AGENT
        assert set(room.remote_participants) == {"alice"}
        a = room.remote_participants["alice"]
        assert (a.name, a.metadata, a.attributes) == ("Alice", "m-a", {"role": "caller"})
        assert a.kind == rtc.ParticipantKind.STANDARD
        assert a.sid == server_room(server).participants["alice"].info.sid
        # alice, already there, sees the agent arrive
        agent = await alice.room.wait_for_participant(identity="agent-1")
        assert agent.kind == rtc.ParticipantKind.AGENT
        assert await room.wait_for_participant(kind=rtc.ParticipantKind.STANDARD) is a
        nursery.cancel_scope.cancel()


async def test_participant_events_via_on_and_events(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with trio.open_nursery() as nursery:
        room = rtc.Room()
        rec = Recorder(room, "participant_connected", "participant_disconnected")
        subscription = room.events(rtc.ParticipantConnected, rtc.ParticipantDisconnected)
        await start_room(nursery, server, "agent-1", room=room)
        async with server.simulated_participant("bob", room=ROOM, kind="sip"):
            await room.wait_for_participant(identity="bob")
        await wait_until(lambda: len(rec.events) == 2)

        connected, disconnected = rec.events
        assert isinstance(connected, rtc.ParticipantConnected)
        assert connected.participant.identity == "bob"
        assert connected.participant.kind == rtc.ParticipantKind.SIP
        assert isinstance(disconnected, rtc.ParticipantDisconnected)
        assert disconnected.participant is connected.participant
        assert disconnected.participant.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
        assert "bob" not in room.remote_participants

        async with subscription as events:
            got = [await events.__anext__(), await events.__anext__()]
        assert got == rec.events
        assert subscription.dropped == 0
        assert rtc.ParticipantConnected.name == "participant_connected"
        nursery.cancel_scope.cancel()


async def test_events_iteration_ends_with_disconnected(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with trio.open_nursery() as nursery:
        room = await start_room(nursery, server, "agent-1")
        seen: list[rtc.RoomEvent] = []

        async def consume() -> None:
            async with room.events() as events:
                async for ev in events:
                    seen.append(ev)

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        async with server.simulated_participant("bob", room=ROOM):
            pass
        server.rooms.delete(ROOM)
    assert [type(e) for e in seen] == [
        rtc.ParticipantConnected,
        rtc.ParticipantDisconnected,
        rtc.Disconnected,
    ]
    # a subscription made after the end yields nothing
    assert [e async for e in room.events()] == []


async def test_events_overflow_drops_oldest(server: LocalServer, autojump_clock: Clock) -> None:
    async with trio.open_nursery() as nursery:
        room = await start_room(nursery, server, "agent-1")
        sub = room.events(rtc.ParticipantAttributesChanged, max_buffer=2)
        async with server.simulated_participant("alice", room=ROOM) as alice:
            for i in range(5):
                await alice.set_attributes({"n": str(i)})
            await wait_until(lambda: room.remote_participants["alice"].attributes == {"n": "4"})
        assert sub.dropped == 3
        kept = [await sub.__anext__(), await sub.__anext__()]
        assert [e.changed_attributes for e in kept] == [{"n": "3"}, {"n": "4"}]
        await sub.aclose()
        nursery.cancel_scope.cancel()


async def test_attributes_and_metadata_changes(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant("alice", room=ROOM, attributes={"keep": "1"}) as alice,
        trio.open_nursery() as nursery,
    ):
        room = rtc.Room()
        rec = Recorder(
            room,
            "participant_attributes_changed",
            "participant_metadata_changed",
            "participant_name_changed",
            "room_metadata_changed",
        )
        await start_room(nursery, server, "agent-1", room=room)
        a = room.remote_participants["alice"]

        # from the participant itself (request/response, then broadcast)
        await alice.set_attributes({"mood": "happy"})
        await alice.set_metadata("meta-1")
        await alice.set_name("Alice")
        # the sender's own view is updated once the call returns
        assert alice.local_participant.attributes == {"keep": "1", "mood": "happy"}
        assert alice.local_participant.metadata == "meta-1"
        await wait_until(lambda: a.name == "Alice")
        # from the server side (RoomService-style), no Twirp involved
        srv_room = server_room(server)
        server.rooms.update_participant(
            srv_room, "alice", attributes={"mood": ""}, metadata="meta-2"
        )
        server.rooms.update_metadata(srv_room, "room-meta")
        await wait_until(lambda: room.metadata == "room-meta")

        assert a.attributes == {"keep": "1"}
        assert a.metadata == "meta-2"
        attr_events = rec.of(rtc.ParticipantAttributesChanged)
        assert [(e.participant, e.changed_attributes) for e in attr_events] == [
            (a, {"mood": "happy"}),
            (a, {"mood": ""}),
        ]
        meta_events = rec.of(rtc.ParticipantMetadataChanged)
        assert [(e.old, e.new) for e in meta_events] == [("", "meta-1"), ("meta-1", "meta-2")]
        assert [(e.old, e.new) for e in rec.of(rtc.ParticipantNameChanged)] == [("", "Alice")]
        assert rec.of(rtc.RoomMetadataChanged) == [rtc.RoomMetadataChanged("", "room-meta")]
        assert alice.room.metadata == "room-meta"

        # the local participant: its own change is broadcast to it as well
        await room.local_participant.set_attributes({"state": "listening"})
        assert room.local_participant.attributes == {"state": "listening"}
        local_events = [
            e
            for e in rec.of(rtc.ParticipantAttributesChanged)
            if e.participant is room.local_participant
        ]
        assert len(local_events) == 1
        agent = await alice.room.wait_for_participant(identity="agent-1")
        await wait_until(lambda: agent.attributes == {"state": "listening"})
        nursery.cancel_scope.cancel()


async def test_metadata_update_needs_permission(server: LocalServer, autojump_clock: Clock) -> None:
    async with trio.open_nursery() as nursery:
        room = await start_room(
            nursery, server, "viewer", kind="standard", can_update_own_metadata=False
        )
        with pytest.raises(rtc.RequestError) as info:
            await room.local_participant.set_attributes({"x": "1"})
        assert info.value.reason == "NOT_ALLOWED"
        assert room.local_participant.attributes == {}
        assert room.isconnected()
        nursery.cancel_scope.cancel()


async def test_text_with_topic_both_ways(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant("alice", room=ROOM) as alice,
        trio.open_nursery() as nursery,
    ):
        room = rtc.Room()
        rec = Recorder(room, "text_received", "data_received")
        await start_room(nursery, server, "agent-1", room=room)

        await alice.send_text("hello agent", topic="lk.chat")
        await wait_until(lambda: len(rec.events) == 1)
        (text,) = rec.events
        assert isinstance(text, rtc.TextReceived)
        assert (text.text, text.topic) == ("hello agent", "lk.chat")
        assert text.participant is room.remote_participants["alice"]

        await room.local_participant.send_text("hi alice", topic="lk.transcription")
        got = await alice.wait_for_text(topic="lk.transcription")
        assert got.text == "hi alice"
        assert got.participant is not None
        assert got.participant.identity == "agent-1"

        # several chunks, multi-byte characters split across chunk boundaries
        long_text = "é€😀" * 6000
        await room.local_participant.send_text(long_text, topic="long")
        got = await alice.wait_for_text(topic="long")
        assert got.text == long_text
        assert alice.data == []  # text is not binary data
        nursery.cancel_scope.cancel()


async def test_data_with_destination_identities(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant("alice", room=ROOM) as alice,
        server.simulated_participant("bob", room=ROOM) as bob,
        trio.open_nursery() as nursery,
    ):
        room = await start_room(nursery, server, "agent-1")

        await room.local_participant.publish_data(
            b"for bob", topic="t1", destination_identities=["bob"]
        )
        got = await bob.wait_for_data(topic="t1")
        assert got.data == b"for bob"
        assert got.participant is not None
        assert got.participant.identity == "agent-1"

        rec = Recorder(room, "data_received")
        await alice.publish_data(b"\x00\x01binary", topic="t2")
        await bob.wait_for_data(topic="t2")
        await wait_until(lambda: len(rec.events) == 1)
        (ev,) = rec.events
        assert isinstance(ev, rtc.DataReceived)
        assert (ev.data, ev.topic, ev.participant) == (
            b"\x00\x01binary",
            "t2",
            room.remote_participants["alice"],
        )
        # alice never got bob's private packet
        assert [d.topic for d in alice.data] == []
        assert [d.topic for d in bob.data] == ["t1", "t2"]
        nursery.cancel_scope.cancel()


def _rms(frames: list[rtc.AudioFrame]) -> float:
    samples = [s for f in frames for s in f.samples]
    return math.sqrt(sum(s * s for s in samples) / len(samples))


async def test_audio_reaches_audio_stream(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant("bob", room=ROOM) as bob,
        trio.open_nursery() as nursery,
    ):
        # a track present at join is subscribed too
        await bob.publish_audio(frames=1)
        room = rtc.Room()
        subscribed: list[rtc.TrackSubscribed] = []
        room.on("track_subscribed", subscribed.append)
        await start_room(nursery, server, "agent-1", room=room)
        await wait_until(lambda: len(subscribed) == 1)
        ev = subscribed[0]
        assert ev.participant.identity == "bob"
        assert ev.publication.subscribed
        assert ev.publication.track is ev.track
        assert ev.publication.kind == rtc.TrackKind.KIND_AUDIO
        assert ev.publication.source == rtc.TrackSource.SOURCE_MICROPHONE

        frames: list[rtc.AudioFrame] = []

        async def read() -> None:
            async with rtc.AudioStream(ev.track) as stream:
                async for fe in stream:
                    frames.append(fe.frame)

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await bob.publish_audio(frames=50, sample_rate=48000, frequency=440)
        assert trio.current_time() - start == pytest.approx(0.5, abs=0.02)  # real-time pacing
        await wait_until(lambda: len(frames) == 50)
        assert sum(f.samples_per_channel for f in frames) == 50 * 480
        assert {(f.sample_rate, f.num_channels) for f in frames} == {(48000, 1)}
        assert _rms(frames) == pytest.approx(0.5 * 32767 / math.sqrt(2), rel=0.02)

        # unpublishing ends the stream
        unpublished: list[rtc.RoomEvent] = []
        room.on("track_unsubscribed", unpublished.append)
        room.on("track_unpublished", unpublished.append)
        pub_sid = next(iter(bob.local_participant.track_publications))
        await bob.local_participant.unpublish_track(pub_sid)
        await wait_until(lambda: len(unpublished) == 2)
        assert [type(e) for e in unpublished] == [rtc.TrackUnsubscribed, rtc.TrackUnpublished]
        assert ev.track.ended
        assert room.remote_participants["bob"].track_publications == {}
        nursery.cancel_scope.cancel()


async def test_no_frames_until_subscribed(server: LocalServer, autojump_clock: Clock) -> None:
    async with (
        server.simulated_participant("bob", room=ROOM) as bob,
        trio.open_nursery() as nursery,
    ):
        room = rtc.Room()
        rec = Recorder(room, "track_published", "track_subscribed", "track_unsubscribed")
        await start_room(nursery, server, "agent-1", room=room, auto_subscribe=False)

        await bob.publish_audio(frames=20)
        (published,) = rec.events
        assert isinstance(published, rtc.TrackPublished)
        pub = published.publication
        assert not pub.subscribed
        assert pub.track is None
        assert rec.of(rtc.TrackSubscribed) == []

        pub.set_subscribed(True)
        await wait_until(lambda: pub.subscribed)
        (sub_ev,) = rec.of(rtc.TrackSubscribed)
        assert isinstance(sub_ev, rtc.TrackSubscribed)
        stream = rtc.AudioStream(sub_ev.track)
        await bob.publish_audio(frames=10)
        frames = []
        with trio.fail_after(2):
            for _ in range(10):
                frames.append((await stream.__anext__()).frame)
        assert sum(f.samples_per_channel for f in frames) == 10 * 480

        pub.set_subscribed(False)
        assert not pub.subscribed
        assert pub.track is None
        assert [type(e) for e in rec.events][-1] is rtc.TrackUnsubscribed
        with trio.fail_after(1):
            assert [e async for e in stream] == []  # ended, nothing more
        nursery.cancel_scope.cancel()


async def test_wait_for_outbound_covers_queued_audio(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with server.simulated_participant("bob", room=ROOM), trio.open_nursery() as nursery:
        room = await start_room(nursery, server, "agent-1")
        source = rtc.AudioSource(16000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("speech", source)
        pub = await room.local_participant.publish_track(track)
        assert pub.sid.startswith("TR_")
        assert track.sid == pub.sid
        start = trio.current_time()
        for _ in range(80):  # 0.8 s of audio: fits the 1 s queue, so no waiting here
            await source.capture_frame(rtc.AudioFrame.create(16000, 1, 160))
        assert trio.current_time() == start
        assert source.queued_duration == pytest.approx(0.8)
        await room.local_participant.wait_for_outbound()
        assert trio.current_time() - start == pytest.approx(0.79, abs=0.011)
        nursery.cancel_scope.cancel()


async def test_room_deleted_ends_run(server: LocalServer, autojump_clock: Clock) -> None:
    async with server.simulated_participant("alice", room=ROOM) as alice:
        room = rtc.Room()
        rec = Recorder(room, "disconnected")
        results: list[rtc.DisconnectReason] = []

        async def run(task_status: trio.TaskStatus[None]) -> None:
            token = server.participant_token("agent-1", ROOM, kind="agent")
            results.append(await room.run(server.url, token, task_status=task_status))

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            assert server.rooms.delete(ROOM)
        assert results == [rtc.DisconnectReason.ROOM_DELETED]
        assert rec.events == [rtc.Disconnected(rtc.DisconnectReason.ROOM_DELETED)]
        assert room.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED
        assert not room.isconnected()
        with pytest.raises(rtc.NotConnectedError):
            await room.local_participant.send_text("too late")
        assert await alice.room.wait_disconnected() == rtc.DisconnectReason.ROOM_DELETED


async def test_room_closes_after_departure_timeout(autojump_clock: Clock) -> None:
    async with open_local_server(departure_timeout=20) as server:
        room = rtc.Room()
        rec = Recorder(room, "participant_disconnected", "disconnected")
        async with trio.open_nursery() as nursery:
            await start_room(nursery, server, "agent-1", room=room)
            async with server.simulated_participant("alice", room=ROOM):
                await room.wait_for_participant(identity="alice")
            left_at = trio.current_time()
            reason = await room.wait_disconnected()
            closed_after = trio.current_time() - left_at
        assert reason == rtc.DisconnectReason.ROOM_CLOSED
        assert 20 <= closed_after < 21
        assert [type(e) for e in rec.events] == [rtc.ParticipantDisconnected, rtc.Disconnected]
        assert rec.events[-1] == rtc.Disconnected(rtc.DisconnectReason.ROOM_CLOSED)
        assert server.rooms.get(ROOM) is None


async def test_bad_token_and_url_raise_connect_error(
    server: LocalServer, autojump_clock: Clock
) -> None:
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as info:
        await room.run(server.url, "not-a-jwt")
    assert info.value.status == 401
    assert "invalid token" in str(info.value)

    good = server.participant_token("agent-1", ROOM)
    wrong = (
        lkapi.AccessToken(server.api_key, "another-secret")
        .with_identity("x")
        .with_grants(lkapi.VideoGrants(room_join=True, room=ROOM))
        .to_jwt()
    )
    with pytest.raises(rtc.ConnectError, match="Signature verification failed"):
        await room.run(server.url, wrong)
    no_join = (
        lkapi.AccessToken(server.api_key, server.api_secret)
        .with_identity("x")
        .with_grants(lkapi.VideoGrants(room_create=True))
        .to_jwt()
    )
    with pytest.raises(rtc.ConnectError, match="roomJoin"):
        await room.run(server.url, no_join)
    with pytest.raises(rtc.ConnectError, match="memory://nowhere"):
        await room.run("memory://nowhere", good)
    assert server.rooms.get(ROOM) is None  # nothing was created by the failures

    # a failed connect leaves the room usable
    async with trio.open_nursery() as nursery:
        await nursery.start(room.run, server.url, good)
        assert room.isconnected()
        with pytest.raises(RuntimeError):
            await room.run(server.url, good)
        nursery.cancel_scope.cancel()


async def test_cancelling_run_closes_socket_and_removes_participant(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with server.simulated_participant("alice", room=ROOM) as alice:
        room = rtc.Room()
        rec = Recorder(room, "disconnected")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await start_room(nursery, server, "agent-1", room=room)
                srv_room = server_room(server)
                assert "agent-1" in srv_room.participants
                scope.cancel()
        assert rec.events == [rtc.Disconnected(rtc.DisconnectReason.CLIENT_INITIATED)]
        await wait_until(lambda: "agent-1" not in srv_room.participants)
        assert srv_room.participants["alice"].info.identity == "alice"
        await wait_until(lambda: "agent-1" not in alice.room.remote_participants)
        # the server side of the socket is gone too
        await wait_until(lambda: server.signal._conns[srv_room].keys() == {"alice"})


async def test_disconnect_leaves_and_returns(server: LocalServer, autojump_clock: Clock) -> None:
    async with server.simulated_participant("alice", room=ROOM) as alice:
        results: list[rtc.DisconnectReason] = []
        room = rtc.Room()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            token = server.participant_token("agent-1", ROOM, kind="agent")
            results.append(await room.run(server.url, token, task_status=task_status))

        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            gone = await alice.room.wait_for_participant(identity="agent-1")
            await room.disconnect()
            assert results == [rtc.DisconnectReason.CLIENT_INITIATED]
            await room.disconnect()  # idempotent
        await wait_until(lambda: "agent-1" not in alice.room.remote_participants)
        assert gone.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED


async def test_duplicate_identity_kicks_the_old_connection(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with (
        server.simulated_participant("alice", room=ROOM) as alice,
        trio.open_nursery() as nursery,
    ):
        first = await start_room(nursery, server, "agent-1")
        first_sid = first.local_participant.sid
        second = await start_room(nursery, server, "agent-1")
        assert await first.wait_disconnected() == rtc.DisconnectReason.DUPLICATE_IDENTITY
        assert second.isconnected()
        srv_room = server_room(server)
        assert (
            srv_room.participants["agent-1"].info.sid == second.local_participant.sid != first_sid
        )
        await wait_until(
            lambda: (
                "agent-1" in alice.room.remote_participants
                and alice.room.remote_participants["agent-1"].sid == second.local_participant.sid
            )
        )
        nursery.cancel_scope.cancel()


async def test_handler_errors_are_logged_not_raised(
    server: LocalServer, caplog: pytest.LogCaptureFixture, autojump_clock: Clock
) -> None:
    async with trio.open_nursery() as nursery:
        room = rtc.Room()
        calls: list[str] = []

        @room.on("participant_connected")
        def boom(ev: rtc.ParticipantConnected) -> None:
            raise RuntimeError("handler bug")

        room.on("participant_connected", lambda ev: calls.append(ev.participant.identity))
        with pytest.raises(ValueError, match="unknown room event"):
            room.on("participant_joined")

        async def not_sync(ev: object) -> None: ...

        with pytest.raises(TypeError, match="sync"):
            room.on("participant_connected", not_sync)
        await start_room(nursery, server, "agent-1", room=room)
        with caplog.at_level(logging.ERROR, logger="trio_agents.rtc"):
            async with server.simulated_participant("bob", room=ROOM):
                await room.wait_for_participant(identity="bob")
        assert calls == ["bob"]
        assert room.isconnected()
        assert "handler bug" in caplog.text
        nursery.cancel_scope.cancel()


async def test_malformed_client_message_closes_that_connection(
    server: LocalServer, autojump_clock: Clock
) -> None:
    async with trio.open_nursery() as nursery:
        room = await start_room(nursery, server, "agent-1")
        token = server.participant_token("mallory", ROOM)
        async with open_websocket(
            server.url, "/rtc/sim", headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.get_message()  # the JoinResponse
            await room.wait_for_participant(identity="mallory")
            await ws.send_message(b"\x07garbage")
            await wait_until(lambda: "mallory" not in room.remote_participants)
        assert room.isconnected()
        nursery.cancel_scope.cancel()


async def test_over_tcp_loopback() -> None:
    # real sockets and hypercorn: real time (the autojump clock only jumps when idle)
    async with open_local_server(port=0) as server:
        url = "sim+" + server.url
        assert url.startswith("sim+ws://127.0.0.1:")
        alice_token = server.participant_token("alice", ROOM, attributes={"k": "v"})
        agent_token = server.participant_token("agent-1", ROOM, kind="agent")
        with trio.fail_after(10):
            async with (
                rtc.connect_room(url, alice_token) as alice,
                rtc.connect_room(url, agent_token) as agent,
            ):
                a = agent.remote_participants["alice"]
                assert a.attributes == {"k": "v"}
                got: list[rtc.TextReceived] = []
                agent.on("text_received", got.append)
                await alice.local_participant.send_text("over tcp", topic="chat")
                source = rtc.AudioSource(48000, 1)
                subscription = agent.events(rtc.TrackSubscribed)
                await alice.local_participant.publish_track(
                    rtc.LocalAudioTrack.create_audio_track("mic", source)
                )
                subscribed = [e async for e in _first(subscription)]
                stream = rtc.AudioStream(subscribed[0].track)
                for _ in range(5):
                    await source.capture_frame(rtc.AudioFrame.create(48000, 1, 480))
                frames = [(await stream.__anext__()).frame for _ in range(5)]
                assert sum(f.samples_per_channel for f in frames) == 2400
                await wait_until(lambda: len(got) == 1)
                assert (got[0].text, got[0].topic) == ("over tcp", "chat")
                await agent.disconnect()
                assert agent.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
                await wait_until(lambda: "agent-1" not in alice.remote_participants)


async def _first(sub: rtc.EventSubscription[E]) -> AsyncIterator[E]:
    async with sub:
        async for ev in sub:
            yield ev
            return


class FakeSignalServer:
    """A misbehaving ``/rtc/sim`` server, registered as ``memory://fake-signal``.

    ``mode`` picks the misbehaviour: "silent" (accepts, never answers),
    "no-pong" (joins, then ignores pings), "garbage" (joins, then sends junk).
    """

    def __init__(self, nursery: trio.Nursery, mode: str) -> None:
        self._nursery = nursery
        self.mode = mode
        self.closed = trio.Event()

    def open_memory_websocket(
        self, path: str, query: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[MessageStream]:
        return open_memory_websocket(self.app, self._nursery, path, query, headers)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        try:
            if self.mode != "silent":
                join = rtc_pb.JoinResponse(
                    room=models.Room(sid="RM_fake", name="fake"),
                    participant=models.ParticipantInfo(sid="PA_me", identity="me"),
                    ping_interval=5,
                    ping_timeout=15,
                )
                await ws.send_message(encode_signal(rtc_pb.SignalResponse(join=join)))
            if self.mode == "garbage":
                await ws.send_message(b"\x03\x05TR_x")
            while True:
                await ws.get_message()
        except ConnectionClosed:
            self.closed.set()


@asynccontextmanager
async def fake_signal_server(mode: str) -> AsyncIterator[FakeSignalServer]:
    async with trio.open_nursery() as nursery:
        fake = FakeSignalServer(nursery, mode)
        register_memory_endpoint("fake-signal", fake)
        try:
            yield fake
        finally:
            unregister_memory_endpoint("fake-signal")
            nursery.cancel_scope.cancel()


async def test_misbehaving_servers(autojump_clock: Clock) -> None:
    async with fake_signal_server("silent"):
        start = trio.current_time()
        with pytest.raises(rtc.ConnectError, match="no join answer"):
            await rtc.Room().run("memory://fake-signal", "t", rtc.RoomOptions(connect_timeout=3))
        assert trio.current_time() - start == pytest.approx(3)

    async with fake_signal_server("no-pong") as fake:
        room = rtc.Room()
        async with trio.open_nursery() as nursery:
            await nursery.start(room.run, "memory://fake-signal", "t")
            start = trio.current_time()
        assert room.disconnect_reason == rtc.DisconnectReason.SIGNAL_CLOSE
        assert 15 < trio.current_time() - start <= 20  # ping_timeout, checked each ping_interval
        with trio.fail_after(1):
            await fake.closed.wait()

    async with fake_signal_server("garbage") as fake:
        room = rtc.Room()
        async with trio.open_nursery() as nursery:
            await nursery.start(room.run, "memory://fake-signal", "t")
        assert room.disconnect_reason == rtc.DisconnectReason.STATE_MISMATCH
        with trio.fail_after(1):
            await fake.closed.wait()
