"""Tracks, track publications, and ``AudioStream`` (the receiving side of audio)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from types import TracebackType

import trio

from ._audio import AudioFrame, AudioFrameEvent, AudioSource
from ._enums import TrackKind, TrackSource

logger = logging.getLogger("trio_agents.rtc")

#: Default ``AudioStream`` capacity: 5 s of 10 ms frames.
DEFAULT_STREAM_CAPACITY = 500


class LocalAudioTrack:
    """An audio track fed by an ``AudioSource``; publish it with ``publish_track``."""

    kind = TrackKind.KIND_AUDIO

    def __init__(self, name: str, source: AudioSource) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not isinstance(source, AudioSource):
            raise TypeError(f"source must be an AudioSource, not {type(source).__name__}")
        self.name = name
        self.source = source
        #: Set by the server when the track is published ("" before).
        self.sid = ""

    @staticmethod
    def create_audio_track(name: str, source: AudioSource) -> LocalAudioTrack:
        return LocalAudioTrack(name, source)

    def __repr__(self) -> str:
        return f"<LocalAudioTrack {self.name!r} sid={self.sid!r}>"


class RemoteAudioTrack:
    """A subscribed remote audio track; read it with ``AudioStream(track)``.

    It lives from ``TrackSubscribed`` to ``TrackUnsubscribed`` (or the room's
    disconnect); streams opened on it end then.
    """

    kind = TrackKind.KIND_AUDIO

    def __init__(self, sid: str, name: str) -> None:
        self.sid = sid
        self.name = name
        self._streams: set[AudioStream] = set()
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def _push(self, frame: AudioFrame) -> None:
        for stream in list(self._streams):
            stream._push(frame)

    def _end(self) -> None:
        self._ended = True
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()

    def __repr__(self) -> str:
        return f"<RemoteAudioTrack {self.name!r} sid={self.sid!r}>"


class LocalTrackPublication:
    """A track this participant published."""

    def __init__(self, sid: str, name: str, track: LocalAudioTrack, source: TrackSource) -> None:
        self.sid = sid
        self.name = name
        self.kind = track.kind
        self.source = source
        self.track = track

    def __repr__(self) -> str:
        return f"<LocalTrackPublication {self.name!r} sid={self.sid!r}>"


class RemoteTrackPublication:
    """A track a remote participant published; ``track`` is set while subscribed."""

    def __init__(
        self,
        sid: str,
        name: str,
        kind: TrackKind,
        source: TrackSource,
        muted: bool,
        request_subscription: Callable[[RemoteTrackPublication, bool], None],
    ) -> None:
        self.sid = sid
        self.name = name
        self.kind = kind
        self.source = source
        self.muted = muted
        self.track: RemoteAudioTrack | None = None
        self._subscribed = False
        self._request_subscription = request_subscription

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def set_subscribed(self, subscribed: bool) -> None:
        """Ask to (un)subscribe.  Queued, like the SDK's: returns at once.

        Subscribing fires ``TrackSubscribed`` once the server forwards the
        track; unsubscribing fires ``TrackUnsubscribed`` right away.

        Raises:
            NotConnectedError: the room is not connected.
        """
        if not isinstance(subscribed, bool):
            raise TypeError(f"subscribed must be a bool, not {type(subscribed).__name__}")
        self._request_subscription(self, subscribed)

    def __repr__(self) -> str:
        state = "subscribed" if self._subscribed else "not subscribed"
        return f"<RemoteTrackPublication {self.name!r} sid={self.sid!r} {state}>"


class AudioStream:
    """The frames of a subscribed ``RemoteAudioTrack``.

    ::

        async with AudioStream(track) as stream:
            async for event in stream:
                event.frame

    Frames are buffered from construction on.  The buffer holds ``capacity``
    frames; when it is full the *oldest* frame is dropped and counted in
    ``dropped`` (a consumer that falls behind hears the latest audio, as with a
    live call).  Iteration ends once the track is unsubscribed or unpublished,
    the room disconnects, or the stream is closed; buffered frames are
    delivered first.
    """

    def __init__(self, track: RemoteAudioTrack, *, capacity: int = DEFAULT_STREAM_CAPACITY) -> None:
        if not isinstance(track, RemoteAudioTrack):
            raise TypeError(f"track must be a RemoteAudioTrack, not {type(track).__name__}")
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be an int > 0, got {capacity!r}")
        self._track = track
        self._capacity = capacity
        self._buffer: collections.deque[AudioFrame] = collections.deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        #: Frames dropped because the buffer was full.
        self.dropped = 0
        if track.ended:
            self._closed = True
        else:
            track._streams.add(self)

    @property
    def track(self) -> RemoteAudioTrack:
        return self._track

    def _push(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "AudioStream of track %s is full (%d frames); dropping the oldest frames",
                    self._track.sid,
                    self._capacity,
                )
        self._buffer.append(frame)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def __aiter__(self) -> AudioStream:
        return self

    async def __anext__(self) -> AudioFrameEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        return AudioFrameEvent(self._buffer.popleft())

    async def aclose(self) -> None:
        """Stop buffering and end iteration (buffered frames are discarded)."""
        self._track._streams.discard(self)
        self._buffer.clear()
        self._end()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> AudioStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()
