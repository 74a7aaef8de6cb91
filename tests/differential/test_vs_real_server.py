"""The stand-in held to the real livekit-server: same scenario, same observation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from tests.differential import scenarios as sc
from tests.differential.allowed import ALLOWED
from tests.differential.observe import compare, dump

pytestmark = pytest.mark.real_server

Scenario = Callable[[sc.ServerUnderTest], Awaitable[sc.Observation]]
SCENARIOS: list[Scenario] = [
    sc.room_lifecycle,
    sc.room_with_options,
    sc.missing_things,
    sc.bad_grants,
    sc.bad_tokens,
    sc.malformed_requests,
    sc.empty_and_odd_names,
    sc.dispatch_lifecycle,
    sc.worker_registration,
    sc.worker_room_job,
    sc.worker_explicit_dispatch,
    sc.worker_termination,
    sc.worker_declines,
    sc.worker_full,
    sc.worker_protocol_errors,
    sc.agent_removed_after_delete_dispatch,
    sc.migrated_job,
    sc.participant_view,
    sc.participant_job,
    sc.empty_room_closes,
    sc.departure_closes,
    sc.agent_alone_does_not_keep_a_room,
]


async def run_both(
    scenario: Scenario, real: sc.ServerUnderTest, stand_in: sc.ServerUnderTest
) -> tuple[sc.Observation, sc.Observation]:
    """The scenario on both servers at once (the timing ones wait in parallel)."""
    seen: dict[str, sc.Observation] = {}

    async def one(sut: sc.ServerUnderTest) -> None:
        seen[sut.name] = await scenario(sut)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, real)
        nursery.start_soon(one, stand_in)
    return seen["real"], seen["stand-in"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_same_as_real_server(
    scenario: Scenario, real: sc.ServerUnderTest, stand_in: sc.ServerUnderTest
) -> None:
    seen_real, seen_stand_in = await run_both(scenario, real, stand_in)
    # the scenario saw something (a broken scenario would compare two empty dicts)
    assert seen_real, dump(seen_real)
    compare(seen_real, seen_stand_in, ALLOWED.get(scenario.__name__, ()))
