"""Messages between the worker and its job processes, and their framing.

Each frame is a 4-byte big-endian length followed by a pickled message.
Both ends are this library, in processes forked from one another, so pickle
is safe here; nothing from the network is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

import attrs
import trio

from .._types import JobOutcome, RunningJobInfo

MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


# --- worker -> job process ----------------------------------------------------


@attrs.frozen
class StartJob:
    info: RunningJobInfo
    shutdown_process_timeout: float
    delete_room_on_close: bool
    #: The worker's logger levels when the job starts (``""``: the root logger).
    log_levels: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Shutdown:
    reason: str


@attrs.frozen
class Drain:
    pass


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Delivered:
    """The reported outcome is on its way to the server: the job may leave its room."""


# --- job process -> worker ----------------------------------------------------


@attrs.frozen
class Ready:
    pid: int
    dump_path: str


@attrs.frozen
class InitFailed:
    pid: int
    error: str


@attrs.frozen
class Started:
    """The job process got ``StartJob`` and runs the job (before this, the job can go elsewhere)."""


@attrs.frozen
class Pong:
    timestamp: float


@attrs.frozen
class LogRecord:
    fields: dict[str, Any]


@attrs.frozen
class ShuttingDown:
    reason: str
    #: When it started, ``time.monotonic()`` of the job process (same clock as the worker's).
    at: float = 0.0


@attrs.frozen
class Reported:
    """The outcome, decided once the work unwound, before the job leaves its room."""

    outcome: JobOutcome


@attrs.frozen
class Done:
    outcome: JobOutcome


# --- framing --------------------------------------------------------------------


def encode(msg: object) -> bytes:
    payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise ValueError(f"IPC message of {len(payload)} bytes is over the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(payload)) + payload


class FrameError(Exception):
    """The other end sent a frame that cannot be read."""


class FramedStream:
    """Length-prefixed messages over a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._send_lock = trio.Lock()
        #: The rest of a frame ``send_nowait`` could only partly write.
        self._pending = b""

    async def send(self, msg: object) -> None:
        data = encode(msg)
        async with self._send_lock:
            await self.flush_locked()
            await self._stream.send_all(data)

    async def flush(self) -> None:
        """Send what ``send_nowait`` left over (if anything)."""
        async with self._send_lock:
            await self.flush_locked()

    async def flush_locked(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, b""
            await self._stream.send_all(pending)

    def send_nowait(self, msg: object) -> bool:
        """Send ``msg`` synchronously, without the event loop (socket streams only).

        For news that must leave even if the event loop is about to be blocked
        (a job's shutdown started, its outcome).  False if it cannot go now
        without breaking a frame (another send is under way, or the stream is
        no socket): then send it the usual way.  A frame the socket takes only
        in part is finished by the next ``send``/``flush``.
        """
        if not isinstance(self._stream, trio.SocketStream):
            return False
        if self._send_lock.locked() or self._pending:
            return False
        data = encode(msg)
        try:
            written = os.write(self._stream.socket.fileno(), data)
        except BlockingIOError:
            written = 0
        except OSError:
            return True  # the other end is gone: nothing to send to
        self._pending = data[written:]
        return True

    async def receive(self) -> object:
        """The next message.  Raises ``EOFError`` at a clean end of stream."""
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > MAX_FRAME:
                    raise FrameError(f"frame of {size} bytes is over the limit")
                if len(self._buf) >= _HEADER.size + size:
                    payload = bytes(self._buf[_HEADER.size : _HEADER.size + size])
                    del self._buf[: _HEADER.size + size]
                    try:
                        return pickle.loads(payload)
                    except Exception as exc:
                        raise FrameError(f"undecodable frame: {exc!r}") from exc
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buf:
                    raise FrameError("stream ended inside a frame")
                raise EOFError
            self._buf += chunk

    async def aclose(self) -> None:
        await self._stream.aclose()

    def close(self) -> None:
        """Close without waiting (for clean-up that cannot await); socket streams only."""
        if isinstance(self._stream, trio.SocketStream):
            self._stream.socket.close()
