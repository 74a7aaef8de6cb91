"""Serving a small ASGI app over TCP with hypercorn's trio worker."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send a complete HTTP response."""
    hdrs = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol (nothing to start or stop)."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket; nothing is left open if that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_tcp(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    max_message_size: int = 2 * 1024 * 1024,
    websocket_ping_interval: float | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``started`` with the bound port.

    The socket is bound here, not by hypercorn, so that it is closed on every
    way out (hypercorn leaves a socket it failed to bind for the garbage
    collector) and is not inherited by child processes.

    Raises:
        OSError: the address cannot be bound (in use, bad host).
    """
    from hypercorn.config import Config, Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = max_message_size
    config.websocket_ping_interval = websocket_ping_interval
    config.accesslog = None
    config.errorlog = logging.getLogger("trio_agents.http")
    config.graceful_timeout = 1.0

    sock = _listening_socket(host, port, config.backlog)
    bound_port: int = sock.getsockname()[1]

    class _Started:
        def started(self, binds: list[str] | None = None) -> None:
            task_status.started(bound_port)

    try:
        await worker_serve(
            wrap_app(app, config.wsgi_max_body_size, None),  # type: ignore[arg-type]
            config,
            sockets=Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[]),
            task_status=_Started(),
        )
    finally:
        sock.close()
