"""Every example in examples/ does what its docstring says."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
import trio.testing

from trio_agents import JobProcess
from trio_agents.testing import Simulation, simulate_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import graceful_shutdown
import prewarm


async def test_graceful_shutdown_sends_goodbye_then_runs_its_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[str] = []

    async def script(sim: Simulation) -> None:
        async with sim.participant("bob") as bob:
            heard.append((await bob.wait_for_text(topic="chat")).text)
            await trio.sleep(1)

    result = await simulate_job(graceful_shutdown.entrypoint, script=script)
    assert heard == ["goodbye"]
    assert result.outcome.ok
    assert result.outcome.reason == "conversation over"
    assert result.of_kind("callback_done")[0].args[0].endswith("save_transcript")


async def test_prewarmed_userdata_reaches_the_job(autojump_clock: trio.testing.MockClock) -> None:
    proc = JobProcess()
    prewarm.load_model(proc)

    async def script(sim: Simulation) -> None:
        async with sim.participant("carol") as carol:
            text = await carol.wait_for_text()
            assert text.text == "I know 2 words"

    result = await simulate_job(prewarm.entrypoint, script=script, userdata=proc.userdata)
    assert result.outcome.ok
