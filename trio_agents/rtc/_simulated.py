"""The simulated backend: a room link to the stand-in server's ``/rtc/sim``.

One websocket carries LiveKit's signal and data messages plus raw PCM audio
(format in ``_simwire``).  Inside ``SimulatedLink.run`` one nursery holds:

* the reader (the calling task): applies server messages to the ``Room``;
* the writer: drains the outbound queue onto the socket, in order;
* the pinger: ``ping_req`` every ``ping_interval``; no answer within
  ``ping_timeout`` ends the link (``SIGNAL_CLOSE``);
* one sender per published audio track: sends each frame at its playout time.

Outbound accounting: every queued message and every captured-but-unsent
audio frame counts as pending until the writer has written it;
``wait_for_outbound`` waits for zero.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import cast
from urllib.parse import urlencode

import attrs
import trio
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from .. import _transport
from .._errors import ConnectFailed, ConnectionClosed, HandshakeRejected
from .._version import __version__
from . import _simwire as wire
from ._audio import AudioFrame
from ._backend import LinkSink, RoomOptions, closing_deadline
from ._enums import DisconnectReason, TrackSource
from ._errors import ConnectError, NotConnectedError, RequestError
from ._track import LocalAudioTrack

logger = logging.getLogger("trio_agents.rtc")

#: Budget of the shielded cleanup when the link ends (leave + close).
CLOSE_TIMEOUT = 2.0


class _Changes:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@attrs.define
class _Reply:
    """A pending request's answer slot."""

    done: trio.Event = attrs.field(factory=trio.Event)
    value: rtc_pb.SignalResponse | None = None


class _TrackSender:
    """Sends one published track's frames, each at its playout time."""

    def __init__(self, link: SimulatedLink, sid: str, track: LocalAudioTrack) -> None:
        self._link = link
        self.sid = sid
        self.track = track
        self._frames: collections.deque[tuple[float, AudioFrame]] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._stopped = False

    # FrameSink
    def push(self, play_at: float, frame: AudioFrame) -> None:
        if self._stopped:
            return
        self._frames.append((play_at, frame))
        self._link._reserved += 1
        self._lot.unpark_all()

    def clear(self) -> None:
        self._link._reserved -= len(self._frames)
        self._frames.clear()
        self._lot.unpark_all()
        self._link._changed.notify()

    def stop(self) -> None:
        self._stopped = True
        self.track.source._remove_sink(self)
        self.clear()

    async def run(self) -> None:
        try:
            while True:
                while not self._frames:
                    if self._stopped:
                        return
                    await self._lot.park()
                play_at, frame = self._frames[0]
                await trio.sleep_until(play_at)
                if not self._frames or self._frames[0][1] is not frame:
                    continue  # cleared while waiting
                self._frames.popleft()
                self._link._reserved -= 1
                data = wire.encode_audio(
                    wire.AudioPacket(
                        self.sid,
                        frame.sample_rate,
                        frame.num_channels,
                        frame.samples_per_channel,
                        frame.data,
                    )
                )
                self._link._queue(data)
        except NotConnectedError:
            return
        finally:
            self.stop()


