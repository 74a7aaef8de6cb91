"""An official-SDK participant, driven line by line (run inside the test's namespace).

    python sdk_participant.py URL TOKEN [TOPIC ...]

It joins the room with ``livekit.rtc`` (asyncio) and prints one JSON object
per line on stdout for what it sees (``{"ev": ...}``); it reads commands, one
JSON object per line, on stdin (``{"op": ...}``):

* ``set_attributes`` (``attributes``), ``set_metadata`` (``metadata``);
* ``send_text`` (``text``, ``topic``);
* ``publish_sine`` (``freq``, ``seconds``): publish a sine tone as track "sine";
* ``report_audio`` (``identity``): the dominant frequency and RMS of the audio
  received so far from that participant -> ``{"ev": "audio", ...}``;
* ``leave``: disconnect and exit.

It receives text streams on the TOPICs given on the command line.  It runs in
its own process because the SDK aborts its process on bad server data.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from livekit import rtc

RATE = 48000


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Participant:
    def __init__(self) -> None:
        self.room: rtc.Room = None  # type: ignore[assignment]  # built on the running loop
        self.received: dict[str, list[np.ndarray]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def record(self, identity: str, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        chunks = self.received.setdefault(identity, [])
        try:
            async for ev in stream:
                chunks.append(np.frombuffer(bytes(ev.frame.data), dtype=np.int16).copy())
        finally:
            await stream.aclose()

    def report(self, identity: str) -> None:
        chunks = self.received.get(identity, [])
        if not chunks:
            emit(ev="audio", identity=identity, frames=0, rms=0.0, freq=0.0)
            return
        samples = np.concatenate(chunks).astype(np.float64)
        rms = float(np.sqrt(np.mean(samples**2)))
        loud = samples[-RATE * 2 :]  # the last 2 s
        spectrum = np.abs(np.fft.rfft(loud * np.hanning(len(loud))))
        freqs = np.fft.rfftfreq(len(loud), 1 / RATE)
        spectrum[freqs < 50] = 0
        emit(
            ev="audio",
            identity=identity,
            frames=len(chunks),
            rms=rms,
            freq=float(freqs[int(np.argmax(spectrum))]),
        )

    async def publish_sine(self, freq: float, seconds: float) -> None:
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("sine", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        emit(ev="published", name="sine")
        samples_per_frame = RATE // 100
        t = 0
        for _ in range(int(seconds * 100)):
            n = np.arange(t, t + samples_per_frame)
            data = (np.sin(2 * np.pi * freq * n / RATE) * 10000).astype(np.int16)
            frame = rtc.AudioFrame(data.tobytes(), RATE, 1, samples_per_frame)
            await source.capture_frame(frame)
            t += samples_per_frame
        emit(ev="sine_done")

    async def main(self, url: str, token: str, topics: list[str]) -> None:
        room = self.room = rtc.Room()

        @room.on("participant_connected")
        def _joined(p: rtc.RemoteParticipant) -> None:
            emit(ev="participant_connected", identity=p.identity, kind=int(p.kind))

        @room.on("participant_disconnected")
        def _left(p: rtc.RemoteParticipant) -> None:
            emit(ev="participant_disconnected", identity=p.identity)

        @room.on("participant_attributes_changed")
        def _attrs(changed: dict[str, str], p: rtc.Participant) -> None:
            emit(ev="attributes_changed", identity=p.identity, changed=dict(changed))

        @room.on("participant_metadata_changed")
        def _meta(p: rtc.Participant, old: str, new: str) -> None:
            emit(ev="metadata_changed", identity=p.identity, metadata=new)

        @room.on("track_subscribed")
        def _sub(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            emit(ev="track_subscribed", identity=p.identity, name=pub.name)
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                self.spawn(self.record(p.identity, track))

        @room.on("disconnected")
        def _gone(reason: Any) -> None:
            emit(ev="disconnected", reason=int(reason))

        def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
            async def read() -> None:
                text = await reader.read_all()
                emit(ev="text", identity=identity, topic=reader.info.topic, text=text)

            self.spawn(read())

        for topic in topics:
            room.register_text_stream_handler(topic, on_text)

        await room.connect(url, token)
        emit(
            ev="connected",
            identity=room.local_participant.identity,
            others=[
                {"identity": p.identity, "kind": int(p.kind)}
                for p in room.remote_participants.values()
            ],
        )
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "set_attributes":
                await room.local_participant.set_attributes(cmd["attributes"])
            elif op == "set_metadata":
                await room.local_participant.set_metadata(cmd["metadata"])
            elif op == "send_text":
                await room.local_participant.send_text(cmd["text"], topic=cmd.get("topic", ""))
            elif op == "publish_sine":
                self.spawn(self.publish_sine(cmd["freq"], cmd["seconds"]))
            elif op == "report_audio":
                self.report(cmd["identity"])
            elif op == "leave":
                break
            emit(ev="done", op=op)
        for task in list(self.tasks):
            task.cancel()
        await room.disconnect()
        emit(ev="left")


if __name__ == "__main__":
    asyncio.run(Participant().main(sys.argv[1], sys.argv[2], sys.argv[3:]))
