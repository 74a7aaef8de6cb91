"""The stand-in's simulated signal endpoint, ``/rtc/sim``.

A client (``trio_agents.rtc`` with a ``memory://`` or ``sim+ws://`` URL)
joins a room here.  The link carries LiveKit's own ``SignalRequest`` /
``SignalResponse`` and ``DataPacket`` messages plus raw PCM audio frames in
place of WebRTC media; see ``trio_agents.rtc._simwire`` for the format and
the two conventions where LiveKit has no signal message.

Behaviour follows LiveKit: Bearer JWT (or ``access_token`` query) with
``room_join`` and ``room``; the room is created on first join; the kind,
identity, name, metadata and attributes come from the token; ``JoinResponse``
first; ``update_metadata`` is broadcast to everyone, the sender included,
then answered with ``request_response``; ``add_track`` is answered with
``track_published``; data packets are forwarded with the sender stamped;
the server auto-subscribes a participant to every audio track unless it
joined with ``auto_subscribe=0``.

Each connection has an unbounded outbound queue fed by the room's
``deliver`` hook (which never blocks) and drained by a writer task.  When
the participant leaves the room (room closed/deleted, duplicate identity,
removed, or its own leave) the queue is flushed -- ending with a
``SignalResponse.leave`` unless the client asked to leave -- and the
connection closed.  When the socket drops, the participant leaves with
``SIGNAL_CLOSE``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import attrs
import trio
from livekit import api as lkapi
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from .._errors import ConnectionClosed
from .._tokens import quiet_dev_secret_warning
from ..rtc import _simwire as wire
from ._agents import SERVER_VERSION
from ._asgi import WebSocket
from ._rooms import Outbound, Participant, Room, Rooms

logger = logging.getLogger("trio_agents.testing")

#: Sent in JoinResponse; the livekit SDK aborts its process on a zero interval.
PING_INTERVAL = 5
PING_TIMEOUT = 15
#: Budget of a connection's final flush and close.
CLOSE_TIMEOUT = 2.0

_KINDS = {
    "": models.ParticipantInfo.STANDARD,
    "standard": models.ParticipantInfo.STANDARD,
    "ingress": models.ParticipantInfo.INGRESS,
    "egress": models.ParticipantInfo.EGRESS,
    "sip": models.ParticipantInfo.SIP,
    "agent": models.ParticipantInfo.AGENT,
    "connector": models.ParticipantInfo.CONNECTOR,
    "bridge": models.ParticipantInfo.BRIDGE,
}


@attrs.frozen
class RawMessage:
    """An already-encoded link message (forwarded audio) in a participant's outbound queue."""

    data: bytes


def _permission(grants: lkapi.VideoGrants, kind: int) -> models.ParticipantPermission:
    """LiveKit's VideoGrant.ToPermission: unset publish/subscribe grants mean allowed."""

    def allowed(value: bool | None) -> bool:
        return True if value is None else bool(value)

    return models.ParticipantPermission(
        can_subscribe=allowed(grants.can_subscribe),
        can_publish=allowed(grants.can_publish),
        can_publish_data=allowed(grants.can_publish_data),
        hidden=bool(grants.hidden),
        can_update_metadata=bool(grants.can_update_own_metadata),
        agent=bool(grants.agent) or kind == models.ParticipantInfo.AGENT,
        can_subscribe_metrics=bool(grants.can_subscribe_metrics),
    )


class _Conn:
    """One participant connection."""

    def __init__(self, room: Room, auto_subscribe: bool) -> None:
        self.room = room
        self.auto_subscribe = auto_subscribe
        self.participant: Participant | None = None
        self.subscriptions: set[str] = set()
        self.out_send, self.out_recv = trio.open_memory_channel[Outbound](math.inf)
        self.leave_delivered = False
        self.client_left = False

    def deliver(self, msg: Outbound) -> None:
        """The room's hook: queue ``msg``; never blocks, never raises."""
        if isinstance(msg, rtc_pb.SignalResponse) and msg.HasField("leave"):
            self.leave_delivered = True
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self.out_send.send_nowait(msg)

    @property
    def active(self) -> bool:
        p = self.participant
        return p is not None and self.room.participants.get(p.identity) is p

    def subscribe(self, track_sid: str) -> None:
        if track_sid in self.subscriptions:
            return
        self.subscriptions.add(track_sid)
        self.deliver(
            rtc_pb.SignalResponse(track_subscribed=rtc_pb.TrackSubscribed(track_sid=track_sid))
        )


