"""THREAD jobs and the worker's other threads."""

from __future__ import annotations

from pathlib import Path

import executor_agents as agents
import trio
from executor_helpers import dispatch, running_worker, wait_for_note, wait_terminal
from livekit.protocol import agent

from trio_agents import JobExecutorType


async def test_running_thread_jobs_leave_trio_default_thread_limiter_alone(
    tmp_path: Path,
) -> None:
    """Each job holds its thread for as long as it runs: were that a token of trio's
    default limiter (40), 40 running jobs would stall every other ``to_thread`` user
    of the worker (name resolution for a reconnect, the 41st job)."""
    limiter = trio.to_thread.current_default_thread_limiter()
    async with running_worker(JobExecutorType.THREAD) as (server, _):
        with trio.fail_after(20):
            jobs = []
            for i in range(3):
                notes = tmp_path / f"t{i}.txt"
                jobs.append(await dispatch(server, f"t{i}", agents.metadata("wait", notes)))
                await wait_for_note(notes, "start")  # running in its thread
            assert limiter.borrowed_tokens == 0
            for job in jobs:
                assert server.agents.terminate(job.job.id)
            for job in jobs:
                assert (await wait_terminal(server, job)).status == agent.JS_SUCCESS
