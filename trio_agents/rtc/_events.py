"""Typed room events.

Each event is a frozen value whose ``name`` is the ``livekit.rtc`` event name
(``room.on(name)``).  Callback handlers and ``Room.events()`` both receive
these objects.
"""

from __future__ import annotations

from typing import ClassVar, TypeAlias

import attrs

from ._enums import DisconnectReason
from ._participant import LocalParticipant, RemoteParticipant
from ._track import (
    LocalAudioTrack,
    LocalTrackPublication,
    RemoteAudioTrack,
    RemoteTrackPublication,
)

Participant: TypeAlias = LocalParticipant | RemoteParticipant


@attrs.frozen
class ParticipantConnected:
    """A remote participant joined (not fired for those present at connect)."""

    name: ClassVar[str] = "participant_connected"
    participant: RemoteParticipant


@attrs.frozen
class ParticipantDisconnected:
    """A remote participant left; ``participant.disconnect_reason`` says why."""

    name: ClassVar[str] = "participant_disconnected"
    participant: RemoteParticipant


@attrs.frozen
class ParticipantAttributesChanged:
    """Attributes changed; removed keys appear in ``changed_attributes`` with value ``""``."""

    name: ClassVar[str] = "participant_attributes_changed"
    participant: Participant
    changed_attributes: dict[str, str]


@attrs.frozen
class ParticipantMetadataChanged:
    name: ClassVar[str] = "participant_metadata_changed"
    participant: Participant
    old: str
    new: str


@attrs.frozen
class ParticipantNameChanged:
    name: ClassVar[str] = "participant_name_changed"
    participant: Participant
    old: str
    new: str


@attrs.frozen
class RoomMetadataChanged:
    name: ClassVar[str] = "room_metadata_changed"
    old: str
    new: str


@attrs.frozen
class TrackPublished:
    """A remote participant published a track (not fired for tracks present at connect)."""

    name: ClassVar[str] = "track_published"
    publication: RemoteTrackPublication
    participant: RemoteParticipant


@attrs.frozen
class TrackUnpublished:
    name: ClassVar[str] = "track_unpublished"
    publication: RemoteTrackPublication
    participant: RemoteParticipant


@attrs.frozen
class TrackSubscribed:
    """Frames of ``track`` now flow; read them with ``AudioStream(track)``."""

    name: ClassVar[str] = "track_subscribed"
    track: RemoteAudioTrack
    publication: RemoteTrackPublication
    participant: RemoteParticipant


@attrs.frozen
class TrackUnsubscribed:
    name: ClassVar[str] = "track_unsubscribed"
    track: RemoteAudioTrack
    publication: RemoteTrackPublication
    participant: RemoteParticipant


@attrs.frozen
class LocalTrackPublished:
    name: ClassVar[str] = "local_track_published"
    publication: LocalTrackPublication
    track: LocalAudioTrack


@attrs.frozen
class LocalTrackUnpublished:
    name: ClassVar[str] = "local_track_unpublished"
    publication: LocalTrackPublication


@attrs.frozen
class DataReceived:
    """Binary data (``publish_data``); ``participant`` is None when the server sent it."""

    name: ClassVar[str] = "data_received"
    data: bytes
    participant: RemoteParticipant | None
    topic: str


@attrs.frozen
class TextReceived:
    """A text stream (``send_text``) arrived complete."""

    name: ClassVar[str] = "text_received"
    text: str
    participant: RemoteParticipant | None
    topic: str


@attrs.frozen
class Disconnected:
    """The room connection ended; always the last event of a connected room."""

    name: ClassVar[str] = "disconnected"
    reason: DisconnectReason


RoomEvent: TypeAlias = (
    ParticipantConnected
    | ParticipantDisconnected
    | ParticipantAttributesChanged
    | ParticipantMetadataChanged
    | ParticipantNameChanged
    | RoomMetadataChanged
    | TrackPublished
    | TrackUnpublished
    | TrackSubscribed
    | TrackUnsubscribed
    | LocalTrackPublished
    | LocalTrackUnpublished
    | DataReceived
    | TextReceived
    | Disconnected
)

EVENT_TYPES: tuple[type[RoomEvent], ...] = (
    ParticipantConnected,
    ParticipantDisconnected,
    ParticipantAttributesChanged,
    ParticipantMetadataChanged,
    ParticipantNameChanged,
    RoomMetadataChanged,
    TrackPublished,
    TrackUnpublished,
    TrackSubscribed,
    TrackUnsubscribed,
    LocalTrackPublished,
    LocalTrackUnpublished,
    DataReceived,
    TextReceived,
    Disconnected,
)

#: Event name -> event class, for ``Room.on``.
EVENT_NAMES: dict[str, type[RoomEvent]] = {cls.name: cls for cls in EVENT_TYPES}
