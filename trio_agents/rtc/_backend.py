"""The seam between ``Room`` and a backend (simulated today, the livekit SDK later).

A ``Room`` owns the participant/track model and the events; a backend owns
one connection (a ``Link``).  The currency between the two is LiveKit's own
model messages (``models.ParticipantInfo``, ``models.Room``,
``models.DataPacket``), which the simulated link receives as-is and which a
livekit-SDK backend can build from the SDK's objects.  Audio crosses as
``AudioFrame``: a backend calls ``LinkSink.on_audio`` for each frame of a
subscribed track (the SDK backend would pump an SDK ``AudioStream`` per
subscribed track inside ``Link.run``), and it reads an ``AudioSource`` it
publishes through the source's sink hook.

Every task a link needs lives in a nursery inside ``Link.run``, which
``Room.run`` awaits: no task outlives the room's run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio
from livekit.protocol import models

from ._audio import AudioFrame
from ._enums import DisconnectReason, TrackSource
from ._errors import ConnectError
from ._track import LocalAudioTrack


@attrs.frozen
class RoomOptions:
    """How to connect a room.

    Attributes:
        auto_subscribe: subscribe to every remote track (present and future).
            With False nothing is subscribed until ``publication.set_subscribed(True)``.
        connect_timeout: seconds allowed for the connection and the join answer.
        e2ee: a ``livekit.rtc.E2EEOptions``, passed to the livekit backend as the
            room's ``encryption``; the simulated backend refuses it (``ConnectError``).
        rtc_config: a ``livekit.rtc.RtcConfiguration`` for the livekit backend
            (ICE servers, transport policy); the simulated backend refuses it.
        text_topics: the topics whose text streams the room delivers as
            ``TextReceived``.  None: every topic on the simulated backend;
            ``""``, ``"chat"`` and ``"lk.chat"`` on the livekit backend (the SDK receives
            text streams per registered topic only).
    """

    auto_subscribe: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    connect_timeout: float = attrs.field(default=10.0)
    e2ee: object | None = None
    rtc_config: object | None = None
    text_topics: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    @connect_timeout.validator
    def _check_timeout(self, _attribute: object, value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"connect_timeout must be a number > 0, got {value!r}")


class LinkSink(Protocol):
    """What a backend reports to its ``Room`` (all calls in the trio thread, in order)."""

    def on_join(
        self,
        room: models.Room,
        participant: models.ParticipantInfo,
        others: Sequence[models.ParticipantInfo],
    ) -> None: ...

    def on_participants(self, infos: Sequence[models.ParticipantInfo]) -> None: ...

    def on_room(self, room: models.Room) -> None: ...

    def on_track_unpublished(self, track_sid: str) -> None: ...

    def on_track_subscribed(self, track_sid: str) -> None: ...

    def on_data(self, packet: models.DataPacket) -> None: ...

    def on_audio(self, track_sid: str, frame: AudioFrame) -> None: ...

    def on_track_unsubscribed(self, track_sid: str) -> None: ...

    def on_text(self, sender_identity: str, topic: str, text: str) -> None:
        """A whole text stream (backends that assemble streams themselves)."""
        ...


def closing_deadline(sink: object, bound: float) -> float:
    """When closing a link must be over: ``bound`` seconds from now, or the owner's
    ``close_deadline`` (the room's; a job's teardown deadline) if that is sooner.

    Every backend's shielded close reads it: the caller's deadline, not a
    private clock, is what bounds leaving a room.
    """
    own = trio.current_time() + bound
    owner = getattr(sink, "close_deadline", None)
    return own if owner is None else min(own, owner)


class Link(Protocol):
    """One room connection, as ``Room`` drives it."""

    async def run(self, sink: LinkSink, on_connected: Callable[[], None]) -> DisconnectReason:
        """Connect, report the join to ``sink``, call ``on_connected()``, pump until the end.

        Returns why the connection ended.  Raises ``ConnectError`` if it never
        connected.  On any exit the connection is closed (shielded, bounded by
        ``closing_deadline(sink, ...)``: never past the owner's deadline).
        """
        ...

    async def send_data(self, packets: Sequence[models.DataPacket]) -> None:
        """Send packets in order; returns once written."""
        ...

    async def update_metadata(
        self,
        *,
        name: str | None = None,
        metadata: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Update the local participant; returns once the server confirmed."""
        ...

    async def publish_track(
        self, track: LocalAudioTrack, source: TrackSource
    ) -> models.TrackInfo: ...

    async def unpublish_track(self, track_sid: str) -> None: ...

    def set_subscribed(self, track_sid: str, subscribed: bool) -> None: ...

    async def wait_for_outbound(self) -> None:
        """Wait until queued outbound data and audio has been written (or the link ended)."""
        ...

    def request_leave(self) -> None:
        """Tell the server we leave (CLIENT_INITIATED); the link then ends."""
        ...


def open_link(url: str, token: str, options: RoomOptions) -> Link:
    """Choose the backend for ``url``.

    * ``sim+ws://host:port``, ``sim+wss://...`` and ``memory://NAME``: the
      simulated backend (``ws(s)://host:port/rtc/sim`` on the stand-in server);
    * ``ws://``, ``wss://``, ``http(s)://``: the livekit backend (the official
      SDK on the asyncio bridge, see ``_livekit``).

    Raises:
        ConnectError: no backend for this URL.
        ValueError: not a URL of any of these forms.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme.startswith("sim+"):
        inner = scheme[4:]
        if inner not in ("ws", "wss", "http", "https", "memory"):
            raise ValueError(f"url: unsupported simulated scheme {parts.scheme!r} in {url!r}")
        target = urlunsplit((inner, parts.netloc, parts.path, parts.query, ""))
    elif scheme == "memory":
        target = url
    elif scheme in ("ws", "wss", "http", "https"):
        from ._livekit import LivekitLink

        return LivekitLink(url, token, options)
    else:
        raise ValueError(f"url must be ws(s)://, sim+ws(s):// or memory://, got {url!r}")
    if options.e2ee is not None or options.rtc_config is not None:
        raise ConnectError(
            "the simulated backend supports neither e2ee nor rtc_config; "
            "they apply to the livekit backend (ws:// and wss:// URLs)"
        )
    from ._simulated import SimulatedLink

    return SimulatedLink(target, token, options)
