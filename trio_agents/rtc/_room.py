"""``Room``: the trio-native room, its model and its events.

Lifecycle (no hidden tasks; the caller's nursery owns the connection)::

    room = rtc.Room()
    await nursery.start(room.run, url, token, rtc.RoomOptions())
    ...                              # connected: participants, events, publishing
    await room.disconnect()          # or cancel the nursery; or the server ends it

``run`` returns (with the ``DisconnectReason``) when the server sends leave
(room deleted/closed, duplicate identity, removed), when the socket drops,
or after ``disconnect()``; cancelled, it sends leave and closes the socket
(shielded, bounded) before re-raising.  Either way the last event is
``Disconnected(reason)`` and ``disconnect_reason`` is set.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast, overload

import attrs
import trio
from livekit.protocol import models

from ._audio import AudioFrame
from ._backend import Link, RoomOptions, closing_deadline, open_link
from ._enums import ConnectionState, DisconnectReason, ParticipantKind, TrackKind, TrackSource
from ._errors import ConnectError, NotConnectedError
from ._events import (
    EVENT_NAMES,
    DataReceived,
    Disconnected,
    LocalTrackPublished,
    LocalTrackUnpublished,
    Participant,
    ParticipantAttributesChanged,
    ParticipantConnected,
    ParticipantDisconnected,
    ParticipantMetadataChanged,
    ParticipantNameChanged,
    RoomEvent,
    RoomMetadataChanged,
    TextReceived,
    TrackPublished,
    TrackSubscribed,
    TrackUnpublished,
    TrackUnsubscribed,
)
from ._participant import LocalParticipant, RemoteParticipant
from ._track import LocalTrackPublication, RemoteAudioTrack, RemoteTrackPublication

logger = logging.getLogger("trio_agents.rtc")

#: How long ``disconnect()`` waits for the server to close before cutting the link.
DISCONNECT_TIMEOUT = 2.0
#: Default per-subscriber buffer of ``Room.events()``.
DEFAULT_EVENT_BUFFER = 1024
#: Largest text stream the room assembles (bigger ones are dropped with a warning).
MAX_TEXT_BYTES = 16 * 1024 * 1024

EventHandler = Callable[[Any], object]
H = TypeVar("H", bound=EventHandler)
E = TypeVar("E", bound=RoomEvent)


class _Phase:
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ENDED = "ended"


class _Changes:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@attrs.define
class _TextAssembly:
    sender: str
    topic: str
    chunks: list[bytes] = attrs.field(factory=list)
    size: int = 0


class EventSubscription(Generic[E]):
    """One subscriber of ``Room.events()``: an async iterator and async context manager.

    Events are buffered from ``events()`` on, up to ``max_buffer``; when full
    the *oldest* buffered event is dropped and counted in ``dropped`` (with a
    warning logged once).  Iteration ends once the room has disconnected
    (after its ``Disconnected`` event, unless filtered out) or when closed.
    """

    def __init__(self, room: Room, types_: tuple[type[RoomEvent], ...], max_buffer: int) -> None:
        self._room = room
        self._types = types_
        self._max = max_buffer
        self._buffer: collections.deque[E] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        #: Events dropped because the buffer was full.
        self.dropped = 0

    def _push(self, event: RoomEvent) -> None:
        if self._closed or (self._types and not isinstance(event, self._types)):
            return
        wanted = cast("E", event)
        if len(self._buffer) >= self._max:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "a room event subscriber is %d events behind; dropping the oldest", self._max
                )
        self._buffer.append(wanted)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> EventSubscription[E]:
        return self

    async def __anext__(self) -> E:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        return self._buffer.popleft()

    async def aclose(self) -> None:
        self._room._subscriptions.discard(self)
        self._buffer.clear()
        self._end()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> EventSubscription[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()


class Room:
    """A LiveKit room, trio-native.  See the module doc for the lifecycle.

    Callback style: ``room.on("participant_connected")(handler)`` or
    ``room.on("participant_connected", handler)``.  Handlers are sync, run in
    the trio thread in event order, and receive the typed event object (one
    argument, unlike the SDK's positional arguments).  An exception in a
    handler is logged, never propagated.

    Iterator style: ``async with room.events() as events: async for ev in events``.
    """

    def __init__(self) -> None:
        self._phase = _Phase.NEW
        self._name = ""
        self._sid = ""
        self._metadata = ""
        self._local: LocalParticipant | None = None
        self._remotes: dict[str, RemoteParticipant] = {}
        self._publications: dict[str, tuple[RemoteParticipant, RemoteTrackPublication]] = {}
        self._texts: dict[tuple[str, str], _TextAssembly] = {}
        self._handlers: dict[str, list[EventHandler]] = {}
        self._subscriptions: set[EventSubscription[Any]] = set()
        self._link: Link | None = None
        self._run_scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._changed = _Changes()
        self._failed_connects = 0
        self.disconnect_reason: DisconnectReason | None = None
        #: The owner's deadline (trio time) for leaving and closing the link:
        #: ``disconnect()`` and the link's shielded close end by it, whatever
        #: their own bounds.  A job sets it to its teardown deadline.
        self.close_deadline: float | None = None

    # --- state ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def sid(self) -> str:
        return self._sid

    @property
    def metadata(self) -> str:
        return self._metadata

    @property
    def local_participant(self) -> LocalParticipant:
        """This client's participant (available from connect on, kept after disconnect).

        Raises:
            NotConnectedError: the room never connected.
        """
        if self._local is None:
            raise NotConnectedError("the room has not connected yet: no local participant")
        return self._local

    @property
    def remote_participants(self) -> Mapping[str, RemoteParticipant]:
        """identity -> ``RemoteParticipant`` (a read-only live view).

        As in the livekit SDK, the last participants stay listed after the
        room disconnected (no ``ParticipantDisconnected`` is emitted for them);
        check ``isconnected()`` before trusting the list.
        """
        return types.MappingProxyType(self._remotes)

    @property
    def connection_state(self) -> ConnectionState:
        if self._phase == _Phase.CONNECTED:
            return ConnectionState.CONN_CONNECTED
        return ConnectionState.CONN_DISCONNECTED

    def isconnected(self) -> bool:
        return self._phase == _Phase.CONNECTED

    # --- lifecycle --------------------------------------------------------------------

    async def run(
        self,
        url: str,
        token: str,
        options: RoomOptions | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> DisconnectReason:
        """Connect, report ``started()`` once joined, and pump events until the end.

        Use with ``await nursery.start(room.run, url, token, options)``.  The
        backend is chosen from ``url``: ``memory://NAME``, ``sim+ws://`` and
        ``sim+wss://`` are simulated (stand-in server); ``ws(s)://`` is the
        livekit backend (the official SDK, driven on the asyncio bridge; a
        bridge is opened for the run if none is open, see
        ``open_asyncio_bridge``).

        Returns:
            why the connection ended (also in ``disconnect_reason``).

        Raises:
            ConnectError: rejected (the server's reason is in the message),
                unreachable, or no backend for ``url``.  The room may then be
                run again.
            RuntimeError: the room is already running or has run.
        """
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        if options is None:
            options = RoomOptions()
        elif not isinstance(options, RoomOptions):
            raise TypeError(f"options must be a RoomOptions, not {type(options).__name__}")
        if self._phase != _Phase.NEW:
            raise RuntimeError(f"Room.run() called on a room that is {self._phase}; use a new Room")
        link = open_link(url, token, options)
        self._phase = _Phase.CONNECTING
        self._link = link
        connected = False
        reason = DisconnectReason.UNKNOWN_REASON

        def on_connected() -> None:
            nonlocal connected
            connected = True
            self._phase = _Phase.CONNECTED
            self._changed.notify()
            task_status.started()

        try:
            with trio.CancelScope() as scope:
                self._run_scope = scope
                reason = await link.run(self, on_connected)
            if scope.cancelled_caught:
                if not connected:
                    raise ConnectError("the connection attempt was cancelled by disconnect()")
                reason = DisconnectReason.CLIENT_INITIATED  # disconnect() gave up waiting
        except BaseException:
            if connected:
                reason = DisconnectReason.CLIENT_INITIATED
            raise
        finally:
            self._run_scope = None
            if connected:
                self._finish(reason)
            else:
                self._phase = _Phase.NEW
                self._link = None
                self._reset()
                self._failed_connects += 1
                self._changed.notify()  # waiters through connecting: it failed
        return reason

    async def disconnect(self) -> None:
        """Leave the room and wait (bounded) until ``run`` has ended.

        Idempotent; returns at once when not connected.  A connection still
        being set up is cancelled.
        """
        if self._phase == _Phase.CONNECTING and self._run_scope is not None:
            self._run_scope.cancel()
            await trio.lowlevel.checkpoint()
            return
        if self._phase != _Phase.CONNECTED or self._link is None:
            await trio.lowlevel.checkpoint()
            return
        with contextlib.suppress(NotConnectedError):
            self._link.request_leave()
        with trio.move_on_at(closing_deadline(self, DISCONNECT_TIMEOUT)):
            await self._done.wait()
        if not self._done.is_set():
            logger.warning(
                "the server did not close the room link within %.1f s; closing it",
                DISCONNECT_TIMEOUT,
            )
            if self._run_scope is not None:
                self._run_scope.cancel()
            await self._done.wait()  # run's own cleanup is bounded

    async def wait_disconnected(self) -> DisconnectReason:
        """Wait until a connected room has disconnected; returns the reason."""
        await self._done.wait()
        assert self.disconnect_reason is not None
        return self.disconnect_reason

    async def wait_for_participant(
        self,
        *,
        identity: str | None = None,
        kind: ParticipantKind | Iterable[ParticipantKind] | None = None,
    ) -> RemoteParticipant:
        """The first remote participant (present or joining) matching ``identity`` and ``kind``.

        Waits through connecting (and, on a new room, until ``run`` starts).
        Once the room has disconnected nobody is present: its leftovers in
        ``remote_participants`` are not a match.

        Raises:
            NotConnectedError: the room disconnected, or its connection
                attempt failed, before a matching participant joined.
        """
        kinds: set[int] | None
        if kind is None:
            kinds = None
        elif isinstance(kind, int):
            kinds = {int(kind)}
        else:
            kinds = {int(k) for k in kind}
        failed_connects = self._failed_connects
        while True:
            if self._phase == _Phase.ENDED:
                raise NotConnectedError(
                    "the room disconnected before a matching participant joined"
                )
            if self._failed_connects != failed_connects:
                raise NotConnectedError(
                    "the room's connection attempt failed before a matching participant joined"
                )
            for p in self._remotes.values():
                if identity is not None and p.identity != identity:
                    continue
                if kinds is None or int(p.kind) in kinds:
                    return p
            await self._changed.wait()

    # --- events --------------------------------------------------------------------------

    @overload
    def on(self, event: str) -> Callable[[H], H]: ...

    @overload
    def on(self, event: str, callback: H) -> H: ...

    def on(self, event: str, callback: H | None = None) -> H | Callable[[H], H]:
        """Register a sync ``callback(event_object)`` for the event named ``event``.

        Raises:
            ValueError: unknown event name.
            TypeError: ``callback`` is not callable or is an async function.
        """
        if event not in EVENT_NAMES:
            known = ", ".join(sorted(EVENT_NAMES))
            raise ValueError(f"event: unknown room event {event!r} (known: {known})")

        def register(fn: H) -> H:
            if not callable(fn):
                raise TypeError("callback must be callable")
            if inspect.iscoroutinefunction(fn):
                raise TypeError(
                    "callback must be a sync function (it runs in the trio thread); "
                    "use room.events() to await things"
                )
            self._handlers.setdefault(event, []).append(fn)
            return fn

        if callback is None:
            return register
        return register(callback)

    def off(self, event: str, callback: EventHandler) -> None:
        """Remove a handler registered with ``on`` (no error if absent)."""
        handlers = self._handlers.get(event, [])
        if callback in handlers:
            handlers.remove(callback)

    @overload
    def events(self, *, max_buffer: int = DEFAULT_EVENT_BUFFER) -> EventSubscription[RoomEvent]: ...

    @overload
    def events(
        self, first: type[E], /, *types_: type[E], max_buffer: int = DEFAULT_EVENT_BUFFER
    ) -> EventSubscription[E]: ...

    def events(
        self, *types_: type[Any], max_buffer: int = DEFAULT_EVENT_BUFFER
    ) -> EventSubscription[Any]:
        """Subscribe to events (all, or only instances of ``types_``) from now on.

        Use ``async with room.events() as events: async for ev in events: ...``.
        Each subscriber has its own buffer of ``max_buffer`` events; on
        overflow the oldest is dropped and counted (``subscription.dropped``).
        Iteration ends once the room has disconnected (after the
        ``Disconnected`` event, if it is wanted); a subscription made after
        the room ended yields nothing.
        """
        if not isinstance(max_buffer, int) or max_buffer <= 0:
            raise ValueError(f"max_buffer must be an int > 0, got {max_buffer!r}")
        for t in types_:
            if t not in EVENT_NAMES.values():
                raise TypeError(f"types_: {t!r} is not a room event class")
        sub: EventSubscription[Any] = EventSubscription(self, tuple(types_), max_buffer)
        if self._phase == _Phase.ENDED:
            sub._end()
        else:
            self._subscriptions.add(sub)
        return sub

    def _emit(self, event: RoomEvent) -> None:
        for handler in list(self._handlers.get(event.name, ())):
            try:
                handler(event)
            except Exception:
                logger.exception("error in the %r handler %r", event.name, handler)
        for sub in list(self._subscriptions):
            sub._push(event)

    # --- for participants and publications --------------------------------------

    def _require_link(self) -> Link:
        if self._phase != _Phase.CONNECTED or self._link is None:
            raise NotConnectedError("the room is not connected")
        return self._link

    def _local_published(self, publication: LocalTrackPublication) -> None:
        self._emit(LocalTrackPublished(publication, publication.track))

    def _local_unpublished(self, track_sid: str) -> None:
        local = self._local
        if local is None:
            return
        pub = local.track_publications.pop(track_sid, None)
        if pub is not None:
            pub.track.sid = ""
            self._emit(LocalTrackUnpublished(pub))

    def _request_subscription(self, publication: RemoteTrackPublication, subscribed: bool) -> None:
        link = self._require_link()
        if subscribed:
            if not publication.subscribed:
                link.set_subscribed(publication.sid, True)
            return
        link.set_subscribed(publication.sid, False)
        entry = self._publications.get(publication.sid)
        if entry is not None:
            self._unsubscribe(entry[0], publication)

    # --- LinkSink: applying what the server says ----------------------------------

    def on_join(
        self,
        room: models.Room,
        participant: models.ParticipantInfo,
        others: Sequence[models.ParticipantInfo],
    ) -> None:
        self._name = room.name
        self._sid = room.sid
        self._metadata = room.metadata
        self._local = LocalParticipant(participant, self)
        for info in others:
            if info.state != models.ParticipantInfo.DISCONNECTED:
                p = RemoteParticipant(info)
                self._remotes[p.identity] = p
                for t in info.tracks:
                    self._add_publication(p, t)

    def on_participants(self, infos: Sequence[models.ParticipantInfo]) -> None:
        for info in infos:
            local = self._local
            if local is not None and info.sid == local.sid:
                self._update_fields(local, info)
                continue
            existing = self._remotes.get(info.identity)
            if info.state == models.ParticipantInfo.DISCONNECTED:
                if existing is not None and existing.sid == info.sid:
                    reason = DisconnectReason.from_proto(info.disconnect_reason)
                    self._remove_participant(existing, reason)
                continue
            if existing is not None and existing.sid != info.sid:
                # replaced without a DISCONNECTED update (duplicate identity)
                self._remove_participant(existing, DisconnectReason.DUPLICATE_IDENTITY)
                existing = None
            if existing is None:
                p = RemoteParticipant(info)
                self._remotes[p.identity] = p
                self._emit(ParticipantConnected(p))
                for t in info.tracks:
                    pub = self._add_publication(p, t)
                    self._emit(TrackPublished(pub, p))
            else:
                if info.version and info.version < existing._version:
                    continue  # stale
                self._update_fields(existing, info)
                self._update_tracks(existing, info)
        self._changed.notify()

    def on_room(self, room: models.Room) -> None:
        old = self._metadata
        self._metadata = room.metadata
        if room.name:
            self._name = room.name
        if room.sid:
            self._sid = room.sid
        if old != room.metadata:
            self._emit(RoomMetadataChanged(old, room.metadata))
        self._changed.notify()

    def on_track_unpublished(self, track_sid: str) -> None:
        entry = self._publications.get(track_sid)
        if entry is not None:
            participant, pub = entry
            self._remove_publication(participant, pub)
        elif self._local is not None and track_sid in self._local.track_publications:
            self._local_unpublished(track_sid)
        self._changed.notify()

    def on_track_subscribed(self, track_sid: str) -> None:
        entry = self._publications.get(track_sid)
        if entry is None:
            return
        participant, pub = entry
        if pub.subscribed:
            return
        pub._subscribed = True
        if pub.kind == TrackKind.KIND_AUDIO:
            track = RemoteAudioTrack(pub.sid, pub.name)
            pub.track = track
            self._emit(TrackSubscribed(track, pub, participant))
        self._changed.notify()

    def on_data(self, packet: models.DataPacket) -> None:
        sender = packet.participant_identity
        participant = self._remotes.get(sender) if sender else None
        kind = packet.WhichOneof("value")
        if kind == "user":
            self._emit(DataReceived(packet.user.payload, participant, packet.user.topic))
        elif kind == "stream_header":
            header = packet.stream_header
            if header.WhichOneof("content_header") != "text_header":
                logger.debug("ignoring a byte stream from %s (not supported)", sender)
                return
            self._texts[(sender, header.stream_id)] = _TextAssembly(sender, header.topic)
        elif kind == "stream_chunk":
            text = self._texts.get((sender, packet.stream_chunk.stream_id))
            if text is not None:
                text.size += len(packet.stream_chunk.content)
                if text.size > MAX_TEXT_BYTES:
                    logger.warning(
                        "dropping a text stream from %s over %d bytes", sender, MAX_TEXT_BYTES
                    )
                    del self._texts[(sender, packet.stream_chunk.stream_id)]
                    return
                text.chunks.append(packet.stream_chunk.content)
        elif kind == "stream_trailer":
            text = self._texts.pop((sender, packet.stream_trailer.stream_id), None)
            if text is not None:
                body = b"".join(text.chunks).decode("utf-8", "replace")
                self._emit(TextReceived(body, participant, text.topic))
        else:
            logger.debug("ignoring data packet of kind %s", kind)

    def on_audio(self, track_sid: str, frame: AudioFrame) -> None:
        entry = self._publications.get(track_sid)
        if entry is not None and entry[1].track is not None:
            entry[1].track._push(frame)

    def on_track_unsubscribed(self, track_sid: str) -> None:
        entry = self._publications.get(track_sid)
        if entry is not None:
            self._unsubscribe(*entry)
            self._changed.notify()

    def on_text(self, sender_identity: str, topic: str, text: str) -> None:
        participant = self._remotes.get(sender_identity) if sender_identity else None
        self._emit(TextReceived(text, participant, topic))

    # --- model helpers --------------------------------------------------------------

    def _add_publication(
        self, participant: RemoteParticipant, info: models.TrackInfo
    ) -> RemoteTrackPublication:
        pub = RemoteTrackPublication(
            info.sid,
            info.name,
            TrackKind.from_proto(info.type),
            TrackSource.from_proto(info.source),
            info.muted,
            self._request_subscription,
        )
        participant.track_publications[pub.sid] = pub
        self._publications[pub.sid] = (participant, pub)
        return pub

    def _update_tracks(self, participant: RemoteParticipant, info: models.ParticipantInfo) -> None:
        current = {t.sid: t for t in info.tracks}
        for sid, pub in list(participant.track_publications.items()):
            if sid not in current:
                self._remove_publication(participant, pub)
            else:
                pub.muted = current[sid].muted
        for sid, t in current.items():
            if sid not in participant.track_publications:
                pub = self._add_publication(participant, t)
                self._emit(TrackPublished(pub, participant))

    def _unsubscribe(self, participant: RemoteParticipant, pub: RemoteTrackPublication) -> None:
        if not pub.subscribed:
            return
        pub._subscribed = False
        track, pub.track = pub.track, None
        if track is not None:
            track._end()
            self._emit(TrackUnsubscribed(track, pub, participant))

    def _remove_publication(
        self, participant: RemoteParticipant, pub: RemoteTrackPublication
    ) -> None:
        self._unsubscribe(participant, pub)
        participant.track_publications.pop(pub.sid, None)
        self._publications.pop(pub.sid, None)
        self._emit(TrackUnpublished(pub, participant))

    def _remove_participant(self, participant: RemoteParticipant, reason: DisconnectReason) -> None:
        for pub in list(participant.track_publications.values()):
            self._remove_publication(participant, pub)
        self._remotes.pop(participant.identity, None)
        participant.disconnect_reason = reason
        self._emit(ParticipantDisconnected(participant))

    def _update_fields(self, p: Participant, info: models.ParticipantInfo) -> None:
        p._version = max(p._version, info.version)
        if info.name != p.name:
            old, p.name = p.name, info.name
            self._emit(ParticipantNameChanged(p, old, info.name))
        if info.metadata != p.metadata:
            old, p.metadata = p.metadata, info.metadata
            self._emit(ParticipantMetadataChanged(p, old, info.metadata))
        new_attrs = dict(info.attributes)
        if new_attrs != p.attributes:
            changed = {k: v for k, v in new_attrs.items() if p.attributes.get(k) != v}
            changed.update({k: "" for k in p.attributes if k not in new_attrs})
            p.attributes.clear()
            p.attributes.update(new_attrs)
            self._emit(ParticipantAttributesChanged(p, changed))

    def _finish(self, reason: DisconnectReason) -> None:
        self._phase = _Phase.ENDED
        self._link = None
        self.disconnect_reason = reason
        for _participant, pub in list(self._publications.values()):
            if pub.track is not None:
                pub.track._end()
        self._texts.clear()
        self._emit(Disconnected(reason))
        for sub in list(self._subscriptions):
            sub._end()
        self._subscriptions.clear()
        self._done.set()
        self._changed.notify()

    def _reset(self) -> None:
        self._local = None
        self._remotes.clear()
        self._publications.clear()
        self._name = self._sid = self._metadata = ""

    def __repr__(self) -> str:
        return f"<rtc.Room {self._name!r} {self._phase}>"


@contextlib.asynccontextmanager
async def connect_room(
    url: str, token: str, *, options: RoomOptions | None = None
) -> AsyncIterator[Room]:
    """``async with connect_room(url, token) as room:`` — a connected room for the block.

    Owns its own nursery: on exit the room is disconnected (bounded); if the
    server ends the connection meanwhile, the block keeps running with a
    disconnected room (check ``room.isconnected()`` or ``wait_disconnected``).
    Errors arrive as themselves (``ConnectError``, or what the block raised),
    not inside an exception group.
    """
    room = Room()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(room.run, url, token, options)
            try:
                yield room
            finally:
                with trio.move_on_after(DISCONNECT_TIMEOUT + 1, shield=True):
                    await room.disconnect()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the room's task ends without error once disconnected: the group holds
        # what the block (or the connect) raised, alone
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise
