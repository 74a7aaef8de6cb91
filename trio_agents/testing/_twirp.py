"""Twirp ``RoomService`` and ``AgentDispatchService`` of the stand-in server.

Follows the generated Twirp server code of ``livekit/protocol`` and LiveKit's
``pkg/service/{auth,roomservice,agent_dispatch_service}.go`` (reference:
worker_protocol.md section 5), so that the official ``livekit-api`` client and
``trio_agents.api`` see the same answers as from a real server:

* ``POST /twirp/livekit.<Service>/<Method>``; bodies are protobuf
  (``application/protobuf``) or protojson (``application/json``), and the
  answer uses the request's encoding.
* Errors are Twirp JSON ``{"code", "msg", "meta"}`` (``meta`` only when not
  empty, as Twirp's ``omitempty``) with the HTTP status of the code.
* A token that is present but broken is refused before routing with a
  plain-text 401, like LiveKit's auth middleware; the client then reports
  code ``unknown``.  A missing token reaches the method, whose grant check
  fails.

Every method runs synchronously on the room model, so the answer reflects the
change (no eventual consistency to wait for).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import jwt
import trio
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit import api as lkapi
from livekit.api.access_token import Claims
from livekit.protocol import agent_dispatch, models
from livekit.protocol import room as room_pb
from livekit.protocol import rtc as rtc_pb

from .._tokens import quiet_dev_secret_warning
from ._asgi import Request
from ._rooms import Participant, Room, new_sid

if TYPE_CHECKING:
    from ._server import LocalServer

logger = logging.getLogger("trio_agents.testing")

_M = TypeVar("_M", bound=Message)

#: Twirp error code -> HTTP status (twirp ``ServerHTTPStatusFromErrorCode``).
HTTP_STATUS: Mapping[str, int] = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

#: The code of a failed grant check.  LiveKit wraps every grant failure in
#: ``twirpAuthError`` = ``twirp.NewError(twirp.Unauthenticated, "permissions
#: denied")`` (``pkg/service/auth.go``): a missing token and a valid token that
#: lacks the grant (or names another room) both get 401 ``unauthenticated``; it
#: never answers ``permission_denied``.  The stand-in does the same, so code
#: that handles LiveKit's answer handles ours.
GRANT_FAILURE_CODE = "unauthenticated"
GRANT_FAILURE_MSG = "permissions denied"

#: Errors raised where LiveKit handles the call in the room (over its internal
#: RPC) reach the client with this prefix: v1.13 answers e.g. ``{"code":
#: "not_found", "msg": "twirp error unknown: requested room does not exist"}``.
ROUTED = "twirp error unknown: "
ROOM_NOT_FOUND = ROUTED + "requested room does not exist"
PARTICIPANT_NOT_FOUND = ROUTED + "participant does not exist"
DISPATCH_NOT_FOUND = ROUTED + "dispatch ID not found"
#: SendData, ListDispatch and DeleteDispatch for a room that does not exist: the
#: real server's RPC to the room finds nobody and gives up (after a few seconds).
NO_ROOM_NODE = ROUTED + "no response from servers"
PREFIX = "/twirp"
PACKAGE = "livekit"
MAX_DEPLOYMENT_LEN = 64
#: LiveKit's default limits on room and participant names (bytes).
MAX_NAME_LEN = 256

JSON = "application/json"
PROTOBUF = "application/protobuf"
TEXT = "text/plain; charset=utf-8"


class TwirpError(Exception):
    """A Twirp error answer: ``code`` (see ``HTTP_STATUS``), ``msg``, ``meta``."""

    def __init__(self, code: str, msg: str, meta: Mapping[str, str] | None = None) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown twirp code {code!r}")
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_json(self) -> bytes:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return json.dumps(body).encode()


class _PlainError(Exception):
    """An answer from before Twirp routing: plain text, like Go's ``HandleError``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@attrs.frozen
class Call:
    """What a method sees besides its request message."""

    server: LocalServer
    claims: Claims | None
    request_id: str


@attrs.frozen
class _Method:
    request_type: type[Message]
    run: Callable[[Call, Any], Message]


def _go_quote(s: str) -> str:
    # Go's %q; close enough for the ASCII paths and media types seen here
    return json.dumps(s)


def _bad_route(msg: str, method: str, path: str) -> TwirpError:
    return TwirpError("bad_route", msg, {"twirp_invalid_route": f"{method} {path}"})


# --- authentication ------------------------------------------------------------------


def _unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim of a JWS compact token, or None if it does not parse."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    iss = claims.get("iss", "")
    return iss if isinstance(iss, str) else ""


