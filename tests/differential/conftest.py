"""The two servers under test: the real ``livekit-server`` and the stand-in, alike.

The stand-in gets the real server's keys and room timeouts (departure 1 s,
empty 5 s) and listens on loopback, so the scenarios reach both the same way:
raw HTTP for Twirp, a websocket for ``/agent``.  Joining a room differs: on the
real server a signal-only participant (no WebRTC), on the stand-in a simulated
participant.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import jwt
import pytest

from tests.differential.scenarios import ServerUnderTest
from tests.differential.signal_client import signal_participant
from tests.real_server.harness import ServerProcess
from trio_agents.testing import LocalServer, open_local_server
from trio_agents.testing._participants import open_simulated_participant


@pytest.fixture
def real(livekit_server: ServerProcess) -> ServerUnderTest:
    server = livekit_server

    @contextlib.asynccontextmanager
    async def join(token: str) -> AsyncIterator[object]:
        async with signal_participant(server.url, token) as joined:
            yield joined

    return ServerUnderTest(
        name="real",
        url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        departure_timeout=server.departure_timeout,
        empty_timeout=server.empty_timeout,
        join=join,
    )


@pytest.fixture
async def stand_in_server(livekit_server: ServerProcess) -> AsyncIterator[LocalServer]:
    async with open_local_server(
        port=0,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        departure_timeout=livekit_server.departure_timeout,
        empty_timeout=livekit_server.empty_timeout,
    ) as server:
        yield server


@pytest.fixture
def stand_in(stand_in_server: LocalServer, livekit_server: ServerProcess) -> ServerUnderTest:
    server = stand_in_server

    @contextlib.asynccontextmanager
    async def join(token: str) -> AsyncIterator[object]:
        identity = jwt.decode(token, options={"verify_signature": False})["sub"]
        async with open_simulated_participant(server.memory_url, token, identity) as joined:
            yield joined

    return ServerUnderTest(
        name="stand-in",
        url=server.url,
        api_key=server.api_key,
        api_secret=server.api_secret,
        departure_timeout=livekit_server.departure_timeout,
        empty_timeout=livekit_server.empty_timeout,
        join=join,
    )
