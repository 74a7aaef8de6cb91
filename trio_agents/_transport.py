"""Client side of every websocket the library opens (``/agent``, room signal).

``open_websocket(url, headers=...)`` yields a ``MessageStream``.  Two
transports sit behind it:

* ``ws://`` / ``wss://`` (and ``http(s)://``, mapped like LiveKit's SDKs do):
  trio-websocket over TCP;
* ``memory://NAME``: an in-process ``LocalServer`` registered under NAME, so
  tests can run worker, server and jobs in one trio run under a mock clock.

trio-websocket's exceptions are mapped at this boundary to
``ConnectionClosed`` / ``HandshakeRejected`` / ``ConnectFailed``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Mapping
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import trio
import trio_websocket

from ._errors import ConnectFailed, ConnectionClosed, HandshakeRejected

#: LiveKit caps websocket messages at 2 MiB.
MAX_MESSAGE_SIZE = 2 * 1024 * 1024


class MessageStream(Protocol):
    """A message-framed, bidirectional stream (one websocket)."""

    async def send_message(self, data: bytes | str) -> None: ...

    async def get_message(self) -> bytes | str: ...

    async def aclose(self) -> None: ...


class MemoryEndpoint(Protocol):
    """What an in-process server registers under ``memory://NAME``."""

    def open_memory_websocket(
        self, path: str, query: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[MessageStream]: ...


_MEMORY_ENDPOINTS: dict[str, MemoryEndpoint] = {}


def register_memory_endpoint(name: str, endpoint: MemoryEndpoint) -> None:
    if name in _MEMORY_ENDPOINTS:
        raise ValueError(f"memory endpoint {name!r} already registered")
    _MEMORY_ENDPOINTS[name] = endpoint


def unregister_memory_endpoint(name: str) -> None:
    _MEMORY_ENDPOINTS.pop(name, None)


def memory_endpoint(name: str) -> MemoryEndpoint:
    try:
        return _MEMORY_ENDPOINTS[name]
    except KeyError:
        raise ConnectFailed(f"no in-process server is registered as memory://{name}") from None


def websocket_base_url(url: str) -> str:
    """Normalise a LiveKit URL to its websocket form (``http`` -> ``ws``)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss", "memory"):
        raise ValueError(f"url must be ws://, wss://, http(s):// or memory://, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))


def http_base_url(url: str) -> str:
    """Normalise a LiveKit URL to its HTTP form (``ws`` -> ``http``).

    A simulated-room URL (``sim+ws://``) names the same server, so its HTTP
    form is that server's.
    """
    parts = urlsplit(url)
    base_scheme = parts.scheme.removeprefix("sim+")
    scheme = {"ws": "http", "wss": "https"}.get(base_scheme, base_scheme)
    if scheme not in ("http", "https", "memory"):
        raise ValueError(f"url must be ws://, wss://, http(s):// or memory://, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class _TrioWebSocket:
    """trio-websocket connection with the library's exceptions."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send_message(self, data: bytes | str) -> None:
        try:
            await self._ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(
                str(exc.reason), code=exc.reason.code if exc.reason else None
            ) from exc

    async def get_message(self) -> bytes | str:
        try:
            msg: bytes | str = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(
                str(exc.reason), code=exc.reason.code if exc.reason else None
            ) from exc
        return msg

    async def aclose(self) -> None:
        await self._ws.aclose()


@contextlib.asynccontextmanager
async def open_websocket(
    url: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    connect_timeout: float = 10.0,
) -> AsyncIterator[MessageStream]:
    """Open a websocket to ``url`` + ``path``; closed when the block exits.

    Raises:
        ConnectFailed: refused, unreachable or no answer within ``connect_timeout``.
        HandshakeRejected: the server answered the upgrade with an HTTP error.
    """
    base = urlsplit(websocket_base_url(url))
    full_path = base.path + path
    hdrs = dict(headers or {})
    if base.scheme == "memory":
        endpoint = memory_endpoint(base.netloc)
        async with endpoint.open_memory_websocket(full_path, query, hdrs) as stream:
            yield stream
        return

    target = urlunsplit((base.scheme, base.netloc, full_path, query, ""))
    ws_cm = trio_websocket.open_websocket_url(
        target,
        extra_headers=[(k.encode(), v.encode()) for k, v in hdrs.items()],
        max_message_size=MAX_MESSAGE_SIZE,
        connect_timeout=connect_timeout,
        disconnect_timeout=2.0,
    )
    try:
        ws = await ws_cm.__aenter__()
    except trio_websocket.ConnectionRejected as exc:
        await _close_tcp_stream(_connection_in_traceback(exc))
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        raise HandshakeRejected(exc.status_code, body) from None
    except trio_websocket.ConnectionTimeout as exc:
        await _close_tcp_stream(_connection_in_traceback(exc))
        raise ConnectFailed(f"no answer from {target} within {connect_timeout} s") from None
    except (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as exc:
        await _close_tcp_stream(_connection_in_traceback(exc))
        raise ConnectFailed(f"cannot connect to {target}: {connect_error_cause(exc)}") from None
    try:
        yield _TrioWebSocket(ws)
    except BaseException as exc:
        if not await ws_cm.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await ws_cm.__aexit__(None, None, None)
    finally:
        await _close_tcp_stream(ws)


def connect_error_cause(exc: BaseException) -> str:
    """What actually failed (refused, DNS, TLS, ...), from the chain under ``exc``.

    trio-websocket reports a failed connect as a ``HandshakeError`` with no
    text; the cause is further down its context (an OSError, a group of them).
    """
    seen: set[int] = set()
    fallback = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fallback = fallback or str(current)
        if isinstance(current, BaseExceptionGroup):
            return "; ".join(dict.fromkeys(connect_error_cause(e) for e in current.exceptions))
        if isinstance(current, socket.gaierror):
            return f"DNS lookup failed ({current.strerror or current})"
        if isinstance(current, ssl.SSLError):
            return f"TLS failed ({current.reason or current})"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    return fallback or type(exc).__name__


# trio-websocket 0.12 leaves the client's TCP stream open when the server closes
# the websocket first (its aclose() then returns early) or refuses the handshake
# (the connection object is dropped); the socket leaks until garbage collection,
# with a ResourceWarning.  Close it ourselves.


async def _close_tcp_stream(conn: object) -> None:
    stream = getattr(conn, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        await trio.aclose_forcefully(stream)


def _connection_in_traceback(exc: BaseException) -> object | None:
    """The connection whose reader task raised ``exc``, if any."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, trio_websocket.WebSocketConnection):
            return candidate
    return None