def authenticate(server: LocalServer, request: Request) -> Claims | None:
    """LiveKit's ``APIKeyAuthMiddleware``: the token's claims, or None without a token.

    Raises:
        _PlainError: a token is present but unusable (plain-text 401).
    """
    header = request.headers.get("authorization", "")
    if header:
        if not header.startswith("Bearer "):
            raise _PlainError(401, "invalid authorization header. Must start with Bearer ")
        token = header[len("Bearer ") :]
    else:
        token = request.query.get("access_token", "")
    if not token:
        return None
    claims, refusal = verify_token(token, server.api_key, server.api_secret)
    if refusal is not None:
        raise _PlainError(401, refusal)
    return claims


#: What LiveKit's JWT library (golang-jwt) says about a token it refuses.
_GO_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token has invalid claims: token is expired"),
    (jwt.ImmatureSignatureError, "token has invalid claims: token is not valid yet"),
    (jwt.InvalidSignatureError, "token signature is invalid: signature is invalid"),
)


def verify_token(token: str, api_key: str, api_secret: str) -> tuple[Claims | None, str | None]:
    """``(claims, None)`` for a good token, ``(None, why)`` with LiveKit's 401 text otherwise."""
    issuer = _unverified_issuer(token)
    if issuer is None:
        return None, "invalid authorization token"
    if issuer != api_key:
        return None, f"invalid API key: {issuer}"
    try:
        quiet_dev_secret_warning(api_secret)
        return lkapi.TokenVerifier(api_key, api_secret).verify(token), None
    except Exception as exc:  # any verification failure is a bad token
        detail = next((m for t, m in _GO_JWT_ERRORS if isinstance(exc, t)), str(exc))
        return None, f"invalid token: {token}, error: {detail}"


def _grant_failure() -> TwirpError:
    return TwirpError(GRANT_FAILURE_CODE, GRANT_FAILURE_MSG)


def ensure_create(call: Call) -> None:
    video = call.claims.video if call.claims else None
    if video is None or not video.room_create:
        raise _grant_failure()


def ensure_list(call: Call) -> None:
    video = call.claims.video if call.claims else None
    if video is None or not video.room_list:
        raise _grant_failure()


def ensure_admin(call: Call, room: str) -> None:
    video = call.claims.video if call.claims else None
    if video is None or not video.room_admin or (video.room or "") != room:
        raise _grant_failure()


# --- helpers -------------------------------------------------------------------------


def _now_ns() -> int:
    return time.time_ns()


def _copy(msg: _M) -> _M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def _room_or_404(call: Call, name: str) -> Room:
    room = call.server.rooms.get(name)
    if room is None:
        raise TwirpError("not_found", ROOM_NOT_FOUND)
    return room


def _room_or_503(call: Call, name: str) -> Room:
    room = call.server.rooms.get(name)
    if room is None:
        raise TwirpError("unavailable", NO_ROOM_NODE)
    return room


def _participant_or_404(call: Call, room_name: str, identity: str) -> tuple[Room, Participant]:
    room = call.server.rooms.get(room_name)
    p = room.participants.get(identity) if room is not None else None
    if room is None or p is None:
        raise TwirpError("not_found", PARTICIPANT_NOT_FOUND)
    return room, p


def _check_room_name(name: str) -> None:
    if not name:
        raise TwirpError("invalid_argument", "no room name")


def _check_deployment(deployment: str) -> None:
    """``agent.ValidateDeployment``: at most 64 bytes; no ``_``, whitespace or control bytes."""
    data = deployment.encode()
    if len(data) > MAX_DEPLOYMENT_LEN:
        raise TwirpError(
            "invalid_argument", f"{ROUTED}deployment exceeds {MAX_DEPLOYMENT_LEN} bytes"
        )
    for i, c in enumerate(data):
        if c == ord("_"):
            raise TwirpError(
                "invalid_argument", f"{ROUTED}deployment contains reserved character '_'"
            )
        if c <= ord(" ") or c == 0x7F:
            raise TwirpError(
                "invalid_argument",
                f"{ROUTED}deployment contains whitespace or control byte at position {i}",
            )


# --- RoomService ---------------------------------------------------------------------


