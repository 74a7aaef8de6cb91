"""Simulated participants: scriptable room members for tests and demos.

``async with server.simulated_participant("alice", room="demo") as alice:``
joins ``demo`` through the stand-in's ``/rtc/sim`` endpoint with an
``rtc.Room`` (in memory, so it works under ``trio.testing.MockClock``), and
leaves when the block ends.
"""

from __future__ import annotations

import array
import contextlib
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import trio

from .. import rtc

#: Length of the synthetic audio frames ``publish_audio`` sends.
FRAME_MS = 10


class SimulatedParticipant:
    """A participant driven by test code.

    Attributes:
        room: the underlying connected ``rtc.Room`` (events, remote participants).
        texts: every ``rtc.TextReceived`` this participant got, oldest first.
        data: every ``rtc.DataReceived`` this participant got, oldest first.
    """

    def __init__(self, room: rtc.Room, identity: str) -> None:
        self.room = room
        self.identity = identity
        self.texts: list[rtc.TextReceived] = []
        self.data: list[rtc.DataReceived] = []
        self._received = trio.Event()
        self._texts_taken = 0
        self._tracks: dict[tuple[int, int], tuple[rtc.AudioSource, rtc.LocalTrackPublication]] = {}
        self._phase = 0.0
        room.on("text_received", self._on_text)
        room.on("data_received", self._on_data)
        room.on("disconnected", lambda _event: self._poke())

    def _on_text(self, event: rtc.TextReceived) -> None:
        self.texts.append(event)
        self._poke()

    def _on_data(self, event: rtc.DataReceived) -> None:
        self.data.append(event)
        self._poke()

    def _poke(self) -> None:
        self._received.set()
        self._received = trio.Event()

    @property
    def local_participant(self) -> rtc.LocalParticipant:
        return self.room.local_participant

    # --- scripting -------------------------------------------------------------------

    async def set_attributes(self, attributes: Mapping[str, str]) -> None:
        await self.room.local_participant.set_attributes(attributes)

    async def set_metadata(self, metadata: str) -> None:
        await self.room.local_participant.set_metadata(metadata)

    async def set_name(self, name: str) -> None:
        await self.room.local_participant.set_name(name)

    async def send_text(
        self, text: str, *, topic: str = "", destination_identities: Sequence[str] = ()
    ) -> None:
        await self.room.local_participant.send_text(
            text, topic=topic, destination_identities=destination_identities
        )

    async def publish_data(
        self, data: bytes, *, topic: str = "", destination_identities: Sequence[str] = ()
    ) -> None:
        await self.room.local_participant.publish_data(
            data, topic=topic, destination_identities=destination_identities
        )

    async def publish_audio(
        self,
        *,
        frames: int | None = None,
        duration: float | None = None,
        sample_rate: int = 48000,
        num_channels: int = 1,
        frequency: float = 440.0,
        amplitude: float = 0.5,
        track_name: str = "microphone",
    ) -> rtc.LocalTrackPublication:
        """Play a sine tone into a published audio track; returns once it was sent.

        Give ``frames`` (10 ms each) or ``duration`` (seconds, rounded to whole
        frames).  The first call per (sample_rate, num_channels) publishes the
        track; later calls continue on it (phase-continuous).  Frames go out in
        trio real time, so under a mock clock this takes no real time.
        """
        if (frames is None) == (duration is None):
            raise TypeError("publish_audio needs exactly one of frames= or duration=")
        if duration is not None:
            if duration < 0:
                raise ValueError(f"duration must be >= 0, got {duration}")
            frames = round(duration * 1000 / FRAME_MS)
        assert frames is not None
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError(f"amplitude must be within [0, 1], got {amplitude}")
        key = (sample_rate, num_channels)
        if key not in self._tracks:
            source = rtc.AudioSource(sample_rate, num_channels)
            track = rtc.LocalAudioTrack.create_audio_track(track_name, source)
            pub = await self.room.local_participant.publish_track(track)
            self._tracks[key] = (source, pub)
        source, pub = self._tracks[key]
        spc = sample_rate * FRAME_MS // 1000
        step = 2 * math.pi * frequency / sample_rate
        peak = amplitude * 32767
        for _ in range(frames):
            samples = array.array("h")
            for i in range(spc):
                value = int(peak * math.sin(self._phase + step * i))
                samples.extend([value] * num_channels)
            self._phase = (self._phase + step * spc) % (2 * math.pi)
            if sys.byteorder != "little":  # pragma: no cover
                samples.byteswap()
            frame = rtc.AudioFrame(samples.tobytes(), sample_rate, num_channels, spc)
            await source.capture_frame(frame)
        await source.wait_for_playout()
        await self.room.local_participant.wait_for_outbound()
        return pub

    async def wait_for_text(
        self,
        *,
        topic: str | None = None,
        predicate: Callable[[rtc.TextReceived], bool] | None = None,
    ) -> rtc.TextReceived:
        """The next received text (optionally of ``topic`` / matching) not returned before.

        Raises:
            rtc.NotConnectedError: the room disconnected first.
        """
        while True:
            for index in range(self._texts_taken, len(self.texts)):
                ev = self.texts[index]
                if (topic is None or ev.topic == topic) and (predicate is None or predicate(ev)):
                    self._texts_taken = index + 1
                    return ev
            if not self.room.isconnected():
                raise rtc.NotConnectedError(f"{self.identity} disconnected before the text arrived")
            await self._received.wait()

    async def wait_for_data(self, *, topic: str | None = None, count: int = 1) -> rtc.DataReceived:
        """Wait until ``count`` data packets (of ``topic``) arrived; returns the last one."""
        while True:
            matching = [d for d in self.data if topic is None or d.topic == topic]
            if len(matching) >= count:
                return matching[count - 1]
            if not self.room.isconnected():
                raise rtc.NotConnectedError(f"{self.identity} disconnected before the data arrived")
            await self._received.wait()

    async def leave(self) -> None:
        """Leave the room (CLIENT_INITIATED) and wait until the connection has ended."""
        await self.room.disconnect()


@contextlib.asynccontextmanager
async def open_simulated_participant(
    url: str, token: str, identity: str, *, auto_subscribe: bool = True
) -> AsyncIterator[SimulatedParticipant]:
    """Connect a ``SimulatedParticipant`` for the block; it leaves on exit."""
    room = rtc.Room()
    participant = SimulatedParticipant(room, identity)
    async with trio.open_nursery() as nursery:
        await nursery.start(room.run, url, token, rtc.RoomOptions(auto_subscribe=auto_subscribe))
        try:
            yield participant
        finally:
            with trio.move_on_after(5, shield=True):
                await room.disconnect()
            nursery.cancel_scope.cancel()
