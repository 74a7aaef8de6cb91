"""The stand-in's room model, built on LiveKit's own protobuf messages.

Rooms hold ``models.ParticipantInfo`` records and ``AgentDispatch`` records.
Every change is broadcast to the room's connected participants as the
``rtc.SignalResponse`` LiveKit itself would send (``update``, ``room_update``,
``leave``), so the simulated signal link and a future real ``/rtc`` endpoint
can sit on the same rooms.

Closing follows LiveKit (``pkg/rtc/room.go``): a room closes
``departure_timeout`` seconds after its last non-dependent participant
(anything but AGENT and EGRESS) leaves, or ``empty_timeout`` seconds after
creation if nobody ever joined.  ``delete`` closes it at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import attrs
import trio
from livekit.protocol import agent_dispatch, models
from livekit.protocol import rtc as rtc_pb

logger = logging.getLogger("trio_agents.testing")

Kind = models.ParticipantInfo.Kind
#: Participants that neither keep a room open nor trigger participant jobs.
DEPENDENT_KINDS = frozenset({models.ParticipantInfo.AGENT, models.ParticipantInfo.EGRESS})


#: The codecs a LiveKit v1.13 room enables by default (``Room.enabled_codecs``).
DEFAULT_CODECS = (
    "audio/PCMU",
    "audio/PCMA",
    "audio/opus",
    "audio/red",
    "video/VP8",
    "video/H264",
    "video/VP9",
    "video/AV1",
    "video/H265",
    "video/rtx",
)


def turn_password() -> str:
    """A room's TURN password: 44 random base62 characters, as LiveKit makes them."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(44))


def new_sid(prefix: str) -> str:
    """A LiveKit-style id: ``RM_``, ``PA_``, ``TR_``, ``AD_``, ``AJ_`` + 12 chars."""
    return prefix + secrets.token_hex(6)


def _now_ns() -> int:
    return time.time_ns()


#: What the room pushes to a participant's connection: signal messages, data
#: packets, and (for the simulated link) audio frames of subscribed tracks.
Outbound = rtc_pb.SignalResponse | models.DataPacket | object


@attrs.define(eq=False)
class Participant:
    """A participant in a stand-in room."""

    info: models.ParticipantInfo
    #: Outbound hook of its signal connection; None for participants with no link.
    deliver: Callable[[Outbound], None] | None = None
    left: trio.Event = attrs.field(factory=trio.Event)

    @property
    def identity(self) -> str:
        return self.info.identity

    @property
    def dependent(self) -> bool:
        return self.info.kind in DEPENDENT_KINDS


class RoomClosed(Exception):
    """The room is closed (deleted, or closed after everyone left)."""


@attrs.define(eq=False)
class Room:
    """One stand-in room."""

    info: models.Room
    participants: dict[str, Participant] = attrs.field(factory=dict)
    dispatches: dict[str, agent_dispatch.AgentDispatch] = attrs.field(factory=dict)
    closed: trio.Event = attrs.field(factory=trio.Event)
    close_reason: models.DisconnectReason = models.UNKNOWN_REASON
    ever_joined: bool = False
    last_departure: float | None = None
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def name(self) -> str:
        return self.info.name

    def snapshot(self) -> models.Room:
        out = models.Room()
        out.CopyFrom(self.info)
        out.num_participants = sum(
            1 for p in self.participants.values() if p.info.kind != models.ParticipantInfo.EGRESS
        )
        out.num_publishers = sum(1 for p in self.participants.values() if p.info.is_publisher)
        return out

    def has_keepalive_participants(self) -> bool:
        return any(not p.dependent for p in self.participants.values())

    def broadcast(self, msg: Outbound, *, exclude: str | None = None) -> None:
        for p in list(self.participants.values()):
            if p.deliver is not None and p.identity != exclude:
                p.deliver(msg)

    def send_data(
        self,
        packet: models.DataPacket,
        *,
        sender: Participant | None = None,
        destination_identities: Iterable[str] = (),
    ) -> int:
        """Forward a data packet as LiveKit does; returns how many received it.

        The sender's identity is stamped on the packet (empty for server-sent
        data); only ``destination_identities`` get it when that is non-empty.
        """
        out = models.DataPacket()
        out.CopyFrom(packet)
        out.participant_identity = sender.identity if sender else ""
        out.participant_sid = sender.info.sid if sender else ""
        if out.HasField("user"):
            out.user.participant_identity = out.participant_identity
            out.user.participant_sid = out.participant_sid
        wanted = set(destination_identities) or set(out.destination_identities)
        n = 0
        for p in list(self.participants.values()):
            if p.deliver is None or (sender is not None and p is sender):
                continue
            if wanted and p.identity not in wanted:
                continue
            p.deliver(out)
            n += 1
        return n

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class RoomListener:
    """Hooks the rest of the server attaches to room events (agent dispatch)."""

    def room_created(self, room: Room) -> None: ...

    def participant_joined(self, room: Room, participant: Participant) -> None: ...

    def participant_left(self, room: Room, participant: Participant) -> None: ...

    def track_published(self, room: Room, participant: Participant) -> None: ...

    def room_closed(self, room: Room) -> None: ...


