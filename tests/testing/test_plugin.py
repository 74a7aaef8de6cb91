"""The pytest plugin, as a user meets it: a tiny test file run by pytest (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import trio
import trio.testing

from trio_agents import JobContext
from trio_agents.testing import Simulation, fake_job_context


def autojump() -> bool:
    clock = trio.lowlevel.current_clock()
    return isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0


async def test_local_server(local_server):
    assert local_server.url.startswith("memory://")
    assert autojump()
    room = local_server.create_room("lobby")
    async with local_server.simulated_participant("alice", room="lobby"):
        assert "alice" in room.participants
    await trio.sleep(3600)  # virtual


async def test_simulated_room(simulated_room):
    assert autojump()
    assert simulated_room.identities() == []
    async with simulated_room.participant("bob", attributes={"lang": "fr"}):
        async with simulated_room.connect() as agent_room:
            with fake_job_context(room=agent_room) as ctx:
                bob = await ctx.wait_for_participant()
                assert bob.attributes == {"lang": "fr"}
                assert ctx.job.room.name == "test-room"
        assert simulated_room.identities() == ["bob"]
    assert simulated_room.identities() == []
    assert simulated_room.delete()
    assert simulated_room.record is None


async def test_simulate_job(simulate_job):
    assert autojump()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await ctx.room.local_participant.send_text("hi")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            assert (await alice.wait_for_text()).text == "hi"

    start = trio.current_time()
    result = await simulate_job(entrypoint, script=script, departure_timeout=3600)
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "room disconnected"
    assert trio.current_time() - start >= 3600  # an hour, in virtual time
    assert simulate_job.results == [result]


async def test_a_clock_the_test_asks_for_wins(simulate_job, mock_clock):
    assert trio.lowlevel.current_clock() is mock_clock
    assert not autojump()
'''


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # a subprocess: the plugin is loaded from its entry point, as in a user's project
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore", *args)


def test_the_fixtures_in_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = _run(pytester)
    result.assert_outcomes(passed=4)


def test_the_fixtures_make_trio_tests_without_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_user=USER_TESTS
        + '''

async def test_other_async_tests_are_left_alone():
    pass
'''
    )
    result = _run(pytester)
    # pytest-trio's own rule for async tests without trio mode: not run (skipped or failed)
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 4, outcomes
    assert outcomes.get("skipped", 0) + outcomes.get("failed", 0) == 1, outcomes


def test_disabling_the_plugin_removes_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_user="async def test_x(local_server):\n    pass\n")
    result = _run(pytester, "-p", "no:trio_agents")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'local_server' not found*"])


def test_a_failing_user_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_user='''
async def test_agent_says_hello(simulate_job):
    async def entrypoint(ctx):
        await ctx.connect()
        await ctx.room.local_participant.send_text("hi")

    async def script(sim):
        async with sim.participant("alice") as alice:
            assert (await alice.wait_for_text()).text == "hello alice"

    await simulate_job(entrypoint, script=script, departure_timeout=5)
'''
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*"])