def create_room(call: Call, req: room_pb.CreateRoomRequest) -> models.Room:
    ensure_create(call)
    if len(req.name.encode()) > MAX_NAME_LEN:
        raise TwirpError(
            "invalid_argument",
            f"{ROUTED}room name length exceeds limits: max length {MAX_NAME_LEN}",
        )
    _check_room_name(req.name)
    for a in req.agents:
        _check_deployment(a.deployment)
    room, created = call.server.rooms.create(
        req.name,
        metadata=req.metadata,
        empty_timeout=req.empty_timeout,
        departure_timeout=req.departure_timeout,
        max_participants=req.max_participants,
        agents=list(req.agents),
    )
    if created and req.agents:
        # RoomAgentDispatch fields the room model does not copy (same order)
        for d, src in zip(room.dispatches.values(), req.agents, strict=False):
            d.deployment = src.deployment
            d.restart_policy = src.restart_policy
    return room.snapshot()


def list_rooms(call: Call, req: room_pb.ListRoomsRequest) -> room_pb.ListRoomsResponse:
    ensure_list(call)
    rooms = call.server.rooms.list(req.names)
    return room_pb.ListRoomsResponse(rooms=[r.snapshot() for r in rooms])


def delete_room(call: Call, req: room_pb.DeleteRoomRequest) -> room_pb.DeleteRoomResponse:
    ensure_create(call)
    if not call.server.rooms.delete(req.room):
        raise TwirpError("not_found", ROOM_NOT_FOUND)
    return room_pb.DeleteRoomResponse()


def list_participants(
    call: Call, req: room_pb.ListParticipantsRequest
) -> room_pb.ListParticipantsResponse:
    ensure_admin(call, req.room)
    room = call.server.rooms.get(req.room)
    # LiveKit lists nothing (no error) for a room it does not know
    infos = [p.info for p in room.participants.values()] if room is not None else []
    return room_pb.ListParticipantsResponse(participants=infos)


def get_participant(call: Call, req: room_pb.RoomParticipantIdentity) -> models.ParticipantInfo:
    ensure_admin(call, req.room)
    _, p = _participant_or_404(call, req.room, req.identity)
    return _copy(p.info)


def remove_participant(
    call: Call, req: room_pb.RoomParticipantIdentity
) -> room_pb.RemoveParticipantResponse:
    ensure_admin(call, req.room)
    room, p = _participant_or_404(call, req.room, req.identity)
    _remove(call.server, room, p)
    return room_pb.RemoveParticipantResponse()


def _remove(server: LocalServer, room: Room, p: Participant) -> None:
    """Send ``p`` a leave and take it out of ``room`` (RemoveParticipant)."""
    if room.participants.get(p.identity) is not p:
        return  # gone already
    if p.deliver is not None:
        p.deliver(
            rtc_pb.SignalResponse(
                leave=rtc_pb.LeaveRequest(
                    can_reconnect=False,
                    reason=models.PARTICIPANT_REMOVED,
                    action=rtc_pb.LeaveRequest.DISCONNECT,
                )
            )
        )
    server.rooms.leave(room, p.identity, models.PARTICIPANT_REMOVED)


#: How long an agent participant has to leave after DeleteDispatch terminated
#: its job before the room removes it (LiveKit's agent job shutdown timeout).
AGENT_LEAVE_GRACE = 3.0


async def _remove_agent_after_grace(server: LocalServer, room: Room, p: Participant) -> None:
    with trio.move_on_after(AGENT_LEAVE_GRACE):
        await p.left.wait()
    _remove(server, room, p)


def update_participant(call: Call, req: room_pb.UpdateParticipantRequest) -> models.ParticipantInfo:
    # checked before the grant, as LiveKit does
    if len(req.name.encode()) > MAX_NAME_LEN:
        argument = "name length exceeds limits"
        raise TwirpError("invalid_argument", f"{argument} {MAX_NAME_LEN}", {"argument": argument})
    ensure_admin(call, req.room)
    room, _ = _participant_or_404(call, req.room, req.identity)
    # LiveKit's ParticipantImpl.UpdateMetadata: empty name/metadata leave the
    # value alone; attributes merge, an empty value deleting the key
    info = call.server.rooms.update_participant(
        room,
        req.identity,
        name=req.name or None,
        metadata=req.metadata or None,
        attributes=dict(req.attributes) or None,
        permission=req.permission if req.HasField("permission") else None,
    )
    return _copy(info)


def update_room_metadata(call: Call, req: room_pb.UpdateRoomMetadataRequest) -> models.Room:
    ensure_admin(call, req.room)
    room = _room_or_404(call, req.room)
    return call.server.rooms.update_metadata(room, req.metadata)


