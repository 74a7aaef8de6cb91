"""Twirp RoomService and AgentDispatchService (placeholder until implemented)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ._asgi import Request

if TYPE_CHECKING:
    from ._server import LocalServer


async def handle_twirp(
    server: LocalServer, method: str, request: Request, body: bytes
) -> tuple[int, bytes, str]:
    err = {"code": "bad_route", "msg": f"no handler for {request.path}", "meta": {}}
    return 404, json.dumps(err).encode(), "application/json"
