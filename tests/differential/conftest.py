"""The two servers under test: the real ``livekit-server`` and the stand-in, alike.

The stand-in gets the real server's keys and room timeouts (departure 1 s,
empty 5 s) and listens on loopback, so the scenarios reach both the same way:
raw HTTP for Twirp, a websocket for ``/agent``.  Joining a room differs: on the
real server a signal-only participant (no WebRTC), on the stand-in a simulated
participant.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest

from tests.differential.scenarios import ServerUnderTest
from tests.differential.signal_client import signal_participant
from tests.real_server.harness import ServerProcess, open_real_server
from trio_agents.testing import LocalServer, open_local_server
from trio_agents.testing._participants import open_simulated_participant


@pytest.fixture(scope="module")
def differential_server(
    livekit_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real server of the differential tests' own (same config as the session's).

    Workers other tests leave registered on the shared server would take the
    jobs of these rooms' default dispatch and change what the scenarios see.
    (``livekit_server`` is asked for so that this skips, or fails under CI, like it.)
    """
    with open_real_server(tmp_path_factory.mktemp("differential-server")) as server:
        yield server


@pytest.fixture
def real(differential_server: ServerProcess) -> ServerUnderTest:
    server = differential_server

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
async def stand_in_server(differential_server: ServerProcess) -> AsyncIterator[LocalServer]:
    real = differential_server
    async with open_local_server(
        port=0,
        api_key=real.api_key,
        api_secret=real.api_secret,
        departure_timeout=real.departure_timeout,
        empty_timeout=real.empty_timeout,
    ) as server:
        yield server


@pytest.fixture
def stand_in(stand_in_server: LocalServer, differential_server: ServerProcess) -> ServerUnderTest:
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
        departure_timeout=differential_server.departure_timeout,
        empty_timeout=differential_server.empty_timeout,
        join=join,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing differential test carries the tail of its real server's log."""
    report = yield
    if report.failed:
        server = getattr(item, "funcargs", {}).get("differential_server")
        if isinstance(server, ServerProcess):
            report.sections.append((f"livekit-server log ({server.log_path})", server.log_tail(80)))
    return report