def send_data(call: Call, req: room_pb.SendDataRequest) -> room_pb.SendDataResponse:
    ensure_admin(call, req.room)
    if len(req.nonce) not in (0, 16):
        raise TwirpError(
            "invalid_argument",
            f"nonce should be 16-bytes or not present, got: {len(req.nonce)} bytes",
        )
    room = _room_or_503(call, req.room)
    user = models.UserPacket(
        payload=req.data,
        destination_sids=req.destination_sids,
        destination_identities=req.destination_identities,
        nonce=req.nonce,
    )
    if req.HasField("topic"):
        user.topic = req.topic
    packet = models.DataPacket(
        kind=req.kind, destination_identities=req.destination_identities, user=user
    )
    wanted = set(req.destination_identities)
    sids = set(req.destination_sids)
    wanted.update(p.identity for p in room.participants.values() if p.info.sid in sids)
    if not wanted and (req.destination_identities or req.destination_sids):
        return room_pb.SendDataResponse()  # addressed to nobody present
    room.send_data(packet, destination_identities=wanted)
    return room_pb.SendDataResponse()


# --- AgentDispatchService ------------------------------------------------------------


def create_dispatch(
    call: Call, req: agent_dispatch.CreateAgentDispatchRequest
) -> agent_dispatch.AgentDispatch:
    ensure_admin(call, req.room)
    _check_deployment(req.deployment)
    _check_room_name(req.room)
    # auto-create: a room created here has no agents config, so it also gets
    # LiveKit's default empty-name dispatch
    room, _ = call.server.rooms.create(req.room)
    # a random id, even for a retry with the same X-Livekit-Request-Id: LiveKit
    # v1.13 makes a second dispatch then
    d = agent_dispatch.AgentDispatch(
        id=new_sid("AD_"),
        agent_name=req.agent_name,
        room=room.name,
        metadata=req.metadata,
        restart_policy=req.restart_policy,
        deployment=req.deployment,
        attributes=dict(req.attributes),
        state=agent_dispatch.AgentDispatchState(created_at=_now_ns()),
    )
    room.dispatches[d.id] = d
    call.server.agents.launch_dispatch(room, d)
    return _copy(d)


def list_dispatch(
    call: Call, req: agent_dispatch.ListAgentDispatchRequest
) -> agent_dispatch.ListAgentDispatchResponse:
    ensure_admin(call, req.room)
    room = _room_or_503(call, req.room)
    found = [
        _copy(d) for d in room.dispatches.values() if not req.dispatch_id or d.id == req.dispatch_id
    ]
    return agent_dispatch.ListAgentDispatchResponse(agent_dispatches=found)


def delete_dispatch(
    call: Call, req: agent_dispatch.DeleteAgentDispatchRequest
) -> agent_dispatch.AgentDispatch:
    ensure_admin(call, req.room)
    room = _room_or_503(call, req.room)
    d = room.dispatches.pop(req.dispatch_id, None)
    if d is None:
        raise TwirpError("not_found", DISPATCH_NOT_FOUND)
    # LiveKit's OSS room leaves deleted_at unset in its answer; the field is
    # there to say when, so the stand-in fills it
    d.state.deleted_at = _now_ns()
    hub = call.server.agents
    job_ids = {j.id for j in d.state.jobs}
    job_ids.update(jid for jid, rec in hub.jobs.items() if rec.job.dispatch_id == d.id)
    for job_id in sorted(job_ids):
        # TERMINATION_REQUESTED; a no-op for jobs no longer running on a worker
        if not hub.terminate(job_id):
            continue
        # the job's agent participant gets a grace period to leave, then is removed
        identity = hub.jobs[job_id].job.state.participant_identity
        p = room.participants.get(identity) if identity else None
        if p is not None:
            call.server.start_soon(_remove_agent_after_grace, call.server, room, p)
    return _copy(d)


SERVICES: Mapping[str, Mapping[str, _Method]] = {
    "RoomService": {
        "CreateRoom": _Method(room_pb.CreateRoomRequest, create_room),
        "ListRooms": _Method(room_pb.ListRoomsRequest, list_rooms),
        "DeleteRoom": _Method(room_pb.DeleteRoomRequest, delete_room),
        "ListParticipants": _Method(room_pb.ListParticipantsRequest, list_participants),
        "GetParticipant": _Method(room_pb.RoomParticipantIdentity, get_participant),
        "RemoveParticipant": _Method(room_pb.RoomParticipantIdentity, remove_participant),
        "UpdateParticipant": _Method(room_pb.UpdateParticipantRequest, update_participant),
        "UpdateRoomMetadata": _Method(room_pb.UpdateRoomMetadataRequest, update_room_metadata),
        "SendData": _Method(room_pb.SendDataRequest, send_data),
    },
    "AgentDispatchService": {
        "CreateDispatch": _Method(agent_dispatch.CreateAgentDispatchRequest, create_dispatch),
        "ListDispatch": _Method(agent_dispatch.ListAgentDispatchRequest, list_dispatch),
        "DeleteDispatch": _Method(agent_dispatch.DeleteAgentDispatchRequest, delete_dispatch),
    },
}


