"""The livekit backend: a ``Link`` driving the official SDK (``livekit.rtc``).

Every SDK object is built and used on the asyncio bridge's loop thread
(``_bridge``); this module's trio side only exchanges plain values with it:

* SDK room events are turned, on the loop thread, into the ``Link`` currency
  (``models.ParticipantInfo``, ``models.Room``, ``models.DataPacket``, PCM
  bytes) and handed to trio in batches through one bounded ``EventPipe``; the
  trio side applies them to the ``Room`` in order.
* Remote audio: one SDK ``AudioStream`` per subscribed audio track, pumped on
  the loop into the same pipe (so a track's frames follow its subscription).
* Local audio: a trio sender per published track forwards the frames of the
  trio ``AudioSource`` to an SDK ``AudioSource`` (the SDK paces playout).

Connect is never cancelled on the SDK side (cancelling it after the server
accepted makes the native client panic and SIGTERM the process): a cancelled
or timed-out connect is abandoned, and disconnected when it completes.
Closing never waits beyond the caller's cancel scope: the SDK-side cleanup is
handed to the bridge, which finishes it (bounded) when it closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import trio
from livekit.protocol import models

from ._audio import AudioFrame
from ._backend import LinkSink, RoomOptions, closing_deadline
from ._bridge import AsyncioBridge, EventPipe, new_pipe, use_asyncio_bridge
from ._enums import DisconnectReason, TrackSource
from ._errors import ConnectError, NotConnectedError
from ._track import LocalAudioTrack

logger = logging.getLogger("trio_agents.rtc")

#: A closing link's own bound, when no owner's deadline is sooner (the room's
#: ``close_deadline``, a job's teardown deadline, usually is).
CLOSE_BOUND = 2.0

#: Capacity of the room's event pipe (room events and remote audio frames).
EVENT_CAPACITY = 10_000
#: Text-stream topics received when ``RoomOptions.text_topics`` is None.
DEFAULT_TEXT_TOPICS = ("", "chat", "lk.chat")
#: Frames handed to the SDK per crossing, at most.
SEND_BATCH = 10


def _sdk() -> Any:
    from livekit import rtc as lk_rtc

    return lk_rtc


# --- SDK -> model (loop thread) -------------------------------------------------------


def _track_info(pub: Any) -> models.TrackInfo:
    sdk = _sdk()
    kind = pub.kind
    if kind == sdk.TrackKind.KIND_AUDIO:
        type_ = models.AUDIO
    elif kind == sdk.TrackKind.KIND_VIDEO:
        type_ = models.VIDEO
    else:
        type_ = models.DATA
    return models.TrackInfo(
        sid=pub.sid,
        name=pub.name,
        type=type_,
        source=cast("models.TrackSource", int(pub.source)),
        muted=pub.muted,
    )


def _participant_info(
    p: Any, *, state: models.ParticipantInfo.State = models.ParticipantInfo.ACTIVE
) -> models.ParticipantInfo:
    info = models.ParticipantInfo(
        sid=p.sid,
        identity=p.identity,
        name=p.name,
        metadata=p.metadata,
        attributes=dict(p.attributes),
        kind=cast("models.ParticipantInfo.Kind", int(p.kind)),
        state=state,
    )
    for pub in p.track_publications.values():
        info.tracks.append(_track_info(pub))
    if state == models.ParticipantInfo.DISCONNECTED:
        reason = int(getattr(p, "disconnect_reason", 0) or 0)
        info.disconnect_reason = cast("models.DisconnectReason", reason)
    return info


class _LoopSide:
    """What lives on the loop thread for one link: the SDK room, streams, sources."""

    def __init__(
        self, bridge: AsyncioBridge, events: EventPipe[tuple[Any, ...]], options: RoomOptions
    ) -> None:
        self.bridge = bridge
        self.events = events
        self.options = options
        self.room: Any = None
        self.pumps: dict[str, asyncio.Task[None]] = {}
        self.sources: dict[str, Any] = {}  # track sid -> SDK AudioSource
        self.closed = False
        self.remove_closer: Callable[[], None] = lambda: None

    # connect ---------------------------------------------------------------------------

    async def connect(
        self, url: str, token: str
    ) -> tuple[models.Room, models.ParticipantInfo, list[models.ParticipantInfo]]:
        sdk = _sdk()
        room = sdk.Room(loop=asyncio.get_running_loop())
        self.room = room
        self.remove_closer = self.bridge.add_closer(self.close)
        self._install(room)
        opts = self.options
        sdk_options = sdk.RoomOptions(
            auto_subscribe=opts.auto_subscribe,
            connect_timeout=opts.connect_timeout,
        )
        if opts.e2ee is not None:
            sdk_options.encryption = opts.e2ee
        if opts.rtc_config is not None:
            sdk_options.rtc_config = opts.rtc_config
        try:
            await room.connect(url, token, sdk_options)
        except sdk.ConnectError as exc:
            raise ConnectError(f"cannot join the room at {url}: {exc.message}") from None
        sid = ""
        with contextlib.suppress(TimeoutError, RuntimeError):
            sid = await asyncio.wait_for(room.sid, 1.0)
        info = models.Room(name=room.name, sid=sid, metadata=room.metadata)
        local = _participant_info(room.local_participant)
        others = [_participant_info(p) for p in room.remote_participants.values()]
        # tracks already subscribed at connect (auto_subscribe) come as events
        return info, local, others

    def abandoned(self, task: asyncio.Task[Any]) -> None:
        """A connect trio gave up on finished: leave if it succeeded."""
        self.bridge.spawn(self.close(), orphan=True)

    # events ------------------------------------------------------------------------

    def _install(self, room: Any) -> None:
        put = self.events.put
        sdk = _sdk()

        def participants(p: Any, *_: Any) -> None:
            put(("participants", [_participant_info(p)]))

        room.on("participant_connected", participants)
        room.on("participant_metadata_changed", participants)
        room.on("participant_name_changed", participants)
        room.on(
            "participant_disconnected",
            lambda p: put(
                ("participants", [_participant_info(p, state=models.ParticipantInfo.DISCONNECTED)])
            ),
        )
        room.on("participant_attributes_changed", lambda _changed, p: participants(p))
        room.on("track_published", lambda _pub, p: participants(p))
        room.on("track_muted", lambda p, _pub: participants(p))
        room.on("track_unmuted", lambda p, _pub: participants(p))
        room.on("track_unpublished", lambda pub, _p: put(("unpublished", pub.sid)))

        def subscribed(track: Any, pub: Any, _p: Any) -> None:
            if pub.kind == sdk.TrackKind.KIND_AUDIO and pub.sid not in self.pumps:
                stream = sdk.AudioStream(track)
                self.pumps[pub.sid] = self.bridge.spawn(self._pump(pub.sid, stream))
            put(("subscribed", pub.sid))

        def unsubscribed(_track: Any, pub: Any, _p: Any) -> None:
            pump = self.pumps.pop(pub.sid, None)
            if pump is not None:
                pump.cancel()
            put(("unsubscribed", pub.sid))

        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        room.on(
            "room_metadata_changed",
            lambda _old, new: put(("room", models.Room(name=room.name, metadata=new))),
        )

        def data(packet: Any) -> None:
            identity = packet.participant.identity if packet.participant is not None else ""
            put(
                (
                    "data",
                    models.DataPacket(
                        kind=cast("models.DataPacket.Kind", int(packet.kind)),
                        participant_identity=identity,
                        user=models.UserPacket(
                            payload=bytes(packet.data),
                            topic=packet.topic or "",
                            participant_identity=identity,
                        ),
                    ),
                )
            )

        room.on("data_received", data)

        def disconnected(reason: Any) -> None:
            put(("disconnected", int(reason)))

        room.on("disconnected", disconnected)

        topics = self.options.text_topics
        for topic in DEFAULT_TEXT_TOPICS if topics is None else topics:

            def on_text(reader: Any, identity: str, topic: str = topic) -> None:
                self.bridge.spawn(self._read_text(reader, identity, topic))

            room.register_text_stream_handler(topic, on_text)

    async def _read_text(self, reader: Any, identity: str, topic: str) -> None:
        text = await reader.read_all()
        self.events.put(("text", identity, topic, text))

    async def _pump(self, sid: str, stream: Any) -> None:
        put = self.events.put
        try:
            async for ev in stream:
                f = ev.frame
                put(
                    (
                        "audio",
                        sid,
                        bytes(f.data),
                        f.sample_rate,
                        f.num_channels,
                        f.samples_per_channel,
                    )
                )
        finally:
            await stream.aclose()

    # outbound (loop thread) ---------------------------------------------------------

    def _local(self) -> Any:
        if self.room is None or not self.room.isconnected():
            raise NotConnectedError("the room is not connected")
        return self.room.local_participant

    async def send_data(self, packets: Sequence[models.DataPacket]) -> None:
        lp = self._local()
        texts: dict[str, tuple[models.DataStream.Header, list[bytes], list[str]]] = {}
        for packet in packets:
            kind = packet.WhichOneof("value")
            dest = list(packet.destination_identities)
            if kind == "user":
                await lp.publish_data(
                    packet.user.payload,
                    reliable=packet.kind == models.DataPacket.RELIABLE,
                    destination_identities=dest,
                    topic=packet.user.topic,
                )
            elif kind == "stream_header":
                texts[packet.stream_header.stream_id] = (packet.stream_header, [], dest)
            elif kind == "stream_chunk":
                texts[packet.stream_chunk.stream_id][1].append(packet.stream_chunk.content)
            elif kind == "stream_trailer":
                header, chunks, dest = texts.pop(packet.stream_trailer.stream_id)
                await lp.send_text(
                    b"".join(chunks).decode(),
                    topic=header.topic,
                    destination_identities=dest,
                    attributes=dict(header.attributes) or None,
                )
            else:
                raise ValueError(f"cannot send a data packet of kind {kind!r}")

    async def update_metadata(
        self, name: str | None, metadata: str | None, attributes: Mapping[str, str] | None
    ) -> models.ParticipantInfo:
        lp = self._local()
        # (the SDK reports no refusal: a participant without the
        # can_update_own_metadata grant sees no change, and no error)
        if attributes:
            await lp.set_attributes(dict(attributes))
        if metadata:
            await lp.set_metadata(metadata)
        if name:
            await lp.set_name(name)
        return _participant_info(lp)

    async def publish_track(
        self, name: str, sample_rate: int, num_channels: int, source: int
    ) -> models.TrackInfo:
        sdk = _sdk()
        lp = self._local()
        src = sdk.AudioSource(sample_rate, num_channels)
        track = sdk.LocalAudioTrack.create_audio_track(name, src)
        options = sdk.TrackPublishOptions(source=source)
        try:
            pub = await lp.publish_track(track, options)
        except BaseException:
            await src.aclose()
            raise
        self.sources[pub.sid] = src
        return models.TrackInfo(
            sid=pub.sid,
            name=pub.name or name,
            type=models.AUDIO,
            source=cast("models.TrackSource", source),
        )

    async def capture(self, sid: str, frames: list[AudioFrame]) -> None:
        src = self.sources.get(sid)
        if src is None:
            return
        sdk = _sdk()
        for f in frames:
            await src.capture_frame(
                sdk.AudioFrame(f.data, f.sample_rate, f.num_channels, f.samples_per_channel)
            )

    def clear(self, sid: str) -> None:
        src = self.sources.get(sid)
        if src is not None:
            src.clear_queue()

    async def wait_for_playout(self) -> None:
        for src in list(self.sources.values()):
            await src.wait_for_playout()

    async def unpublish_track(self, sid: str) -> None:
        src = self.sources.pop(sid, None)
        try:
            await self._local().unpublish_track(sid)
        finally:
            if src is not None:
                await src.aclose()

    def set_subscribed(self, sid: str, subscribed: bool) -> None:
        if self.room is None:
            return
        for p in self.room.remote_participants.values():
            pub = p.track_publications.get(sid)
            if pub is not None:
                pub.set_subscribed(subscribed)
                return

    async def leave(self) -> None:
        room = self.room
        if room is not None and room.isconnected():
            logger.debug("leaving the room")
            await room.disconnect()
        # the SDK emits "disconnected" only when it still saw the room connected
        self.events.put(("disconnected", int(models.CLIENT_INITIATED)))

    async def close(self) -> None:
        """Leave and release every SDK resource (idempotent; bridge closer)."""
        # idempotent per resource: also called for a connect abandoned while
        # it ran, and again when that connect completes
        self.closed = True
        self.remove_closer()
        pumps = list(self.pumps.values())
        self.pumps.clear()
        for pump in pumps:
            pump.cancel()
        if pumps:
            logger.debug("closing %d audio streams", len(pumps))
            await asyncio.wait(pumps)
        for src in list(self.sources.values()):
            logger.debug("closing an audio source")
            await src.aclose()
        self.sources.clear()
        room = self.room
        if room is not None and room.isconnected():
            logger.debug("disconnecting the room")
            await room.disconnect()
        logger.debug("the room link is closed")
        self.events.close()


class _Sender:
    """Forwards one published track's frames from the trio ``AudioSource`` to the SDK's."""

    def __init__(self, link: LivekitLink, sid: str, track: LocalAudioTrack) -> None:
        self.link = link
        self.sid = sid
        self.track = track
        self.frames: collections.deque[AudioFrame] = collections.deque()
        self.in_flight = 0
        self.lot = trio.lowlevel.ParkingLot()
        self.stopped = False

    # FrameSink (trio thread)
    def push(self, play_at: float, frame: AudioFrame) -> None:
        if not self.stopped:
            self.frames.append(frame)
            self.lot.unpark_all()

    def clear(self) -> None:
        self.frames.clear()
        self.lot.unpark_all()
        if self.link._bridge is not None and not self.stopped:
            self.link._bridge.call_soon(self.link._loop_side.clear, self.sid)

    def stop(self) -> None:
        self.stopped = True
        self.track.source._remove_sink(self)
        self.frames.clear()
        self.lot.unpark_all()

    async def run(self) -> None:
        bridge = self.link._bridge
        assert bridge is not None
        try:
            while True:
                while not self.frames:
                    if self.stopped:
                        return
                    await self.lot.park()
                batch: list[AudioFrame] = []
                while self.frames and len(batch) < SEND_BATCH:
                    batch.append(self.frames.popleft())
                self.in_flight = len(batch)
                try:
                    await bridge.run(self.link._loop_side.capture, self.sid, batch)
                finally:
                    self.in_flight = 0
                    self.lot.unpark_all()
        finally:
            self.stop()

    async def wait_idle(self) -> None:
        while (self.frames or self.in_flight) and not self.stopped:
            await self.lot.park()


class LivekitLink:
    """``Link`` over the official SDK (see module doc)."""

    def __init__(self, url: str, token: str, options: RoomOptions) -> None:
        self._url = url
        self._token = token
        self._options = options
        self._bridge: AsyncioBridge | None = None
        self._loop_side: _LoopSide = None  # type: ignore[assignment]  # set in run
        self._sink: LinkSink | None = None
        self._nursery: trio.Nursery | None = None
        self._senders: dict[str, _Sender] = {}
        self._connected = False
        self._closed = False
        self._leave_requested = False

    async def run(self, sink: LinkSink, on_connected: Callable[[], None]) -> DisconnectReason:
        async with use_asyncio_bridge() as bridge:
            self._bridge = bridge
            events: EventPipe[tuple[Any, ...]] = new_pipe(EVENT_CAPACITY, "livekit room events")
            side = _LoopSide(bridge, events, self._options)
            self._loop_side = side
            try:
                with trio.move_on_after(self._options.connect_timeout) as timeout:
                    room, local, others = await bridge.run_abandonable(
                        side.connect, self._url, self._token, on_abandoned=side.abandoned
                    )
                if timeout.cancelled_caught:
                    raise ConnectError(
                        f"no connection to {self._url} within "
                        f"connect_timeout={self._options.connect_timeout:g} s"
                    )
            except BaseException:
                self._closed = True
                raise
            self._sink = sink
            logger.debug("joined room %s as %s (livekit backend)", room.name, local.identity)
            try:
                sink.on_join(room, local, others)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._connected = True
                    on_connected()
                    reason = await self._pump(events, sink)
                    nursery.cancel_scope.cancel()
                return reason
            finally:
                self._end()
                # the SDK side finishes on the loop: shielded, bounded by the owner's
                # deadline (a job's teardown deadline), never by a clock of its own;
                # what is left then is abandoned and the bridge reaps it at close
                with trio.move_on_at(closing_deadline(sink, CLOSE_BOUND), shield=True):
                    await bridge.run_abandonable(side.close)

    async def _pump(self, events: EventPipe[tuple[Any, ...]], sink: LinkSink) -> DisconnectReason:
        while True:
            try:
                batch = await events.get_batch()
            except trio.EndOfChannel:
                return (
                    DisconnectReason.CLIENT_INITIATED
                    if self._leave_requested
                    else DisconnectReason.UNKNOWN_REASON
                )
            for item in batch:
                kind = item[0]
                if kind == "participants":
                    sink.on_participants(item[1])
                elif kind == "audio":
                    _, sid, data, rate, channels, samples = item
                    sink.on_audio(sid, AudioFrame(data, rate, channels, samples))
                elif kind == "subscribed":
                    sink.on_track_subscribed(item[1])
                elif kind == "unsubscribed":
                    sink.on_track_unsubscribed(item[1])
                elif kind == "unpublished":
                    sender = self._senders.pop(item[1], None)
                    if sender is not None:
                        sender.stop()
                    sink.on_track_unpublished(item[1])
                elif kind == "room":
                    sink.on_room(item[1])
                elif kind == "data":
                    sink.on_data(item[1])
                elif kind == "text":
                    _, identity, topic, text = item
                    sink.on_text(identity, topic, text)
                elif kind == "disconnected":
                    return DisconnectReason.from_proto(item[1])

    def _end(self) -> None:
        self._closed = True
        for sender in list(self._senders.values()):
            sender.stop()
        self._senders.clear()

    def _require(self) -> AsyncioBridge:
        if self._closed or not self._connected or self._bridge is None:
            raise NotConnectedError("the room is not connected")
        return self._bridge

    async def send_data(self, packets: Sequence[models.DataPacket]) -> None:
        await self._require().run(self._loop_side.send_data, list(packets))

    async def update_metadata(
        self,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        info = await self._require().run(
            self._loop_side.update_metadata, name, metadata, dict(attributes or {})
        )
        if self._sink is not None and not self._closed:
            self._sink.on_participants([info])

    async def publish_track(self, track: LocalAudioTrack, source: TrackSource) -> models.TrackInfo:
        bridge = self._require()
        src = track.source
        info = await bridge.run(
            self._loop_side.publish_track,
            track.name,
            src.sample_rate,
            src.num_channels,
            int(source),
        )
        assert self._nursery is not None
        sender = _Sender(self, info.sid, track)
        self._senders[info.sid] = sender
        src._add_sink(sender)
        self._nursery.start_soon(sender.run)
        return info

    async def unpublish_track(self, track_sid: str) -> None:
        sender = self._senders.pop(track_sid, None)
        if sender is not None:
            sender.stop()
        await self._require().run(self._loop_side.unpublish_track, track_sid)

    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        self._require().call_soon(self._loop_side.set_subscribed, track_sid, subscribed)

    async def wait_for_outbound(self) -> None:
        if self._closed or self._bridge is None:
            await trio.lowlevel.checkpoint()
            return
        for sender in list(self._senders.values()):
            await sender.wait_idle()
        if not self._closed:
            await self._bridge.run(self._loop_side.wait_for_playout)

    def request_leave(self) -> None:
        bridge = self._require()
        if self._leave_requested:
            return
        self._leave_requested = True
        side = self._loop_side
        bridge.call_soon(lambda: bridge.spawn(side.leave(), orphan=True))
