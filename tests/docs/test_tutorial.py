"""The tutorial's snippets (docs/snippets/tutorial_*.py) do what the tutorial says."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
import trio.testing

from trio_agents.testing import Simulation, simulate_job

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "snippets"))

import tutorial_1_hello
import tutorial_2_nursery
import tutorial_3_participants
import tutorial_4_deadlines
import tutorial_5_shielding
import tutorial_6_shutdown


async def test_1_the_job_outlives_its_entrypoint(autojump_clock: trio.testing.MockClock) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            assert (await ana.wait_for_text()).text == "hello, room"
            await trio.sleep(30)

    result = await simulate_job(tutorial_1_hello.entrypoint, script=script, departure_timeout=20)
    kinds = result.kinds()
    # the entrypoint returned long before the job ended, by the room closing
    assert kinds.index("entrypoint_returned") < kinds.index("shutdown")
    assert result.outcome.reason == "room disconnected"
    assert result.of_kind("shutdown")[0].time >= 30 + 20


async def test_2_a_nursery_runs_both_and_shutdown_stops_both(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[tuple[str, str]] = []

    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            await ana.send_text("ping", topic="chat")
            heard.append(("echo", (await ana.wait_for_text(topic="echo")).text))
            heard.append(("status", (await ana.wait_for_text(topic="status")).text))
            sim.terminate()
            await trio.sleep(1)

    result = await simulate_job(tutorial_2_nursery.entrypoint, script=script)
    assert heard == [("echo", "ping"), ("status", "still here")]
    assert result.outcome.ok
    assert result.outcome.reason == "job terminated by the server"
    # the work (both children) unwound at once, well before any deadline
    assert result.of_kind("phase_done")[0].args == ("cancel_work",)
    assert result.of_kind("phase_done")[0].time - result.of_kind("shutdown")[0].time < 1


async def test_3_each_participant_task_ends_with_its_participant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tutorial_3_participants.events.clear()

    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            await ana.wait_for_text()
            async with sim.participant("ben") as ben:
                await ben.wait_for_text()
            await trio.sleep(1)  # ben left: his task is gone, ana's goes on
            assert tutorial_3_participants.events == ["ana joined", "ben joined", "ben gone"]
            await ana.wait_for_text()  # the quiz again, a minute later

    result = await simulate_job(tutorial_3_participants.entrypoint, script=script)
    assert result.outcome.ok
    assert tutorial_3_participants.events == ["ana joined", "ben joined", "ben gone", "ana gone"]


async def test_4_a_deadline_stops_the_wait(autojump_clock: trio.testing.MockClock) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            assert (await ana.wait_for_text()).text == "what's your name?"
            await ana.send_text("Ana")
            assert (await ana.wait_for_text()).text == "nice to meet you, Ana"
            async with sim.participant("ben") as ben:
                await ben.wait_for_text()
                start = trio.current_time()
                # ben says nothing
                assert (await ben.wait_for_text()).text == "nice to meet you, guest"
                assert trio.current_time() - start == tutorial_4_deadlines.ANSWER_TIMEOUT

    result = await simulate_job(tutorial_4_deadlines.entrypoint, script=script)
    assert result.outcome.ok


async def test_5_the_shielded_save_survives_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tutorial_5_shielding.saved.clear()

    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            await ana.send_text("note one")
            await ana.send_text("note two")
            await trio.sleep(1)
        async with sim.participant("ben") as ben:
            await ben.send_text("mine")
            await trio.sleep(1)
            sim.terminate()  # ben is still here: the job's end cancels his task
            await trio.sleep(5)

    result = await simulate_job(tutorial_5_shielding.entrypoint, script=script)
    assert result.outcome.ok
    assert tutorial_5_shielding.saved == {"ana": ["note one", "note two"], "ben": ["mine"]}


async def test_6_the_call_ends_itself_and_runs_its_callback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tutorial_6_shutdown.log.clear()
    heard: list[str] = []

    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            heard.append((await ana.wait_for_text()).text)
            heard.append((await ana.wait_for_text()).text)
            await trio.sleep(5)

    result = await simulate_job(tutorial_6_shutdown.entrypoint, script=script)
    assert heard == ["hi ana, this call ends in 60 seconds", "goodbye"]
    assert result.outcome.ok
    assert result.outcome.reason == "call over"
    assert tutorial_6_shutdown.log == ["metrics flushed (call over)"]
    assert 60 <= result.of_kind("shutdown")[0].time < 61


async def test_6_draining_winds_the_call_down_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tutorial_6_shutdown.log.clear()

    async def script(sim: Simulation) -> None:
        async with sim.participant("ana") as ana:
            await ana.wait_for_text()
            await trio.sleep(5)
            sim.drain()
            assert (await ana.wait_for_text()).text == "goodbye"
            await trio.sleep(5)

    result = await simulate_job(tutorial_6_shutdown.entrypoint, script=script)
    assert result.outcome.reason == "call over"
    assert tutorial_6_shutdown.log == ["asked to wind down", "metrics flushed (call over)"]
    assert result.of_kind("shutdown")[0].time < 10
