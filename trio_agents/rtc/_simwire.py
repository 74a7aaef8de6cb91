"""Wire format of the simulated room link (``/rtc/sim``).

Shared by the client backend (``rtc._simulated``) and the stand-in server
(``testing._signal``) so the two cannot drift.  Each websocket message is
binary: one tag byte, then the payload.

======  ==========================================  =====================
tag     payload                                     direction
======  ==========================================  =====================
0x01    protobuf ``livekit.SignalRequest``          client -> server
0x01    protobuf ``livekit.SignalResponse``         server -> client
0x02    protobuf ``livekit.DataPacket``             both
0x03    an audio frame (below)                      both
======  ==========================================  =====================

Audio frame payload (all integers little-endian)::

    u8   length of the track sid, then the sid (UTF-8, ``TR_...``)
    u32  sample_rate
    u16  num_channels
    u32  samples_per_channel
    ...  samples_per_channel * num_channels int16 samples, interleaved

The signal and data messages are LiveKit's own, so a real ``/rtc/v1``
endpoint can later sit on the same rooms; only media (tag 0x03) replaces
WebRTC.  Conventions where LiveKit itself has no signal message (documented
here because both ends must agree):

* Unpublishing a track is a renegotiation in LiveKit.  The simulated client
  sends ``SignalRequest.offer`` whose ``mid_to_track_id`` lists the tracks it
  still publishes (``sdp`` is ``"sim"``); the server unpublishes the others
  and answers ``SignalResponse.answer`` with the same ``id``.
* Subscribing is a media-path event in LiveKit.  The stand-in sends
  ``SignalResponse.track_subscribed{track_sid}`` to the *subscriber* once it
  forwards that track's frames to it (LiveKit sends that message to the
  publisher).
"""

from __future__ import annotations

import struct

import attrs
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

#: Path of the simulated signal endpoint on the stand-in server.
PATH = "/rtc/sim"
#: Protocol version the simulated client announces (query ``protocol=``).
PROTOCOL_VERSION = 16

TAG_SIGNAL = 0x01
TAG_DATA = 0x02
TAG_AUDIO = 0x03

MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 8
_AUDIO_HEADER = struct.Struct("<IHI")


class WireError(ValueError):
    """A malformed message on the simulated link."""


@attrs.frozen
class AudioPacket:
    """One audio frame of one track, as carried by a tag-0x03 message."""

    track_sid: str
    sample_rate: int
    num_channels: int
    samples_per_channel: int
    pcm: bytes


def encode_signal(message: rtc_pb.SignalRequest | rtc_pb.SignalResponse) -> bytes:
    return bytes((TAG_SIGNAL,)) + message.SerializeToString()


def encode_data(packet: models.DataPacket) -> bytes:
    return bytes((TAG_DATA,)) + packet.SerializeToString()


def encode_audio(packet: AudioPacket) -> bytes:
    sid = packet.track_sid.encode()
    if not 0 < len(sid) < 256:
        raise ValueError(f"track sid must be 1..255 bytes, got {packet.track_sid!r}")
    header = _AUDIO_HEADER.pack(packet.sample_rate, packet.num_channels, packet.samples_per_channel)
    return b"".join((bytes((TAG_AUDIO, len(sid))), sid, header, packet.pcm))


def split(message: bytes | str) -> tuple[int, bytes]:
    """``(tag, payload)`` of one websocket message.

    Raises:
        WireError: a text message, an empty one, or an unknown tag.
    """
    if isinstance(message, str):
        raise WireError("text message on the simulated link (only binary messages are allowed)")
    if not message:
        raise WireError("empty message on the simulated link")
    tag = message[0]
    if tag not in (TAG_SIGNAL, TAG_DATA, TAG_AUDIO):
        raise WireError(f"unknown message tag 0x{tag:02x}")
    return tag, bytes(message[1:])


def decode_signal_request(payload: bytes) -> rtc_pb.SignalRequest:
    try:
        return rtc_pb.SignalRequest.FromString(payload)
    except DecodeError as exc:
        raise WireError(f"malformed SignalRequest: {exc}") from None


def decode_signal_response(payload: bytes) -> rtc_pb.SignalResponse:
    try:
        return rtc_pb.SignalResponse.FromString(payload)
    except DecodeError as exc:
        raise WireError(f"malformed SignalResponse: {exc}") from None


def decode_data(payload: bytes) -> models.DataPacket:
    try:
        return models.DataPacket.FromString(payload)
    except DecodeError as exc:
        raise WireError(f"malformed DataPacket: {exc}") from None


def decode_audio(payload: bytes) -> AudioPacket:
    """Parse a tag-0x03 payload, checking every field.

    Raises:
        WireError: truncated, inconsistent or out-of-range.
    """
    if not payload:
        raise WireError("truncated audio frame (no track sid)")
    n = payload[0]
    end = 1 + n + _AUDIO_HEADER.size
    if n == 0 or len(payload) < end:
        raise WireError("truncated audio frame header")
    try:
        sid = payload[1 : 1 + n].decode()
    except UnicodeDecodeError:
        raise WireError("audio frame track sid is not UTF-8") from None
    rate, channels, samples = _AUDIO_HEADER.unpack_from(payload, 1 + n)
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise WireError(f"audio frame sample_rate out of range: {rate}")
    if not 0 < channels <= MAX_CHANNELS:
        raise WireError(f"audio frame num_channels out of range: {channels}")
    pcm = payload[end:]
    if len(pcm) != samples * channels * 2:
        raise WireError(
            f"audio frame carries {len(pcm)} bytes, expected {samples * channels * 2} "
            f"({samples} samples x {channels} channels x int16)"
        )
    return AudioPacket(sid, rate, channels, samples, pcm)
