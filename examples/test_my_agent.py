"""How to test an agent: ``simulate_job`` under pytest-trio's ``autojump_clock``.

Run with ``pytest examples/test_my_agent.py``.  The real job tree runs against
an in-process stand-in server; minutes of virtual time take milliseconds.
"""

from __future__ import annotations

import echo_agent  # examples/ is on sys.path under pytest
import trio

from trio_agents.testing import Simulation, simulate_job


async def test_echo_agent_greets_and_echoes(autojump_clock: trio.testing.MockClock) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            greeting = await alice.wait_for_text(topic="chat")
            assert greeting.text == "hello alice"
            await alice.send_text("ping", topic="chat")
            echo = await alice.wait_for_text(topic="echo")
            assert echo.text == "ping"
        # alice left: after departure_timeout the room closes and the job ends

    result = await simulate_job(echo_agent.entrypoint, script=script, departure_timeout=20)
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "room disconnected"
    shutdown = result.of_kind("shutdown")[0]
    assert shutdown.time >= 20  # virtual seconds: the departure timeout
