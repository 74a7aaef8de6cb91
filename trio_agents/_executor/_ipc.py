"""Messages between the worker and its job processes, and their framing.

Each frame is a 4-byte big-endian length followed by a pickled message.
Both ends are this library, in processes forked from one another, so pickle
is safe here; nothing from the network is ever unpickled.
"""

from __future__ import annotations

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

    async def send(self, msg: object) -> None:
        data = encode(msg)
        async with self._send_lock:
            await self._stream.send_all(data)

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
