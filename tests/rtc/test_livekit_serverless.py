"""The livekit backend without a LiveKit server: connect failures and cancellation.

Every server here listens on 127.0.0.1: a dead port, an HTTP server answering
401, and a "blackhole" that accepts connections and never answers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio

from trio_agents import rtc
from trio_agents.rtc._bridge import THREAD_NAME, open_asyncio_bridge

TOKEN = "not-a-real-token"


def no_bridge_thread() -> bool:
    return not any(t.name == THREAD_NAME for t in threading.enumerate())


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_dead_port_is_a_clean_connect_error(caplog: pytest.LogCaptureFixture) -> None:
    port = dead_port()
    room = rtc.Room()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            with pytest.raises(rtc.ConnectError) as info:
                await nursery.start(
                    room.run, f"ws://127.0.0.1:{port}", TOKEN, rtc.RoomOptions(connect_timeout=30)
                )
    assert "refused" in str(info.value).lower()
    assert not room.isconnected()
    assert no_bridge_thread()
    await trio.sleep(0.2)
    assert not [r for r in caplog.records if "Event loop is closed" in r.getMessage()]


@pytest.fixture
async def http_401() -> AsyncIterator[tuple[int, list[bytes]]]:
    requests: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
        requests.append(data.split(b"\r\n", 1)[0])
        body = b"invalid token: rejected by the test server"
        await stream.send_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
        port = listeners[0].socket.getsockname()[1]
        yield port, requests
        nursery.cancel_scope.cancel()


async def test_a_401_carries_the_servers_message(http_401: tuple[int, list[bytes]]) -> None:
    port, requests = http_401
    with trio.fail_after(60):
        with pytest.raises(rtc.ConnectError) as info:
            async with rtc.connect_room(f"ws://127.0.0.1:{port}", TOKEN):
                raise AssertionError("connected to a server that answers 401")
    assert "rejected by the test server" in str(info.value)
    assert "401" in str(info.value)
    assert requests
    assert all(r.startswith(b"GET /rtc") for r in requests)
    assert no_bridge_thread()


@pytest.fixture
async def blackhole() -> AsyncIterator[tuple[int, trio.CancelScope, list[int]]]:
    """A TCP server that accepts and never answers; cancel the scope to close it."""
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(1)
        async with stream:
            while await stream.receive_some(4096):
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            await trio.serve_listeners(handle, listeners)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield port, scope, accepted
        scope.cancel()


async def test_a_cancelled_connect_resumes_trio_at_once_and_is_reaped(
    blackhole: tuple[int, trio.CancelScope, list[int]],
) -> None:
    port, server_scope, accepted = blackhole
    order: list[str] = []
    async with open_asyncio_bridge() as bridge:
        room = rtc.Room()
        with trio.move_on_after(0.5) as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    room.run, f"ws://127.0.0.1:{port}", TOKEN, rtc.RoomOptions(connect_timeout=30)
                )
        assert scope.cancelled_caught
        order.append("trio resumed")
        # the SDK's connect goes on, abandoned (never cancelled)
        assert bridge.orphan_count == 1
        assert accepted
        # the blackhole goes away: the abandoned connect fails and is reaped at close
        server_scope.cancel()
    order.append("bridge closed")
    assert bridge.orphan_count == 0
    assert order == ["trio resumed", "bridge closed"]
    assert no_bridge_thread()


async def test_connect_timeout_is_a_connect_error(
    blackhole: tuple[int, trio.CancelScope, list[int]],
) -> None:
    port, server_scope, _ = blackhole
    async with open_asyncio_bridge() as bridge:
        with trio.fail_after(30):
            with pytest.raises(rtc.ConnectError, match=r"connect_timeout=0\.5"):
                async with rtc.connect_room(
                    f"ws://127.0.0.1:{port}", TOKEN, options=rtc.RoomOptions(connect_timeout=0.5)
                ):
                    pass
        assert bridge.orphan_count == 1
        server_scope.cancel()
    assert no_bridge_thread()


async def test_simulated_backend_refuses_e2ee() -> None:
    with pytest.raises(rtc.ConnectError, match="e2ee"):
        async with rtc.connect_room(
            "memory://nowhere", TOKEN, options=rtc.RoomOptions(e2ee=object())
        ):
            pass


async def test_no_event_loop_closed_noise_after_exit(
    caplog: pytest.LogCaptureFixture, http_401: tuple[int, list[bytes]]
) -> None:
    caplog.set_level(logging.DEBUG)
    port, _ = http_401
    for _ in range(2):
        with pytest.raises(rtc.ConnectError):
            async with rtc.connect_room(f"ws://127.0.0.1:{port}", TOKEN):
                pass
    await trio.sleep(0.5)
    assert not [r for r in caplog.records if "loop is closed" in r.getMessage().lower()]


async def test_rooms_without_an_open_bridge_each_own_a_private_one(
    http_401: tuple[int, list[bytes]],
) -> None:
    port, _ = http_401
    # no bridge is open: each failed connect used (and closed) its own
    for _ in range(2):
        with pytest.raises(rtc.ConnectError):
            async with rtc.connect_room(f"ws://127.0.0.1:{port}", TOKEN):
                pass
    with pytest.raises(RuntimeError, match="no asyncio bridge"):
        rtc.current_bridge()
    assert no_bridge_thread()