class SignalHub:
    """Serves ``/rtc/sim`` for one ``LocalServer``."""

    def __init__(
        self, rooms: Rooms, *, api_key: str, api_secret: str, server_version: str = SERVER_VERSION
    ) -> None:
        self._rooms = rooms
        self._api_key = api_key
        self._api_secret = api_secret
        self._server_version = server_version
        self._conns: dict[Room, dict[str, _Conn]] = {}

    # --- the endpoint ---------------------------------------------------------------

    async def serve(self, ws: WebSocket) -> None:
        """Serve one participant connection until it ends."""
        token = ws.request.bearer_token()
        if not token:
            await ws.reject(401, "no authorization token: use 'Authorization: Bearer <jwt>'")
            return
        try:
            quiet_dev_secret_warning(self._api_secret)
            claims = lkapi.TokenVerifier(self._api_key, self._api_secret).verify(token)
        except Exception as exc:
            await ws.reject(401, f"invalid token: {exc}")
            return
        grants = claims.video
        if grants is None or not grants.room_join:
            await ws.reject(
                401, "no permissions to access the room: token lacks the roomJoin grant"
            )
            return
        if not grants.room:
            await ws.reject(401, "no permissions to access the room: token names no room")
            return
        if not claims.identity:
            await ws.reject(401, "token has no identity")
            return
        kind = _KINDS.get(claims.kind.lower(), models.ParticipantInfo.STANDARD)
        auto_subscribe = ws.request.query.get("auto_subscribe", "1").lower() not in ("0", "false")
        await ws.accept()

        # no checkpoint from here to the JoinResponse: the join is atomic
        room = self._rooms.get(grants.room)
        if room is None:
            agents = list(claims.room_config.agents) if claims.room_config else []
            room, _ = self._rooms.create(grants.room, agents=agents)
        conn = _Conn(room, auto_subscribe)
        info = models.ParticipantInfo(
            identity=claims.identity,
            name=claims.name,
            metadata=claims.metadata,
            attributes=dict(claims.attributes or {}),
            kind=kind,
            permission=_permission(grants, kind),
        )
        participant = self._rooms.join(room, info, conn.deliver)
        conn.participant = participant
        conn.deliver(rtc_pb.SignalResponse(join=self._join_response(room, participant)))
        self._conns.setdefault(room, {})[participant.identity] = conn
        if auto_subscribe and participant.info.permission.can_subscribe:
            for other in list(room.participants.values()):
                if other is not participant:
                    for t in other.info.tracks:
                        if t.type == models.AUDIO:
                            conn.subscribe(t.sid)
        logger.debug("%s joined room %s over /rtc/sim", participant.identity, room.name)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, ws, conn, nursery.cancel_scope)
                nursery.start_soon(self._watch_left, conn)
                await self._reader(ws, conn)
                nursery.cancel_scope.cancel()
        finally:
            self._disconnected(conn)
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await ws.aclose()

    def _join_response(self, room: Room, participant: Participant) -> rtc_pb.JoinResponse:
        return rtc_pb.JoinResponse(
            room=room.snapshot(),
            participant=participant.info,
            other_participants=[p.info for p in room.participants.values() if p is not participant],
            server_version=self._server_version,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Standard,
                version=self._server_version,
                protocol=wire.PROTOCOL_VERSION,
                node_id="trio-agents-stand-in",
            ),
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            subscriber_primary=False,
        )

    # --- connection tasks ------------------------------------------------------------

    async def _writer(self, ws: WebSocket, conn: _Conn, done: trio.CancelScope) -> None:
        """Drain the outbound queue; once it is closed and empty, close the socket."""
        try:
            async for msg in conn.out_recv:
                if isinstance(msg, rtc_pb.SignalResponse):
                    data = wire.encode_signal(msg)
                elif isinstance(msg, models.DataPacket):
                    data = wire.encode_data(msg)
                elif isinstance(msg, RawMessage):
                    data = msg.data
                else:
                    logger.debug("dropping unknown outbound message %r", type(msg))
                    continue
                await ws.send_message(data)
            await ws.aclose()
        except ConnectionClosed:
            pass
        done.cancel()

    async def _watch_left(self, conn: _Conn) -> None:
        """When the participant leaves the room, flush (with a leave) and close."""
        assert conn.participant is not None
        await conn.participant.left.wait()
        if not conn.leave_delivered and not conn.client_left:
            reason = conn.participant.info.disconnect_reason
            conn.deliver(
                rtc_pb.SignalResponse(
                    leave=rtc_pb.LeaveRequest(reason=reason, action=rtc_pb.LeaveRequest.DISCONNECT)
                )
            )
        conn.out_send.close()

    async def _reader(self, ws: WebSocket, conn: _Conn) -> None:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                return
            if not conn.active:
                continue  # leaving: the writer is flushing
            try:
                tag, payload = wire.split(raw)
                if tag == wire.TAG_SIGNAL:
                    self._on_signal(conn, wire.decode_signal_request(payload))
                elif tag == wire.TAG_DATA:
                    self._on_data(conn, wire.decode_data(payload))
                else:
                    self._on_audio(conn, raw, wire.decode_audio(payload))
            except wire.WireError as exc:
                assert conn.participant is not None
                logger.warning(
                    "closing the /rtc/sim connection of %s: %s", conn.participant.identity, exc
                )
                return

    def _disconnected(self, conn: _Conn) -> None:
        p = conn.participant
        if p is None:
            return
        conns = self._conns.get(conn.room, {})
        if conns.get(p.identity) is conn:
            del conns[p.identity]
        if not conns:
            self._conns.pop(conn.room, None)
        own = {t.sid for t in p.info.tracks}
        for other in conns.values():
            other.subscriptions -= own
        if conn.active:
            self._rooms.leave(conn.room, p.identity, models.SIGNAL_CLOSE)
        conn.out_send.close()

    # --- messages ---------------------------------------------------------------------

    def _on_signal(self, conn: _Conn, req: rtc_pb.SignalRequest) -> None:
        p = conn.participant
        assert p is not None
        kind = req.WhichOneof("message")
        if kind == "update_metadata":
            self._on_update_metadata(conn, p, req.update_metadata)
        elif kind == "add_track":
            self._on_add_track(conn, p, req.add_track)
        elif kind == "subscription":
            self._on_subscription(conn, p, req.subscription)
        elif kind == "offer":
            self._on_offer(conn, p, req.offer)
        elif kind == "leave":
            conn.client_left = True
            self._rooms.leave(conn.room, p.identity, models.CLIENT_INITIATED)
        elif kind == "ping_req":
            conn.deliver(
                rtc_pb.SignalResponse(
                    pong_resp=rtc_pb.Pong(
                        last_ping_timestamp=req.ping_req.timestamp,
                        timestamp=int(time.time() * 1000),
                    )
                )
            )
        elif kind == "ping":
            conn.deliver(rtc_pb.SignalResponse(pong=int(time.time() * 1000)))
        else:
            logger.debug("ignoring SignalRequest.%s from %s", kind, p.identity)

    def _on_update_metadata(
        self, conn: _Conn, p: Participant, req: rtc_pb.UpdateParticipantMetadata
    ) -> None:
        if not p.info.permission.can_update_metadata:
            conn.deliver(
                rtc_pb.SignalResponse(
                    request_response=rtc_pb.RequestResponse(
                        request_id=req.request_id,
                        reason=rtc_pb.RequestResponse.NOT_ALLOWED,
                        message="participant does not have permission to update own metadata "
                        "(canUpdateOwnMetadata)",
                        update_metadata=req,
                    )
                )
            )
            return
        # as LiveKit: empty name/metadata mean "unchanged"; the update reaches
        # everyone (the sender too) before the request's answer
        self._rooms.update_participant(
            conn.room,
            p.identity,
            name=req.name or None,
            metadata=req.metadata or None,
            attributes=dict(req.attributes) or None,
        )
        conn.deliver(
            rtc_pb.SignalResponse(
                request_response=rtc_pb.RequestResponse(
                    request_id=req.request_id, reason=rtc_pb.RequestResponse.OK
                )
            )
        )

    def _on_add_track(self, conn: _Conn, p: Participant, req: rtc_pb.AddTrackRequest) -> None:
        if not p.info.permission.can_publish:
            conn.deliver(
                rtc_pb.SignalResponse(
                    request_response=rtc_pb.RequestResponse(
                        reason=rtc_pb.RequestResponse.NOT_ALLOWED,
                        message="participant does not have permission to publish",
                        add_track=req,
                    )
                )
            )
            return
        track = models.TrackInfo(
            type=req.type,
            name=req.name,
            source=req.source,
            muted=req.muted,
            stereo=req.stereo,
            mime_type="audio/pcm" if req.type == models.AUDIO else "",
        )
        track = self._rooms.publish_track(conn.room, p.identity, track)
        conn.deliver(
            rtc_pb.SignalResponse(
                track_published=rtc_pb.TrackPublishedResponse(cid=req.cid, track=track)
            )
        )
        if track.type != models.AUDIO:
            return
        for other in list(self._conns.get(conn.room, {}).values()):
            other_p = other.participant
            if (
                other is not conn
                and other.auto_subscribe
                and other.active
                and other_p is not None
                and other_p.info.permission.can_subscribe
            ):
                other.subscribe(track.sid)

    def _on_subscription(self, conn: _Conn, p: Participant, req: rtc_pb.UpdateSubscription) -> None:
        sids = list(req.track_sids)
        for pt in req.participant_tracks:
            sids.extend(pt.track_sids)
        for sid in sids:
            if not req.subscribe:
                conn.subscriptions.discard(sid)
                continue
            publisher = self._track_owner(conn.room, sid)
            if publisher is None or publisher is p or not p.info.permission.can_subscribe:
                conn.deliver(
                    rtc_pb.SignalResponse(
                        subscription_response=rtc_pb.SubscriptionResponse(
                            track_sid=sid, err=models.SE_TRACK_NOTFOUND
                        )
                    )
                )
                continue
            conn.subscribe(sid)

    def _on_offer(self, conn: _Conn, p: Participant, offer: rtc_pb.SessionDescription) -> None:
        """Simulated renegotiation: unpublish the tracks the offer no longer lists."""
        keep = set(offer.mid_to_track_id.values())
        for t in list(p.info.tracks):
            if t.sid not in keep:
                self._rooms.unpublish_track(conn.room, p.identity, t.sid)
                for other in self._conns.get(conn.room, {}).values():
                    other.subscriptions.discard(t.sid)
        conn.deliver(
            rtc_pb.SignalResponse(
                answer=rtc_pb.SessionDescription(
                    type="answer",
                    sdp="sim",
                    id=offer.id,
                    mid_to_track_id=dict(offer.mid_to_track_id),
                )
            )
        )

    def _on_data(self, conn: _Conn, packet: models.DataPacket) -> None:
        p = conn.participant
        assert p is not None
        if not p.info.permission.can_publish_data:
            logger.debug("dropping data from %s: no can_publish_data", p.identity)
            return
        conn.room.send_data(packet, sender=p)

    def _on_audio(self, conn: _Conn, raw: bytes | str, packet: wire.AudioPacket) -> None:
        p = conn.participant
        assert p is not None
        if not any(t.sid == packet.track_sid for t in p.info.tracks):
            logger.debug("dropping audio of %s for a track it does not publish", p.identity)
            return
        msg = RawMessage(raw if isinstance(raw, bytes) else raw.encode())
        for other in list(self._conns.get(conn.room, {}).values()):
            if other is not conn and packet.track_sid in other.subscriptions and other.active:
                other.deliver(msg)

    @staticmethod
    def _track_owner(room: Room, track_sid: str) -> Participant | None:
        for p in room.participants.values():
            if any(t.sid == track_sid for t in p.info.tracks):
                return p
        return None
