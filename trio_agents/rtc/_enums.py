"""Enumerations of the room API, with the values of LiveKit's protocol."""

from __future__ import annotations

import enum

from livekit.protocol import models


class ParticipantKind(enum.IntEnum):
    """A participant's kind; values are those of ``models.ParticipantInfo.Kind``.

    The ``PARTICIPANT_KIND_*`` aliases carry the ``livekit.rtc`` SDK's names.
    Note that the SDK's own FFI numbers CONNECTOR and BRIDGE differently (5, 6);
    a backend on the SDK must map by name, never by number.
    """

    STANDARD = models.ParticipantInfo.STANDARD
    INGRESS = models.ParticipantInfo.INGRESS
    EGRESS = models.ParticipantInfo.EGRESS
    SIP = models.ParticipantInfo.SIP
    AGENT = models.ParticipantInfo.AGENT
    CONNECTOR = models.ParticipantInfo.CONNECTOR
    BRIDGE = models.ParticipantInfo.BRIDGE

    PARTICIPANT_KIND_STANDARD = STANDARD
    PARTICIPANT_KIND_INGRESS = INGRESS
    PARTICIPANT_KIND_EGRESS = EGRESS
    PARTICIPANT_KIND_SIP = SIP
    PARTICIPANT_KIND_AGENT = AGENT
    PARTICIPANT_KIND_CONNECTOR = CONNECTOR
    PARTICIPANT_KIND_BRIDGE = BRIDGE

    @classmethod
    def from_proto(cls, value: int) -> ParticipantKind:
        """The kind for a protocol value; an unknown (newer) value reads as STANDARD."""
        try:
            return cls(value)
        except ValueError:
            return cls.STANDARD


class DisconnectReason(enum.IntEnum):
    """Why a participant or room connection ended (``models.DisconnectReason``)."""

    UNKNOWN_REASON = models.UNKNOWN_REASON
    CLIENT_INITIATED = models.CLIENT_INITIATED
    DUPLICATE_IDENTITY = models.DUPLICATE_IDENTITY
    SERVER_SHUTDOWN = models.SERVER_SHUTDOWN
    PARTICIPANT_REMOVED = models.PARTICIPANT_REMOVED
    ROOM_DELETED = models.ROOM_DELETED
    STATE_MISMATCH = models.STATE_MISMATCH
    JOIN_FAILURE = models.JOIN_FAILURE
    MIGRATION = models.MIGRATION
    SIGNAL_CLOSE = models.SIGNAL_CLOSE
    ROOM_CLOSED = models.ROOM_CLOSED
    USER_UNAVAILABLE = models.USER_UNAVAILABLE
    USER_REJECTED = models.USER_REJECTED
    SIP_TRUNK_FAILURE = models.SIP_TRUNK_FAILURE
    CONNECTION_TIMEOUT = models.CONNECTION_TIMEOUT
    MEDIA_FAILURE = models.MEDIA_FAILURE
    AGENT_ERROR = models.AGENT_ERROR

    @classmethod
    def from_proto(cls, value: int) -> DisconnectReason:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN_REASON


class ConnectionState(enum.IntEnum):
    """The room connection's state (names and values of ``livekit.rtc``)."""

    CONN_DISCONNECTED = 0
    CONN_CONNECTED = 1
    CONN_RECONNECTING = 2


class TrackKind(enum.IntEnum):
    """A track's media kind (names and values of ``livekit.rtc``)."""

    KIND_UNKNOWN = 0
    KIND_AUDIO = 1
    KIND_VIDEO = 2

    @classmethod
    def from_proto(cls, value: int) -> TrackKind:
        """From ``models.TrackType`` (AUDIO=0, VIDEO=1, DATA=2)."""
        if value == models.AUDIO:
            return cls.KIND_AUDIO
        if value == models.VIDEO:
            return cls.KIND_VIDEO
        return cls.KIND_UNKNOWN


class TrackSource(enum.IntEnum):
    """Where a track comes from (names and values of ``livekit.rtc``, = ``models.TrackSource``)."""

    SOURCE_UNKNOWN = 0
    SOURCE_CAMERA = 1
    SOURCE_MICROPHONE = 2
    SOURCE_SCREENSHARE = 3
    SOURCE_SCREENSHARE_AUDIO = 4

    @classmethod
    def from_proto(cls, value: int) -> TrackSource:
        try:
            return cls(value)
        except ValueError:
            return cls.SOURCE_UNKNOWN
