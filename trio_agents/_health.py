"""The worker's health server: ``GET /``, ``GET /worker`` and ``GET /metrics``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._http import Receive, Scope, Send, answer_lifespan, send_response
from ._metrics import CONTENT_TYPE


def health_app(
    status: Callable[[], tuple[bool, str]] | None,
    info: Callable[[], dict[str, Any]] | None,
    metrics: Callable[[], bytes] | None = None,
) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app: ``/`` answers 200 "OK" or 503 with the reason; ``/worker`` JSON;
    ``/metrics`` Prometheus' text format.  A route whose callable is None answers 404
    (a metrics-only server passes ``status=None, info=None``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed", "text/plain")
            return
        path = scope["path"]
        if path == "/" and status is not None:
            ok, reason = status()
            body = b"OK" if ok else reason.encode()
            await send_response(send, 200 if ok else 503, body, "text/plain; charset=utf-8")
        elif path == "/worker" and info is not None:
            body = json.dumps(info()).encode()
            await send_response(send, 200, body, "application/json")
        elif path == "/metrics" and metrics is not None:
            await send_response(send, 200, metrics(), CONTENT_TYPE)
        else:
            await send_response(send, 404, b"not found", "text/plain")

    return app
