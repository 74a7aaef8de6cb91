"""Simulated participants hosted by the stand-in, driven over HTTP from outside.

``trio-agents sim join|say|attrs|publish-audio|leave|texts`` (another terminal,
a script, a test in another process) posts JSON to ``/sim/<command>`` on a
running ``trio-agents local-server``; the participant lives in the server's
nursery until it leaves or its room closes.  Authorization: a Bearer token
signed with the server's keys whose video grant has ``roomAdmin`` for the room
(the command line signs one from ``--api-key``/``--api-secret``).

Every command names the participant by ``room`` and ``identity``:

| path | body (besides room, identity) | answer |
|---|---|---|
| `/sim/join` | `kind`, `name`, `metadata`, `attributes` | `{}` (409 if joined already) |
| `/sim/say` | `text`, `topic` | `{}` |
| `/sim/attrs` | `attributes` | `{}` |
| `/sim/publish-audio` | `seconds`, `frequency` | `{}` once the audio was sent |
| `/sim/texts` | | `{"texts": [{"from", "topic", "text"}, ...]}` received so far |
| `/sim/leave` | | `{}` once it left |

Errors answer ``{"error": "..."}`` with 400 (bad body), 401/403 (token), 404
(no such participant) or 409 (already joined).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import rtc
from ._asgi import Request
from ._participants import SimulatedParticipant

if TYPE_CHECKING:
    from ._server import LocalServer

#: The participant kinds a simulated participant may take (as in access tokens).
KINDS = ("standard", "sip", "connector", "ingress", "egress", "agent")


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.define(eq=False)
class _Hosted:
    participant: SimulatedParticipant
    leave: trio.Event = attrs.field(factory=trio.Event)
    gone: trio.Event = attrs.field(factory=trio.Event)


def _str(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ControlError(400, f"{key!r} must be a non-empty string")
    return value


def _attributes(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("attributes", {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ControlError(400, "'attributes' must map strings to strings")
    return dict(value)


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ControlError(400, f"{key!r} must be a number >= 0")
    return float(value)


class HostedParticipants:
    """The participants ``/sim/*`` requests created, by (room, identity)."""

    def __init__(self, server: LocalServer) -> None:
        self._server = server
        self._hosted: dict[tuple[str, str], _Hosted] = {}

    async def handle(self, command: str, request: Request, body: bytes) -> tuple[int, bytes]:
        try:
            result = await self._handle(command, request, body)
        except ControlError as exc:
            return exc.status, json.dumps({"error": str(exc)}).encode()
        return 200, json.dumps(result).encode()

    def _authorize(self, request: Request, room: str) -> None:
        from ._twirp import _PlainError, authenticate

        try:
            claims = authenticate(self._server, request)
        except _PlainError as exc:
            raise ControlError(401, exc.text) from None
        if claims is None:
            raise ControlError(401, "authorization required (a token with roomAdmin)")
        video = claims.video
        if video is None or not video.room_admin or (video.room and video.room != room):
            raise ControlError(403, f"the token needs roomAdmin for room {room!r}")

    async def _handle(self, command: str, request: Request, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise ControlError(400, "the body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        room, identity = _str(data, "room"), _str(data, "identity")
        self._authorize(request, room)
        key = (room, identity)
        if command == "join":
            return await self._join(key, data)
        hosted = self._hosted.get(key)
        if hosted is None:
            raise ControlError(404, f"no simulated participant {identity!r} in room {room!r}")
        p = hosted.participant
        if command == "say":
            await p.send_text(_str(data, "text"), topic=_str(data, "topic", ""))
        elif command == "attrs":
            await p.set_attributes(_attributes(data))
        elif command == "publish-audio":
            await p.publish_audio(
                duration=_number(data, "seconds", 1.0),
                frequency=_number(data, "frequency", 440.0),
            )
        elif command == "texts":
            texts = [
                {
                    "from": t.participant.identity if t.participant else "",
                    "topic": t.topic,
                    "text": t.text,
                }
                for t in p.texts
            ]
            return {"texts": texts}
        elif command == "leave":
            hosted.leave.set()
            await hosted.gone.wait()
        else:
            raise ControlError(404, f"unknown command {command!r}")
        return {}

    async def _join(self, key: tuple[str, str], data: Mapping[str, Any]) -> dict[str, Any]:
        if key in self._hosted:
            raise ControlError(409, f"{key[1]!r} is in room {key[0]!r} already")
        kind = _str(data, "kind", "standard")
        if kind not in KINDS:
            raise ControlError(400, f"'kind' must be one of {', '.join(KINDS)}")
        options = {
            "kind": kind,
            "name": _str(data, "name", ""),
            "metadata": _str(data, "metadata", ""),
            "attributes": _attributes(data),
        }
        await self._server._nursery.start(self._host, key, options)
        return {}

    async def _host(
        self,
        key: tuple[str, str],
        options: dict[str, Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        room, identity = key
        cm = self._server.simulated_participant(identity, room=room, **options)
        async with cm as participant:
            hosted = _Hosted(participant)
            self._hosted[key] = hosted
            try:
                task_status.started()
                async with trio.open_nursery() as watch:

                    async def on_disconnect() -> None:
                        # (iteration ends once the room has disconnected: room closed)
                        async with participant.room.events(rtc.Disconnected) as events:
                            async for _ in events:
                                pass
                        watch.cancel_scope.cancel()

                    watch.start_soon(on_disconnect)
                    await hosted.leave.wait()
                    watch.cancel_scope.cancel()
            finally:
                self._hosted.pop(key, None)
        hosted.gone.set()
