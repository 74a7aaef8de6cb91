"""A minimal ASGI layer for the stand-in server, and its in-memory transport.

The stand-in is one ASGI application.  Over TCP, hypercorn (trio worker)
serves it; in memory, ``MemoryWebSocket`` drives its websocket routes and
``httpx.ASGITransport`` its HTTP routes, so tests need no socket at all and
run under ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from urllib.parse import parse_qs

import attrs
import trio

from .._errors import ConnectionClosed, HandshakeRejected
from .._http import ASGIApp, Message, Receive, Scope, Send
from .._http import send_response as send_response
from .._job._logging import job_log_fields

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "WebSocket",
    "send_response",
]


@attrs.frozen
class Request:
    """The parts of an ASGI scope the handlers look at."""

    path: str
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return cls(path=scope["path"], headers=headers, query={k: v[0] for k, v in qs.items()})

    def bearer_token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.query.get("access_token")


class WebSocket:
    """Server side of one ASGI websocket, as a message stream."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.request = Request.from_scope(scope)
        self._receive = receive
        self._send = send
        self._closed = False

    async def accept(self) -> None:
        msg = await self._receive()
        if msg["type"] != "websocket.connect":
            raise ConnectionClosed("client went away before the handshake")
        await self._send({"type": "websocket.accept"})

    async def reject(self, status: int, body: str) -> None:
        """Refuse the upgrade with a plain-text HTTP response (as LiveKit does)."""
        msg = await self._receive()
        if msg["type"] != "websocket.connect":
            return
        data = body.encode()
        await self._send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await self._send({"type": "websocket.http.response.body", "body": data})
        self._closed = True

    async def send_message(self, data: bytes | str) -> None:
        if self._closed:
            raise ConnectionClosed("websocket is closed")
        key = "bytes" if isinstance(data, bytes) else "text"
        try:
            await self._send({"type": "websocket.send", key: data})
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._closed = True
            raise ConnectionClosed("peer went away") from exc

    async def get_message(self) -> bytes | str:
        if self._closed:
            raise ConnectionClosed("websocket is closed")
        msg = await self._receive()
        if msg["type"] == "websocket.disconnect":
            self._closed = True
            raise ConnectionClosed("peer closed the websocket", code=msg.get("code"))
        if msg.get("bytes") is not None:
            data: bytes | str = msg["bytes"]
        else:
            data = msg.get("text") or ""
        return data

    async def aclose(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code})


class _MemoryClientWebSocket:
    """Client side of an in-memory websocket to an ASGI app."""

    def __init__(
        self,
        to_server: trio.MemorySendChannel[Message],
        from_server: trio.MemoryReceiveChannel[Message],
    ) -> None:
        self._to_server = to_server
        self._from_server = from_server
        self._closed = False

    async def send_message(self, data: bytes | str) -> None:
        if self._closed:
            raise ConnectionClosed("websocket is closed")
        key = "bytes" if isinstance(data, bytes) else "text"
        try:
            await self._to_server.send({"type": "websocket.receive", key: data})
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._closed = True
            raise ConnectionClosed("server closed the websocket") from exc

    async def get_message(self) -> bytes | str:
        if self._closed:
            raise ConnectionClosed("websocket is closed")
        try:
            msg = await self._from_server.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            self._closed = True
            raise ConnectionClosed("server closed the websocket") from exc
        if msg["type"] == "websocket.close":
            self._closed = True
            raise ConnectionClosed("server closed the websocket", code=msg.get("code"))
        if msg.get("bytes") is not None:
            data: bytes | str = msg["bytes"]
        else:
            data = msg.get("text") or ""
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._to_server.send_nowait({"type": "websocket.disconnect", "code": 1000})
        await self._to_server.aclose()
        await self._from_server.aclose()


@contextlib.asynccontextmanager
async def open_memory_websocket(
    app: ASGIApp,
    nursery: trio.Nursery,
    path: str,
    query: str,
    headers: Mapping[str, str],
) -> AsyncIterator[_MemoryClientWebSocket]:
    """Run ``app``'s websocket route for ``path`` in ``nursery``; yield the client end."""
    to_server_send, to_server_recv = trio.open_memory_channel[Message](math.inf)
    to_client_send, to_client_recv = trio.open_memory_channel[Message](math.inf)
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("memory", 0),
        "server": ("memory", 0),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }
    to_server_send.send_nowait({"type": "websocket.connect"})

    async def receive() -> Message:
        try:
            return await to_server_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Message) -> None:
        try:
            to_client_send.send_nowait(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed("client went away") from exc

    async def run_app() -> None:
        # trio copies the spawning task's context: when a job opens this
        # websocket, the server's side must not log as part of that job
        job_log_fields.set(None)
        try:
            await app(scope, receive, send)
        finally:
            to_client_send.close()

    nursery.start_soon(run_app)
    # the handshake
    try:
        first = await to_client_recv.receive()
    except trio.EndOfChannel:
        raise HandshakeRejected(500, "server ended the websocket before answering") from None
    except BaseException:
        # cancelled while waiting: tell the server this client is gone
        to_server_send.close()
        raise
    if first["type"] == "websocket.http.response.start":
        body = b""
        async for msg in to_client_recv:
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        raise HandshakeRejected(first["status"], body.decode("utf-8", "replace"))
    if first["type"] == "websocket.close":
        raise HandshakeRejected(403, "websocket closed during the handshake")
    client = _MemoryClientWebSocket(to_server_send, to_client_recv)
    try:
        yield client
    finally:
        await client.aclose()


async def read_body(receive: Receive, *, limit: int) -> bytes:
    """Read an ASGI HTTP request body, refusing more than ``limit`` bytes."""
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionClosed("client went away")
        body += msg.get("body", b"")
        if len(body) > limit:
            raise ValueError(f"request body over {limit} bytes")
        if not msg.get("more_body"):
            return bytes(body)
