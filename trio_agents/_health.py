"""The worker's health server: ``GET /`` and ``GET /worker``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._http import Receive, Scope, Send, answer_lifespan, send_response


def health_app(
    status: Callable[[], tuple[bool, str]], info: Callable[[], dict[str, Any]]
) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app: ``/`` answers 200 "OK" or 503 with the reason; ``/worker`` JSON."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send_response(send, 405, b"method not allowed", "text/plain")
            return
        if scope["path"] == "/":
            ok, reason = status()
            body = b"OK" if ok else reason.encode()
            await send_response(send, 200 if ok else 503, body, "text/plain; charset=utf-8")
        elif scope["path"] == "/worker":
            body = json.dumps(info()).encode()
            await send_response(send, 200, body, "application/json")
        else:
            await send_response(send, 404, b"not found", "text/plain")

    return app
