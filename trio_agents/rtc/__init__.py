"""Trio-native LiveKit room API.

``Room`` connects through a backend chosen from the URL: the simulated
backend (``memory://`` and ``sim+ws(s)://`` URLs, rooms hosted by
``trio_agents.testing.LocalServer``) or the livekit backend (``ws(s)://``
URLs: the official SDK on one asyncio loop thread, ``open_asyncio_bridge``),
behind the same interface (``_backend.Link``).
"""

from ._audio import AudioFrame as AudioFrame
from ._audio import AudioFrameEvent as AudioFrameEvent
from ._audio import AudioSource as AudioSource
from ._backend import RoomOptions as RoomOptions
from ._bridge import AsyncioBridge as AsyncioBridge
from ._bridge import current_bridge as current_bridge
from ._bridge import open_asyncio_bridge as open_asyncio_bridge
from ._enums import ConnectionState as ConnectionState
from ._enums import DisconnectReason as DisconnectReason
from ._enums import ParticipantKind as ParticipantKind
from ._enums import TrackKind as TrackKind
from ._enums import TrackSource as TrackSource
from ._errors import ConnectError as ConnectError
from ._errors import NotConnectedError as NotConnectedError
from ._errors import RequestError as RequestError
from ._errors import RoomError as RoomError
from ._events import DataReceived as DataReceived
from ._events import Disconnected as Disconnected
from ._events import LocalTrackPublished as LocalTrackPublished
from ._events import LocalTrackUnpublished as LocalTrackUnpublished
from ._events import ParticipantAttributesChanged as ParticipantAttributesChanged
from ._events import ParticipantConnected as ParticipantConnected
from ._events import ParticipantDisconnected as ParticipantDisconnected
from ._events import ParticipantMetadataChanged as ParticipantMetadataChanged
from ._events import ParticipantNameChanged as ParticipantNameChanged
from ._events import RoomEvent as RoomEvent
from ._events import RoomMetadataChanged as RoomMetadataChanged
from ._events import TextReceived as TextReceived
from ._events import TrackPublished as TrackPublished
from ._events import TrackSubscribed as TrackSubscribed
from ._events import TrackUnpublished as TrackUnpublished
from ._events import TrackUnsubscribed as TrackUnsubscribed
from ._participant import LocalParticipant as LocalParticipant
from ._participant import RemoteParticipant as RemoteParticipant
from ._room import EventSubscription as EventSubscription
from ._room import Room as Room
from ._room import connect_room as connect_room
from ._track import AudioStream as AudioStream
from ._track import LocalAudioTrack as LocalAudioTrack
from ._track import LocalTrackPublication as LocalTrackPublication
from ._track import RemoteAudioTrack as RemoteAudioTrack
from ._track import RemoteTrackPublication as RemoteTrackPublication

__all__ = [
    "AsyncioBridge",
    "AudioFrame",
    "AudioFrameEvent",
    "AudioSource",
    "AudioStream",
    "ConnectError",
    "ConnectionState",
    "DataReceived",
    "DisconnectReason",
    "Disconnected",
    "EventSubscription",
    "LocalAudioTrack",
    "LocalParticipant",
    "LocalTrackPublication",
    "LocalTrackPublished",
    "LocalTrackUnpublished",
    "NotConnectedError",
    "ParticipantAttributesChanged",
    "ParticipantConnected",
    "ParticipantDisconnected",
    "ParticipantKind",
    "ParticipantMetadataChanged",
    "ParticipantNameChanged",
    "RemoteAudioTrack",
    "RemoteParticipant",
    "RemoteTrackPublication",
    "RequestError",
    "Room",
    "RoomError",
    "RoomEvent",
    "RoomMetadataChanged",
    "RoomOptions",
    "TextReceived",
    "TrackKind",
    "TrackPublished",
    "TrackSource",
    "TrackSubscribed",
    "TrackUnpublished",
    "TrackUnsubscribed",
    "connect_room",
    "current_bridge",
    "open_asyncio_bridge",
]
