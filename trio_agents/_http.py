"""Serving a small ASGI app over TCP with hypercorn's trio worker."""

from __future__ import annotations

import logging
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

    Raises:
        OSError: the address cannot be bound (in use, bad host).
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.websocket_max_message_size = max_message_size
    config.websocket_ping_interval = websocket_ping_interval
    config.accesslog = None
    config.errorlog = logging.getLogger("trio_agents.http")
    config.graceful_timeout = 1.0

    class _Started:
        def started(self, binds: list[str] | None = None) -> None:
            bound = (binds or [f"http://{host}:{port}"])[0]
            task_status.started(int(bound.rsplit(":", 1)[1]))

    await serve(app, config, task_status=_Started())  # type: ignore[arg-type]
