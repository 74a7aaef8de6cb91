"""Audio values and the publishing side: ``AudioFrame`` and ``AudioSource``."""

from __future__ import annotations

from typing import Protocol

import attrs
import trio


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@attrs.frozen
class AudioFrame:
    """A frame of 16-bit PCM audio, interleaved by channel (as in ``livekit.rtc``).

    ``data`` is immutable ``bytes`` in host byte order (little-endian on every
    platform LiveKit supports); ``samples`` gives an int16 view of it.
    """

    data: bytes = attrs.field(converter=bytes)
    sample_rate: int
    num_channels: int
    samples_per_channel: int

    def __attrs_post_init__(self) -> None:
        _positive("sample_rate", self.sample_rate)
        _positive("num_channels", self.num_channels)
        if not isinstance(self.samples_per_channel, int) or self.samples_per_channel < 0:
            raise ValueError(
                f"samples_per_channel must be an int >= 0, got {self.samples_per_channel!r}"
            )
        expected = self.samples_per_channel * self.num_channels * 2
        if len(self.data) != expected:
            raise ValueError(
                f"data must be samples_per_channel * num_channels * 2 = {expected} bytes, "
                f"got {len(self.data)}"
            )

    @classmethod
    def create(cls, sample_rate: int, num_channels: int, samples_per_channel: int) -> AudioFrame:
        """A frame of silence (zeroed samples)."""
        return cls(
            bytes(samples_per_channel * num_channels * 2),
            sample_rate,
            num_channels,
            samples_per_channel,
        )

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples_per_channel / self.sample_rate

    @property
    def samples(self) -> memoryview:
        """A read-only int16 view of ``data`` (interleaved)."""
        return memoryview(self.data).cast("h")


@attrs.frozen
class AudioFrameEvent:
    """What ``AudioStream`` yields (as in ``livekit.rtc``)."""

    frame: AudioFrame


class FrameSink(Protocol):
    """Where an ``AudioSource`` hands its frames: a published track's sender."""

    def push(self, play_at: float, frame: AudioFrame) -> None: ...

    def clear(self) -> None: ...


class AudioSource:
    """A source of audio to publish with ``LocalAudioTrack.create_audio_track``.

    It plays out in (trio) real time, like the SDK's native source: every
    captured frame is scheduled right after the previous one, and
    ``capture_frame`` returns at once while less than ``queue_size_ms`` of
    audio is queued, else it waits until the queue has room.  Frames captured
    while the source is not published play out into nothing.  Works under
    ``trio.testing.MockClock``.
    """

    def __init__(self, sample_rate: int, num_channels: int, queue_size_ms: int = 1000) -> None:
        _positive("sample_rate", sample_rate)
        _positive("num_channels", num_channels)
        _positive("queue_size_ms", queue_size_ms)
        self._sample_rate = sample_rate
        self._num_channels = num_channels
        self._queue_size = queue_size_ms / 1000
        self._playout_end = -float("inf")
        self._sinks: list[FrameSink] = []
        self._closed = False

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def queued_duration(self) -> float:
        """Seconds of captured audio not yet played out (call inside trio)."""
        return max(0.0, self._playout_end - trio.current_time())

    def clear_queue(self) -> None:
        """Drop the audio not yet played out (call inside trio)."""
        self._playout_end = min(self._playout_end, trio.current_time())
        for sink in list(self._sinks):
            sink.clear()

    async def capture_frame(self, frame: AudioFrame) -> None:
        """Queue ``frame`` for playout; waits while the queue is full.

        Raises:
            ValueError: the frame's sample rate or channel count differs from the source's.
            RuntimeError: the source is closed.
        """
        if not isinstance(frame, AudioFrame):
            raise TypeError(f"frame must be an AudioFrame, not {type(frame).__name__}")
        if self._closed:
            raise RuntimeError("AudioSource is closed")
        if frame.sample_rate != self._sample_rate or frame.num_channels != self._num_channels:
            raise ValueError(
                f"frame is {frame.sample_rate} Hz x {frame.num_channels} ch, the source is "
                f"{self._sample_rate} Hz x {self._num_channels} ch"
            )
        if frame.samples_per_channel == 0:
            await trio.lowlevel.checkpoint()
            return
        now = trio.current_time()
        start = max(now, self._playout_end)
        self._playout_end = start + frame.duration
        for sink in list(self._sinks):
            sink.push(start, frame)
        # wait (like the SDK) until the queue is below its size again
        await trio.sleep_until(self._playout_end - self._queue_size)

    async def wait_for_playout(self) -> None:
        """Wait until every captured frame has played out."""
        await trio.sleep_until(self._playout_end)

    async def aclose(self) -> None:
        """Stop the source; queued audio is dropped."""
        self._closed = True
        for sink in list(self._sinks):
            sink.clear()
        self._sinks.clear()
        await trio.lowlevel.checkpoint()

    # --- used by backends -------------------------------------------------------

    def _add_sink(self, sink: FrameSink) -> None:
        self._sinks.append(sink)

    def _remove_sink(self, sink: FrameSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
