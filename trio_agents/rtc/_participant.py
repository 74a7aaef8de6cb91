"""Local and remote participants."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from livekit.protocol import models

from ._enums import DisconnectReason, ParticipantKind, TrackSource
from ._errors import NotConnectedError
from ._track import LocalAudioTrack, LocalTrackPublication, RemoteTrackPublication

if TYPE_CHECKING:
    from ._backend import Link

#: Data-stream chunk size, as in the SDK (bytes of UTF-8 per chunk).
STREAM_CHUNK_SIZE = 15_000


class _ParticipantBase:
    def __init__(self, info: models.ParticipantInfo) -> None:
        self.sid = info.sid
        self.identity = info.identity
        self.name = info.name
        self.metadata = info.metadata
        self.attributes: dict[str, str] = dict(info.attributes)
        self.kind = ParticipantKind.from_proto(info.kind)
        self._version = info.version

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity!r} sid={self.sid!r} kind={self.kind.name}>"


class RemoteParticipant(_ParticipantBase):
    """Another participant of the room.

    Attributes:
        identity, sid, name, metadata: as in the token / last update.
        kind: ``ParticipantKind``.
        attributes: a dict (updated in place on changes).
        track_publications: track sid -> ``RemoteTrackPublication``.
        disconnect_reason: set once it left.
    """

    def __init__(self, info: models.ParticipantInfo) -> None:
        super().__init__(info)
        self.track_publications: dict[str, RemoteTrackPublication] = {}
        self.disconnect_reason: DisconnectReason | None = None


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")


def _check_identities(value: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        raise TypeError("destination_identities must be a sequence of str, not a str")
    out = list(value)
    for v in out:
        _check_str("destination_identities[...]", v)
    return out


def _utf8_chunks(text: str, size: int) -> list[bytes]:
    """Split ``text``'s UTF-8 into chunks of at most ``size`` bytes, never inside a character."""
    data = text.encode()
    chunks: list[bytes] = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # continuation byte
            end -= 1
        chunks.append(data[start:end])
        start = end
    return chunks


class LocalOwner(Protocol):
    """What a ``LocalParticipant`` needs from its room."""

    def _require_link(self) -> Link: ...

    def _local_published(self, publication: LocalTrackPublication) -> None: ...

    def _local_unpublished(self, track_sid: str) -> None: ...


class LocalParticipant(_ParticipantBase):
    """This client's participant in the room.

    Every method needs the room connected and raises ``NotConnectedError``
    otherwise (also when the connection ends while it waits).
    """

    def __init__(self, info: models.ParticipantInfo, owner: LocalOwner) -> None:
        super().__init__(info)
        self._owner = owner
        self.track_publications: dict[str, LocalTrackPublication] = {}

    async def publish_data(
        self,
        payload: bytes | str,
        *,
        reliable: bool = True,
        destination_identities: Sequence[str] = (),
        topic: str = "",
    ) -> None:
        """Send ``payload`` to everyone (or ``destination_identities``) as ``DataReceived``."""
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
        _check_str("topic", topic)
        dest = _check_identities(destination_identities)
        packet = models.DataPacket(
            kind=models.DataPacket.RELIABLE if reliable else models.DataPacket.LOSSY,
            destination_identities=dest,
            user=models.UserPacket(
                payload=bytes(payload), topic=topic, destination_identities=dest
            ),
        )
        await self._owner._require_link().send_data([packet])

    async def send_text(
        self,
        text: str,
        *,
        topic: str = "",
        destination_identities: Sequence[str] = (),
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``text`` as a LiveKit text stream; receivers get ``TextReceived``.

        The wire form is the SDK's: ``DataPacket.stream_header`` (with a
        ``text_header``, mime ``text/plain``, the topic), UTF-8 chunks of at
        most 15 000 bytes in ``stream_chunk``, then ``stream_trailer``; binary
        ``publish_data`` uses ``DataPacket.user``.  Returns once written.
        """
        _check_str("text", text)
        _check_str("topic", topic)
        dest = _check_identities(destination_identities)
        stream_id = str(uuid.uuid4())
        chunks = _utf8_chunks(text, STREAM_CHUNK_SIZE)
        header = models.DataStream.Header(
            stream_id=stream_id,
            timestamp=int(time.time() * 1000),
            topic=topic,
            mime_type="text/plain",
            total_length=sum(len(c) for c in chunks),
            attributes=dict(attributes or {}),
            text_header=models.DataStream.TextHeader(operation_type=models.DataStream.CREATE),
        )
        packets = [models.DataPacket(destination_identities=dest, stream_header=header)]
        packets += [
            models.DataPacket(
                destination_identities=dest,
                stream_chunk=models.DataStream.Chunk(stream_id=stream_id, chunk_index=i, content=c),
            )
            for i, c in enumerate(chunks)
        ]
        packets.append(
            models.DataPacket(
                destination_identities=dest,
                stream_trailer=models.DataStream.Trailer(stream_id=stream_id),
            )
        )
        await self._owner._require_link().send_data(packets)

    async def set_attributes(self, attributes: Mapping[str, str]) -> None:
        """Merge ``attributes`` into this participant's (an empty value deletes a key).

        Returns once the server confirmed; ``attributes`` is updated by then.
        Needs the ``can_update_own_metadata`` grant.

        Raises:
            RequestError: the server refused (e.g. ``NOT_ALLOWED``).
        """
        if not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        for k, v in attributes.items():
            _check_str("attributes key", k)
            _check_str(f"attributes[{k!r}]", v)
        await self._owner._require_link().update_metadata(attributes=dict(attributes))

    async def set_metadata(self, metadata: str) -> None:
        """Set this participant's metadata (as LiveKit, an empty string changes nothing)."""
        _check_str("metadata", metadata)
        await self._owner._require_link().update_metadata(metadata=metadata)

    async def set_name(self, name: str) -> None:
        """Set this participant's name (as LiveKit, an empty string changes nothing)."""
        _check_str("name", name)
        await self._owner._require_link().update_metadata(name=name)

    async def publish_track(
        self, track: LocalAudioTrack, *, source: TrackSource = TrackSource.SOURCE_MICROPHONE
    ) -> LocalTrackPublication:
        """Publish an audio track; its source's frames flow from now on."""
        if not isinstance(track, LocalAudioTrack):
            raise TypeError(f"track must be a LocalAudioTrack, not {type(track).__name__}")
        if track.sid and track.sid in self.track_publications:
            raise ValueError(f"track {track.sid} is already published")
        info = await self._owner._require_link().publish_track(track, TrackSource(source))
        track.sid = info.sid
        pub = LocalTrackPublication(info.sid, info.name, track, TrackSource(source))
        self.track_publications[info.sid] = pub
        self._owner._local_published(pub)
        return pub

    async def unpublish_track(self, track_sid: str) -> None:
        """Stop publishing ``track_sid``; its audio stops at once."""
        _check_str("track_sid", track_sid)
        if track_sid not in self.track_publications:
            raise ValueError(f"track_sid {track_sid!r} is not published by this participant")
        await self._owner._require_link().unpublish_track(track_sid)
        self._owner._local_unpublished(track_sid)

    async def wait_for_outbound(self) -> None:
        """Wait until queued outbound audio and data has been written to the connection.

        Returns at once when nothing is queued or the room is not connected.
        Bound it with a cancel scope (it waits for audio to play out in real time).
        """
        try:
            link = self._owner._require_link()
        except NotConnectedError:
            return
        await link.wait_for_outbound()
