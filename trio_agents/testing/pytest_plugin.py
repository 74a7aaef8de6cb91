"""The trio-agents pytest plugin: fixtures for testing your own agents.

Installed with the package (entry point ``pytest11``), so the fixtures are
there in every test of a project that has trio-agents and pytest-trio
(``pip install 'trio-agents[testing]'``):

``local_server``
    a stand-in LiveKit server (``LocalServer``), in memory, for the test.
``simulated_room``
    a room of ``local_server`` (``SimulatedRoom``): join participants, connect
    an ``rtc.Room``, delete it.
``simulate_job``
    ``trio_agents.testing.simulate_job`` (a ``JobSimulator`` that also keeps
    every result in ``.results``).

Async tests that use any of them run under trio (pytest-trio) on an autojump
``MockClock``: time is virtual, a 20 s departure timeout takes no real time.
A test that asks for a clock itself (``mock_clock``, ``autojump_clock``) gets
that one.  Under pytest-trio's ``trio_mode = true`` every async test is a trio
test; without it, these fixtures make the tests that use them trio tests.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import trio
import trio.testing

if TYPE_CHECKING:
    from ._server import LocalServer
    from ._simroom import SimulatedRoom
    from ._simulate import SimulationResult

try:
    import pytest_trio
except ImportError:  # pragma: no cover - exercised only without pytest-trio
    pytest_trio = None

F = TypeVar("F", bound=Callable[..., Any])


def _trio_fixture(fn: F) -> F:
    """pytest-trio's ``trio_fixture``: a trio fixture even outside ``trio_mode``."""
    return cast("F", pytest_trio.trio_fixture(fn))


#: The fixtures whose tests run on the autojump clock.
FIXTURES = frozenset({"local_server", "simulated_room", "simulate_job"})


def run_on_autojump_clock(
    fn: Callable[[], Any], *, clock: trio.abc.Clock | None = None, **kwargs: Any
) -> Any:
    """``trio.run`` on ``clock``, or on a new ``MockClock(autojump_threshold=0)``."""
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, clock=clock, **kwargs)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: before pytest-trio's trio_mode marks the tests with its own runner
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if not FIXTURES.intersection(item.fixturenames):
            continue
        if hasattr(item.obj, "hypothesis") or not inspect.iscoroutinefunction(item.obj):
            continue
        if any("run" in mark.kwargs for mark in item.iter_markers("trio")):
            continue  # the test chose its runner
        item.add_marker(pytest.mark.trio(run=run_on_autojump_clock), append=False)


class JobSimulator:
    """The ``simulate_job`` fixture: ``await simulate_job(entrypoint, script=..., ...)``.

    Takes the arguments of ``trio_agents.testing.simulate_job`` and returns its
    ``SimulationResult``; every result is also kept in ``results``.
    """

    def __init__(self) -> None:
        self.results: list[SimulationResult] = []

    async def __call__(self, entrypoint: Any, **kwargs: Any) -> SimulationResult:
        from ._simulate import simulate_job

        result = await simulate_job(entrypoint, **kwargs)
        self.results.append(result)
        return result


def _needs_pytest_trio(name: str) -> Any:
    @pytest.fixture(name=name)
    def missing() -> None:
        pytest.fail(
            f"the {name} fixture of trio-agents needs pytest-trio: "
            "pip install 'trio-agents[testing]'",
            pytrace=False,
        )

    return missing


if pytest_trio is not None:

    @_trio_fixture
    async def local_server() -> AsyncIterator[LocalServer]:
        """A stand-in LiveKit server in memory (``server.url == "memory://..."``)."""
        from ._server import open_local_server

        async with open_local_server() as server:
            yield server

    @_trio_fixture
    async def simulated_room(local_server: LocalServer) -> AsyncIterator[SimulatedRoom]:
        """A room named ``test-room`` on ``local_server``."""
        from ._simroom import SimulatedRoom

        local_server.create_room("test-room")
        yield SimulatedRoom(local_server, "test-room")

else:  # pragma: no cover - exercised only without pytest-trio
    local_server = _needs_pytest_trio("local_server")
    simulated_room = _needs_pytest_trio("simulated_room")


@pytest.fixture
def simulate_job() -> JobSimulator:
    """``trio_agents.testing.simulate_job``, on the autojump clock."""
    return JobSimulator()