class SimulatedLink:
    """``Link`` over ``/rtc/sim`` (see module doc)."""

    def __init__(self, url: str, token: str, options: RoomOptions) -> None:
        self._url = url
        self._token = token
        self._options = options
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[int, bytes]](math.inf)
        self._queued = 0  # sequence number of the last queued message
        self._written = 0  # ... of the last written one
        self._reserved = 0  # audio frames waiting for their playout time
        self._changed = _Changes()
        self._connected = False
        self._closed = False
        self._leave_requested = False
        self._leave_seq = 0  # sequence number of our queued leave, 0 if none
        self._ids = itertools.count(1)
        self._requests: dict[int, _Reply] = {}
        self._publishing: dict[str, _Reply] = {}
        self._offers: dict[int, _Reply] = {}
        self._senders: dict[str, _TrackSender] = {}
        self._nursery: trio.Nursery | None = None
        self._last_pong = 0.0

    # --- run ----------------------------------------------------------------------

    async def run(self, sink: LinkSink, on_connected: Callable[[], None]) -> DisconnectReason:
        headers = {"Authorization": f"Bearer {self._token}"}
        query = urlencode(
            {
                "sdk": "trio-agents",
                "version": __version__,
                "protocol": str(wire.PROTOCOL_VERSION),
                "auto_subscribe": "1" if self._options.auto_subscribe else "0",
            }
        )
        try:
            async with _transport.open_websocket(
                self._url,
                wire.PATH,
                headers=headers,
                query=query,
                connect_timeout=self._options.connect_timeout,
            ) as ws:
                return await self._run_open(ws, sink, on_connected)
        except HandshakeRejected as exc:
            raise ConnectError(
                f"the server rejected the room connection (HTTP {exc.status}): "
                f"{exc.body or 'no reason given'}",
                status=exc.status,
            ) from None
        except ConnectFailed as exc:
            raise ConnectError(f"cannot reach the server: {exc}") from None

    async def _run_open(
        self, ws: _transport.MessageStream, sink: LinkSink, on_connected: Callable[[], None]
    ) -> DisconnectReason:
        server_ended = False
        try:
            join = await self._receive_join(ws)
            sink.on_join(join.room, join.participant, list(join.other_participants))
            interval = float(join.ping_interval or 5)
            timeout = float(join.ping_timeout or 15)
            self._last_pong = trio.current_time()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer, ws)
                self._connected = True
                on_connected()
                reason = DisconnectReason.SIGNAL_CLOSE
                with trio.CancelScope() as reader_scope:
                    nursery.start_soon(self._pinger, interval, timeout, reader_scope)
                    reason, server_ended = await self._reader(ws, sink)
                if reader_scope.cancelled_caught:
                    logger.warning("no pong from the server within %.0f s; link lost", timeout)
                    reason, server_ended = DisconnectReason.SIGNAL_CLOSE, True
                nursery.cancel_scope.cancel()
            return reason
        finally:
            self._end()
            # shielded, but never past the owner's deadline (a job's teardown)
            with trio.CancelScope(shield=True, deadline=closing_deadline(sink, CLOSE_TIMEOUT)):
                leave_written = bool(self._leave_seq) and self._written >= self._leave_seq
                if self._connected and not server_ended and not leave_written:
                    # cancelled or failed on our side: tell the server we leave
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send_message(wire.encode_signal(_leave_request()))
                await ws.aclose()

    async def _receive_join(self, ws: _transport.MessageStream) -> rtc_pb.JoinResponse:
        try:
            with trio.fail_after(self._options.connect_timeout):
                while True:
                    tag, payload = wire.split(await ws.get_message())
                    if tag != wire.TAG_SIGNAL:
                        continue
                    msg = wire.decode_signal_response(payload)
                    kind = msg.WhichOneof("message")
                    if kind == "join":
                        if not msg.join.participant.sid:
                            raise ConnectError("the join answer carries no participant")
                        return msg.join
                    if kind == "leave":
                        reason = DisconnectReason.from_proto(msg.leave.reason)
                        raise ConnectError(f"the server refused the join: {reason.name}")
        except trio.TooSlowError:
            raise ConnectError(
                f"no join answer from the server within {self._options.connect_timeout} s"
            ) from None
        except ConnectionClosed as exc:
            raise ConnectError(f"the server closed the connection before the join: {exc}") from None
        except wire.WireError as exc:
            raise ConnectError(f"malformed join answer from the server: {exc}") from None

    def _end(self) -> None:
        self._closed = True
        for sender in list(self._senders.values()):
            sender.stop()
        self._senders.clear()
        self._reserved = 0
        for reply in [*self._requests.values(), *self._publishing.values(), *self._offers.values()]:
            reply.done.set()
        self._changed.notify()
        self._out_send.close()

    # --- tasks --------------------------------------------------------------------

    async def _writer(self, ws: _transport.MessageStream) -> None:
        try:
            async for seq, data in self._out_recv:
                await ws.send_message(data)
                self._written = seq
                self._changed.notify()
        except ConnectionClosed:
            return  # the reader sees it too

    async def _pinger(
        self, interval: float, pong_timeout: float, reader_scope: trio.CancelScope
    ) -> None:
        while True:
            await trio.sleep(interval)
            if trio.current_time() - self._last_pong > pong_timeout:
                reader_scope.cancel()
                return
            ping = rtc_pb.SignalRequest(ping_req=rtc_pb.Ping(timestamp=int(time.time() * 1000)))
            try:
                self._queue(wire.encode_signal(ping))
            except NotConnectedError:
                return

    async def _reader(
        self, ws: _transport.MessageStream, sink: LinkSink
    ) -> tuple[DisconnectReason, bool]:
        """Apply server messages until the end; returns (reason, ended by the server)."""
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed:
                if self._leave_requested:
                    return DisconnectReason.CLIENT_INITIATED, True
                return DisconnectReason.SIGNAL_CLOSE, True
            try:
                tag, payload = wire.split(raw)
                if tag == wire.TAG_SIGNAL:
                    reason = self._on_signal(wire.decode_signal_response(payload), sink)
                    if reason is not None:
                        return reason, True
                elif tag == wire.TAG_DATA:
                    sink.on_data(wire.decode_data(payload))
                else:
                    pkt = wire.decode_audio(payload)
                    frame = AudioFrame(
                        pkt.pcm, pkt.sample_rate, pkt.num_channels, pkt.samples_per_channel
                    )
                    sink.on_audio(pkt.track_sid, frame)
            except wire.WireError as exc:
                logger.warning("malformed message from the server, closing the room link: %s", exc)
                return DisconnectReason.STATE_MISMATCH, False

    def _on_signal(self, msg: rtc_pb.SignalResponse, sink: LinkSink) -> DisconnectReason | None:
        kind = msg.WhichOneof("message")
        if kind == "update":
            sink.on_participants(list(msg.update.participants))
        elif kind == "room_update":
            sink.on_room(msg.room_update.room)
        elif kind == "track_published":
            reply = self._publishing.pop(msg.track_published.cid, None)
            if reply is not None:
                reply.value = msg
                reply.done.set()
        elif kind == "track_unpublished":
            sid = msg.track_unpublished.track_sid
            sender = self._senders.pop(sid, None)
            if sender is not None:
                sender.stop()
            sink.on_track_unpublished(sid)
        elif kind == "track_subscribed":
            sink.on_track_subscribed(msg.track_subscribed.track_sid)
        elif kind == "request_response":
            rr = msg.request_response
            reply = self._requests.pop(rr.request_id, None)
            if reply is None and rr.HasField("add_track"):
                reply = self._publishing.pop(rr.add_track.cid, None)
            if reply is not None:
                reply.value = msg
                reply.done.set()
        elif kind == "answer":
            reply = self._offers.pop(msg.answer.id, None)
            if reply is not None:
                reply.value = msg
                reply.done.set()
        elif kind == "leave":
            return DisconnectReason.from_proto(msg.leave.reason)
        elif kind in ("pong_resp", "pong"):
            self._last_pong = trio.current_time()
        else:
            logger.debug("ignoring signal message %s", kind)
        return None

    # --- outbound -----------------------------------------------------------------

    def _queue(self, data: bytes) -> int:
        if self._closed or not self._connected:
            raise NotConnectedError("the room is not connected")
        self._queued += 1
        self._out_send.send_nowait((self._queued, data))
        return self._queued

    async def _wait_written(self, seq: int) -> None:
        while self._written < seq:
            if self._closed:
                raise NotConnectedError("the room disconnected before the message was sent")
            await self._changed.wait()

    async def _wait_reply(self, reply: _Reply, what: str) -> rtc_pb.SignalResponse:
        await reply.done.wait()
        if reply.value is None:
            raise NotConnectedError(f"the room disconnected before the server answered {what}")
        return reply.value

    async def send_data(self, packets: Sequence[models.DataPacket]) -> None:
        seq = 0
        for packet in packets:
            seq = self._queue(wire.encode_data(packet))
        await self._wait_written(seq)

    async def update_metadata(
        self,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        rid = next(self._ids)
        req = rtc_pb.UpdateParticipantMetadata(
            request_id=rid,
            name=name or "",
            metadata=metadata or "",
            attributes=dict(attributes or {}),
        )
        reply = _Reply()
        self._queue(wire.encode_signal(rtc_pb.SignalRequest(update_metadata=req)))
        self._requests[rid] = reply
        msg = await self._wait_reply(reply, "the metadata update")
        _raise_for(msg.request_response)

    async def publish_track(self, track: LocalAudioTrack, source: TrackSource) -> models.TrackInfo:
        cid = f"sim-{uuid.uuid4()}"
        req = rtc_pb.AddTrackRequest(
            cid=cid,
            name=track.name,
            type=models.AUDIO,
            source=cast("models.TrackSource", int(source)),
            stereo=track.source.num_channels == 2,
        )
        reply = _Reply()
        self._queue(wire.encode_signal(rtc_pb.SignalRequest(add_track=req)))
        self._publishing[cid] = reply
        msg = await self._wait_reply(reply, "the track publication")
        if msg.WhichOneof("message") == "request_response":
            _raise_for(msg.request_response)
        info = msg.track_published.track
        assert self._nursery is not None
        sender = _TrackSender(self, info.sid, track)
        self._senders[info.sid] = sender
        track.source._add_sink(sender)
        self._nursery.start_soon(sender.run)
        return info

    async def unpublish_track(self, track_sid: str) -> None:
        sender = self._senders.pop(track_sid, None)
        if sender is not None:
            sender.stop()
        oid = next(self._ids)
        remaining = {sid: sid for sid in self._senders}
        offer = rtc_pb.SessionDescription(
            type="offer", sdp="sim", id=oid, mid_to_track_id=remaining
        )
        reply = _Reply()
        self._queue(wire.encode_signal(rtc_pb.SignalRequest(offer=offer)))
        self._offers[oid] = reply
        await self._wait_reply(reply, "the track removal")

    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        req = rtc_pb.UpdateSubscription(track_sids=[track_sid], subscribe=subscribed)
        self._queue(wire.encode_signal(rtc_pb.SignalRequest(subscription=req)))

    async def wait_for_outbound(self) -> None:
        while not self._closed and (self._written < self._queued or self._reserved > 0):
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def request_leave(self) -> None:
        if self._leave_requested:
            return
        self._leave_seq = self._queue(wire.encode_signal(_leave_request()))
        self._leave_requested = True


def _leave_request() -> rtc_pb.SignalRequest:
    return rtc_pb.SignalRequest(
        leave=rtc_pb.LeaveRequest(
            reason=models.CLIENT_INITIATED, action=rtc_pb.LeaveRequest.DISCONNECT
        )
    )


def _raise_for(rr: rtc_pb.RequestResponse) -> None:
    if rr.reason != rtc_pb.RequestResponse.OK:
        raise RequestError(rtc_pb.RequestResponse.Reason.Name(rr.reason), rr.message)