# --- the HTTP side -------------------------------------------------------------------


NOT_FOUND_PAGE = b"404 page not found\n"


def _known_service(path: str) -> bool:
    return any(path.startswith(f"{PREFIX}/{PACKAGE}.{name}/") for name in SERVICES)


def _route(method: str, path: str) -> _Method:
    if method != "POST":
        msg = f"unsupported method {_go_quote(method)} (only POST is allowed)"
        raise _bad_route(msg, method, path)
    prefix, _, rest = path.rpartition("/")
    prefix, _, pkg_service = prefix.rpartition("/")
    pkg, _, service = pkg_service.partition(".")
    found = SERVICES.get(service, {}).get(rest) if pkg == PACKAGE else None
    if found is None or prefix != PREFIX:
        raise _bad_route(f"no handler for path {_go_quote(path)}", method, path)
    return found


def _decode(m: _Method, body: bytes, is_json: bool) -> Message:
    msg = m.request_type()
    if is_json:
        try:
            json_format.Parse(body.decode("utf-8"), msg, ignore_unknown_fields=True)
        except (UnicodeDecodeError, json_format.ParseError) as exc:
            logger.debug("undecodable JSON request: %s", exc)
            raise TwirpError("malformed", "the json request could not be decoded") from None
        return msg
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        logger.debug("undecodable protobuf request: %s", exc)
        raise TwirpError("malformed", "the protobuf request could not be decoded") from None
    return msg


def _emit_null_messages(msg: Message, data: dict[str, Any]) -> None:
    """Go's protojson with ``EmitUnpopulated`` writes an unset message field as ``null``.

    Python's ``MessageToDict`` leaves it out; put the ``null`` in (recursively),
    except for oneof members, which Go leaves out too.
    """
    for fd in msg.DESCRIPTOR.fields:
        sub = fd.message_type
        if sub is None or fd.containing_oneof is not None or sub.full_name.startswith("google."):
            continue
        if fd.is_repeated:
            if sub.GetOptions().map_entry:
                value_fd = sub.fields_by_name["value"]
                if value_fd.message_type is not None:
                    for key, item in getattr(msg, fd.name).items():
                        _emit_null_messages(item, data[fd.name][str(key)])
            else:
                for item, out in zip(getattr(msg, fd.name), data[fd.name], strict=True):
                    _emit_null_messages(item, out)
        elif msg.HasField(fd.name):
            _emit_null_messages(getattr(msg, fd.name), data[fd.name])
        else:
            data[fd.name] = None


def _encode(msg: Message, is_json: bool) -> bytes:
    if is_json:
        # twirp's protojson options: proto field names, unpopulated fields emitted
        data = json_format.MessageToDict(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        _emit_null_messages(msg, data)
        return json.dumps(data, separators=(",", ":")).encode()
    return msg.SerializeToString()


async def handle_twirp(
    server: LocalServer, method: str, request: Request, body: bytes
) -> tuple[int, bytes, str]:
    """Answer one ``/twirp/...`` request: ``(status, body, content type)``."""
    try:
        claims = authenticate(server, request)
    except _PlainError as exc:
        return exc.status, exc.text.encode(), TEXT
    path = request.path
    if not _known_service(path):
        # LiveKit mounts each service's Twirp handler at its own prefix; any
        # other path falls through to Go's mux
        return 404, NOT_FOUND_PAGE, TEXT
    try:
        m = _route(method, path)
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        if media not in (JSON, PROTOBUF):
            raise _bad_route(f"unexpected Content-Type: {_go_quote(ctype)}", method, path)
        is_json = media == JSON
        req = _decode(m, body, is_json)
        call = Call(
            server=server,
            claims=claims,
            request_id=request.headers.get("x-livekit-request-id", ""),
        )
        try:
            resp = m.run(call, req)
        except TwirpError:
            raise
        except Exception as exc:  # twirp answers a handler panic with "internal"
            logger.exception("twirp %s failed", path)
            raise TwirpError("internal", f"{type(exc).__name__}: {exc}") from exc
        return 200, _encode(resp, is_json), JSON if is_json else PROTOBUF
    except TwirpError as exc:
        return exc.status, exc.to_json(), JSON
