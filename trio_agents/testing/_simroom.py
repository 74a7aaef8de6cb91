"""``SimulatedRoom``: one room of a ``LocalServer``, with ways in for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from .. import rtc
from ._participants import SimulatedParticipant
from ._rooms import Room
from ._server import LocalServer


class SimulatedRoom:
    """A room of a stand-in server, for tests (the ``simulated_room`` fixture).

    Attributes:
        server: the ``LocalServer`` hosting the room.
        name: the room's name.
    """

    def __init__(self, server: LocalServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def record(self) -> Room | None:
        """The server's record of the room (participants, metadata), or None once closed."""
        return self.server.rooms.get(self.name)

    def identities(self) -> list[str]:
        """The identities in the room now, as the server sees them."""
        room = self.record
        return [] if room is None else sorted(room.participants)

    def participant(
        self,
        identity: str,
        *,
        kind: str = "standard",
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[SimulatedParticipant]:
        """``async with room.participant("alice") as alice:`` a scriptable member of the room."""
        return self.server.simulated_participant(
            identity, room=self.name, kind=kind, name=name, metadata=metadata, attributes=attributes
        )

    @contextlib.asynccontextmanager
    async def connect(
        self, identity: str = "fake-agent", *, kind: str = "agent"
    ) -> AsyncIterator[rtc.Room]:
        """A connected ``rtc.Room`` in this room for the block (as an agent by default).

        Pair it with ``fake_job_context(room=...)`` to unit-test code that uses
        ``ctx.room``.
        """
        token = self.server.participant_token(identity, self.name, kind=kind)
        async with rtc.connect_room(self.server.memory_url, token) as room:
            yield room

    def delete(self) -> bool:
        """Delete the room now (everyone is disconnected); False if it was already gone."""
        return self.server.rooms.delete(self.name)
