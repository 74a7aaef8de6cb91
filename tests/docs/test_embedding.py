"""The embedding guide's snippets (docs/snippets/embed_*.py), run as written.

The worker runs INLINE against an in-memory stand-in, under the autojump clock.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio
import trio.testing

from trio_agents import AgentServer, JobExecutorType
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET, LocalServer, open_local_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "snippets"))

import embed_agent
import embed_nursery
import embed_run
import embed_signals


def make_server(local: LocalServer) -> AgentServer:
    server = AgentServer(
        local.url,
        DEV_API_KEY,
        DEV_API_SECRET,
        job_executor_type=JobExecutorType.INLINE,
        port=None,
        load_fnc=lambda: 0.0,
        shutdown_process_timeout=5.0,
    )
    server.rtc_session(embed_agent.entrypoint)
    return server


async def test_run_stops_when_its_scope_is_cancelled_and_jobs_get_their_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    embed_agent.finished.clear()
    async with open_local_server() as local:
        server = make_server(local)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(embed_run.main, server)
            await server.wait_registered()
            async with local.simulated_participant("ana", room="one"):
                record = await local.wait_for_job(room="one")
                await trio.sleep(1)
                assert [j.job.id for j in server.active_jobs] == [record.job.id]
                assert embed_agent.finished == []
                await trio.sleep_until(3600 + 1)  # main's hour is up meanwhile
                # run() was cancelled: the job got its teardown (its callback
                # ran) although ana is still in the room
                assert len(embed_agent.finished) == 1
                assert embed_agent.finished[0].startswith("one: ")
                assert server.active_jobs == []


async def test_run_in_a_nursery_then_drain(autojump_clock: trio.testing.MockClock) -> None:
    embed_agent.finished.clear()
    embed_nursery.loads.clear()
    async with open_local_server(departure_timeout=5) as local:
        server = make_server(local)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(embed_nursery.main, server, 100.0)
            await server.wait_registered()
            async with local.simulated_participant("ana", room="two"):
                await local.wait_for_job(room="two")
                await trio.sleep_until(130)  # draining since 100: ana's job goes on
                assert server.draining
                assert embed_agent.finished == []
            # ana left: the room closes, the job ends by itself, the drain completes
            await trio.sleep(30)
            assert embed_agent.finished == ["two: room disconnected"]
        assert server.active_jobs == []
        assert embed_nursery.loads[:2] == [0, 1]  # at 0 s and 60 s


async def test_sigterm_handled_by_the_program_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    embed_agent.finished.clear()
    async with open_local_server(departure_timeout=5) as local:
        server = make_server(local)
        async with trio.open_nursery() as nursery:
            await nursery.start(embed_signals.main, server)
            await server.wait_registered()
            async with local.simulated_participant("ana", room="three"):
                await local.wait_for_job(room="three")
                os.kill(os.getpid(), signal.SIGTERM)
                await trio.sleep(10)
                assert server.draining
            await trio.sleep(30)
        # run() and main() returned after the drain; the job ended by itself
        assert embed_agent.finished == ["three: room disconnected"]
