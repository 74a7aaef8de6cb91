"""A signal-only participant for the real server: it joins a room without WebRTC.

It opens ``/rtc`` with a room-join token, reads the ``JoinResponse``, pings as
the server asks, and leaves with ``LeaveRequest``.  It never negotiates a peer
connection, so no media flows; the server still counts it as a participant of
the room, which is all the room-closing rules look at.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import trio
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from trio_agents._errors import ConnectionClosed
from trio_agents._transport import open_websocket


@contextlib.asynccontextmanager
async def signal_participant(url: str, token: str) -> AsyncIterator[rtc_pb.JoinResponse]:
    """In the room for the block (its ``JoinResponse``); leaves on exit."""
    query = urlencode(
        {"access_token": token, "protocol": "16", "sdk": "python", "auto_subscribe": "0"}
    )
    async with open_websocket(url, "/rtc", query=query) as ws:
        with trio.fail_after(15):
            raw = await ws.get_message()
        assert isinstance(raw, bytes), raw
        first = rtc_pb.SignalResponse.FromString(raw)
        assert first.WhichOneof("message") == "join", first

        async def ping() -> None:
            interval = max(1, first.join.ping_interval)
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await trio.sleep(interval)
                    now = int(time.time() * 1000)
                    req = rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=now))
                    await ws.send_message(req.SerializeToString())

        async def drain() -> None:
            # until the server closes the link (removed, room closed)
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.get_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            nursery.start_soon(drain)
            try:
                yield first.join
            finally:
                leave = rtc_pb.SignalRequest(
                    leave=rtc_pb.LeaveRequest(
                        reason=models.CLIENT_INITIATED, action=rtc_pb.LeaveRequest.DISCONNECT
                    )
                )
                with trio.move_on_after(2, shield=True), contextlib.suppress(ConnectionClosed):
                    await ws.send_message(leave.SerializeToString())
                nursery.cancel_scope.cancel()