class Rooms:
    """All rooms of one stand-in server.

    Args:
        nursery: where each room's close timer runs.
        departure_timeout, empty_timeout: defaults for rooms created without them.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        departure_timeout: float = 20.0,
        empty_timeout: float = 300.0,
        listener: RoomListener | None = None,
    ) -> None:
        if departure_timeout < 0 or empty_timeout < 0:
            raise ValueError("departure_timeout and empty_timeout must be >= 0")
        self._nursery = nursery
        self.departure_timeout = departure_timeout
        self.empty_timeout = empty_timeout
        self.listener = listener or RoomListener()
        self._rooms: dict[str, Room] = {}

    # --- lookup -----------------------------------------------------------------

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def list(self, names: Iterable[str] = ()) -> list[Room]:
        wanted = set(names)
        return [r for r in self._rooms.values() if not wanted or r.name in wanted]

    # --- lifecycle --------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        metadata: str = "",
        empty_timeout: int = 0,
        departure_timeout: int = 0,
        max_participants: int = 0,
        agents: Iterable[agent_dispatch.RoomAgentDispatch] = (),
    ) -> tuple[Room, bool]:
        """Get or create ``name``; returns ``(room, created)`` like LiveKit's CreateRoom."""
        if not name:
            raise ValueError("room name must not be empty")
        existing = self._rooms.get(name)
        if existing is not None:
            return existing, False
        now = time.time()
        info = models.Room(
            sid=new_sid("RM_"),
            name=name,
            metadata=metadata,
            empty_timeout=empty_timeout or int(self.empty_timeout),
            departure_timeout=departure_timeout or int(self.departure_timeout),
            max_participants=max_participants,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            turn_password=turn_password(),
            enabled_codecs=[models.Codec(mime=m) for m in DEFAULT_CODECS],
        )
        room = Room(info=info)
        # float timeouts (tests use fractions of a second) kept beside the proto
        room_timeouts = (
            float(empty_timeout) if empty_timeout else self.empty_timeout,
            float(departure_timeout) if departure_timeout else self.departure_timeout,
        )
        self._rooms[name] = room
        agents = list(agents)
        if not agents:
            agents = [agent_dispatch.RoomAgentDispatch(agent_name="")]
        for a in agents:
            self._add_dispatch(room, a.agent_name, a.metadata, dict(a.attributes))
        self._nursery.start_soon(self._watch, room, *room_timeouts)
        logger.debug("room %s created (%s)", name, info.sid)
        self.listener.room_created(room)
        return room, True

    def add_dispatch(
        self, room: Room, agent_name: str, metadata: str = "", attributes: Mapping[str, str] = {}
    ) -> agent_dispatch.AgentDispatch:
        return self._add_dispatch(room, agent_name, metadata, dict(attributes))

    def _add_dispatch(
        self, room: Room, agent_name: str, metadata: str, attributes: dict[str, str]
    ) -> agent_dispatch.AgentDispatch:
        d = agent_dispatch.AgentDispatch(
            id=new_sid("AD_"),
            agent_name=agent_name,
            room=room.name,
            metadata=metadata,
            attributes=attributes,
            state=agent_dispatch.AgentDispatchState(created_at=_now_ns()),
        )
        room.dispatches[d.id] = d
        return d

    def delete(self, name: str) -> bool:
        """Close ``name`` at once (DeleteRoom); False if there is no such room."""
        room = self._rooms.get(name)
        if room is None:
            return False
        self._close(room, models.ROOM_DELETED)
        return True

    def _close(self, room: Room, reason: models.DisconnectReason) -> None:
        if room.closed.is_set():
            return
        self._rooms.pop(room.name, None)
        room.close_reason = reason
        room.broadcast(
            rtc_pb.SignalResponse(
                leave=rtc_pb.LeaveRequest(
                    can_reconnect=False, reason=reason, action=rtc_pb.LeaveRequest.DISCONNECT
                )
            )
        )
        for p in list(room.participants.values()):
            p.info.state = models.ParticipantInfo.DISCONNECTED
            p.info.disconnect_reason = reason
            p.left.set()
        room.participants.clear()
        room.closed.set()
        room._touch()
        logger.debug("room %s closed (%s)", room.name, models.DisconnectReason.Name(reason))
        self.listener.room_closed(room)

    async def _watch(self, room: Room, empty_timeout: float, departure_timeout: float) -> None:
        """Close ``room`` by LiveKit's rule; one task per room, in the server nursery."""
        created = trio.current_time()
        while not room.closed.is_set():
            changed = room._changed
            if room.has_keepalive_participants():
                await changed.wait()
                continue
            if room.last_departure is not None:
                deadline = room.last_departure + departure_timeout
            elif room.ever_joined:
                deadline = created + departure_timeout
            else:
                deadline = created + empty_timeout
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            if not room.has_keepalive_participants():
                self._close(room, models.ROOM_CLOSED)

    # --- participants -----------------------------------------------------------

    def join(
        self,
        room: Room,
        info: models.ParticipantInfo,
        deliver: Callable[[Outbound], None] | None = None,
    ) -> Participant:
        """Add a participant; a second join with the same identity replaces the first."""
        if room.closed.is_set():
            raise RoomClosed(f"room {room.name!r} is closed")
        if not info.identity:
            raise ValueError("participant identity must not be empty")
        old = room.participants.get(info.identity)
        if old is not None:
            if old.deliver is not None:
                old.deliver(
                    rtc_pb.SignalResponse(
                        leave=rtc_pb.LeaveRequest(
                            reason=models.DUPLICATE_IDENTITY,
                            action=rtc_pb.LeaveRequest.DISCONNECT,
                        )
                    )
                )
            self.leave(room, info.identity, models.DUPLICATE_IDENTITY)
        if not info.sid:
            info.sid = new_sid("PA_")
        now = time.time()
        info.joined_at = int(now)
        info.joined_at_ms = int(now * 1000)
        info.state = models.ParticipantInfo.ACTIVE
        p = Participant(info=info, deliver=deliver)
        room.participants[info.identity] = p
        if not p.dependent:
            room.ever_joined = True
        room.info.num_participants = len(room.participants)
        room._touch()
        room.broadcast(
            rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[info])),
            exclude=info.identity,
        )
        self.listener.participant_joined(room, p)
        return p

    def leave(
        self,
        room: Room,
        identity: str,
        reason: models.DisconnectReason = models.CLIENT_INITIATED,
    ) -> bool:
        p = room.participants.pop(identity, None)
        if p is None:
            return False
        p.info.state = models.ParticipantInfo.DISCONNECTED
        p.info.disconnect_reason = reason
        for t in p.info.tracks:
            room.broadcast(
                rtc_pb.SignalResponse(
                    track_unpublished=rtc_pb.TrackUnpublishedResponse(track_sid=t.sid)
                )
            )
        room.broadcast(
            rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[p.info]))
        )
        if not p.dependent:
            room.last_departure = trio.current_time()
        room.info.num_participants = len(room.participants)
        p.left.set()
        room._touch()
        self.listener.participant_left(room, p)
        return True

    def update_participant(
        self,
        room: Room,
        identity: str,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: models.ParticipantPermission | None = None,
    ) -> models.ParticipantInfo:
        """Change a participant and broadcast it; an empty attribute value deletes the key."""
        p = room.participants.get(identity)
        if p is None:
            raise KeyError(identity)
        if name is not None:
            p.info.name = name
        if metadata is not None:
            p.info.metadata = metadata
        if attributes:
            for k, v in attributes.items():
                if v == "":
                    p.info.attributes.pop(k, None)
                else:
                    p.info.attributes[k] = v
        if permission is not None:
            p.info.permission.CopyFrom(permission)
        p.info.version += 1
        room.broadcast(
            rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[p.info]))
        )
        return p.info

    def update_metadata(self, room: Room, metadata: str) -> models.Room:
        # (LiveKit v1.13 leaves Room.version unset here, in the answer and the update)
        room.info.metadata = metadata
        snap = room.snapshot()
        room.broadcast(rtc_pb.SignalResponse(room_update=rtc_pb.RoomUpdate(room=snap)))
        return snap

    def publish_track(self, room: Room, identity: str, track: models.TrackInfo) -> models.TrackInfo:
        p = room.participants.get(identity)
        if p is None:
            raise KeyError(identity)
        if not track.sid:
            track.sid = new_sid("TR_")
        p.info.tracks.append(track)
        first = not p.info.is_publisher
        p.info.is_publisher = True
        p.info.version += 1
        room.broadcast(
            rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[p.info]))
        )
        if first:
            self.listener.track_published(room, p)
        return track

    def unpublish_track(self, room: Room, identity: str, track_sid: str) -> None:
        p = room.participants.get(identity)
        if p is None:
            raise KeyError(identity)
        kept = [t for t in p.info.tracks if t.sid != track_sid]
        del p.info.tracks[:]
        p.info.tracks.extend(kept)
        p.info.version += 1
        room.broadcast(
            rtc_pb.SignalResponse(
                track_unpublished=rtc_pb.TrackUnpublishedResponse(track_sid=track_sid)
            )
        )
        room.broadcast(
            rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[p.info]))
        )
