"""Issue 9 on the executors that run jobs outside the worker's trio run.

Real processes and threads need real time: each test bounds itself, and
asserts order and outcome; the bounds on durations are the contract's own
(budget + 1 s), measured from the job's own note of when it started shutting
down (wall clock, the same in every process).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import executor_agents as agents
import pytest
import trio
from executor_helpers import (
    TERMINAL,
    dispatch,
    is_gone,
    running_worker,
    wait_for,
    wait_for_note,
    wait_terminal,
)
from livekit.protocol import agent

from trio_agents import AgentServer, JobExecutorType
from trio_agents.testing import LocalServer, open_local_server

OUTSIDE = [JobExecutorType.PROCESS, JobExecutorType.THREAD]


def spy_status_vs_room(server: LocalServer, room: str) -> list[tuple[int, bool]]:
    """At the instant the server records a job's final status: is its agent in the room?"""
    seen: list[tuple[int, bool]] = []
    changes = server.agents.changes
    notify = changes.notify

    def spy() -> None:
        for record in server.agents.jobs.values():
            if (
                record.job.room.name == room
                and record.history
                and record.history[-1] in TERMINAL
                and not seen
            ):
                r = server.rooms.get(room)
                in_room = r is not None and any(i.startswith("agent-") for i in r.participants)
                seen.append((record.history[-1], in_room))
        notify()

    changes.notify = spy  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("executor", OUTSIDE)
async def test_the_status_reaches_the_server_before_the_agent_leaves(
    executor: JobExecutorType, tmp_path: Path
) -> None:
    """Row 6: a real LiveKit server fails a job whose agent leaves the room first."""
    async with running_worker(executor) as (server, _):
        seen = spy_status_vs_room(server, "leaves-last")
        with trio.fail_after(20):
            job = await dispatch(
                server,
                "leaves-last",
                agents.metadata("shutdown_then_block", tmp_path / "n.txt", block=0),
            )
            job = await wait_terminal(server, job)
    assert job.status == agent.JS_SUCCESS
    assert seen == [(agent.JS_SUCCESS, True)]


@pytest.mark.parametrize("executor", OUTSIDE)
async def test_a_job_blocking_its_loop_after_shutdown_is_ended_by_the_clock(
    executor: JobExecutorType, tmp_path: Path
) -> None:
    """Row 2: the runner's clock starts when the job's shutdown starts, even though
    the job's event loop is never free again; the job is over by budget + 1 s."""
    budget = 1.0
    notes = tmp_path / "notes.txt"
    async with running_worker(executor, shutdown_process_timeout=budget) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(
                server, "blocks", agents.metadata("shutdown_then_block", notes, block=4)
            )
            pid = int((await wait_for_note(notes, "start"))[1])
            shutdown_at = float((await wait_for_note(notes, "shutdown"))[1])
            job = await wait_terminal(server, job)
            reported_after = time.time() - shutdown_at
            if executor is JobExecutorType.PROCESS:
                await wait_for(lambda: is_gone(pid), interval=0.01)
                gone_after = time.time() - shutdown_at
                assert gone_after <= budget + 1.0, f"process lived {gone_after:.2f} s"
    assert reported_after <= budget + 1.0, f"reported {reported_after:.2f} s after shutdown"
    assert job.status == agent.JS_FAILED
    assert "shutdown_process_timeout" in job.error


@pytest.mark.parametrize("executor", OUTSIDE)
async def test_job_code_ignoring_cancellation_is_reported_at_the_deadline(
    executor: JobExecutorType, tmp_path: Path
) -> None:
    """Row 4: the outcome at the deadline, and the worker never waits past budget + 1 s."""
    budget = 1.0
    notes = tmp_path / "notes.txt"
    async with running_worker(executor, shutdown_process_timeout=budget) as (server, worker):
        with trio.fail_after(20):
            job = await dispatch(
                server, "stubborn", agents.metadata("ignore_cancel", notes, block=5)
            )
            await wait_for_note(notes, "ready")
            t0 = trio.current_time()
            server.agents.terminate(job.job.id)
            job = await wait_terminal(server, job)
            reported_after = trio.current_time() - t0
            await wait_for(lambda: not worker.active_jobs, interval=0.01)
            ended_after = trio.current_time() - t0
    assert job.status == agent.JS_FAILED
    assert "shutdown_process_timeout" in job.error
    assert reported_after <= budget + 1.0
    assert ended_after <= budget + 1.0


@pytest.mark.parametrize("executor", OUTSIDE)
async def test_sys_exit_in_one_job_fails_that_job_only(
    executor: JobExecutorType, tmp_path: Path
) -> None:
    """Row 7: the job ends failed with its reason (hooks ran); the worker and the other
    jobs go on; PROCESS reports the outcome the job computed, not an exit code."""
    async with running_worker(executor, num_idle_processes=2) as (server, _):
        with trio.fail_after(30):
            other_notes = tmp_path / "other.txt"
            other = await dispatch(server, "other", agents.metadata("long", other_notes, seconds=3))
            await wait_for_note(other_notes, "start")
            exit_notes = tmp_path / "exit.txt"
            exits = await dispatch(server, "exits", agents.metadata("sys_exit", exit_notes))
            exits = await wait_terminal(server, exits)
            assert other.status == agent.JS_RUNNING
            other = await wait_terminal(server, other)
            hook = await wait_for_note(exit_notes, "hook")
    assert exits.status == agent.JS_FAILED
    assert exits.error == "entrypoint raised SystemExit: 3"
    assert hook[1] == "entrypoint_raised_SystemExit"
    assert other.status == agent.JS_SUCCESS


@contextlib.asynccontextmanager
async def cancellable_worker(
    executor: JobExecutorType, **options: Any
) -> AsyncIterator[tuple[LocalServer, AgentServer, trio.CancelScope]]:
    async with open_local_server(port=0, departure_timeout=1) as server:
        worker = AgentServer(
            server.url,
            server.api_key,
            server.api_secret,
            job_executor_type=executor,
            port=None,
            load_fnc=lambda: 0.0,
            num_idle_processes=1,
            **options,
        )
        worker.rtc_session(agents.entrypoint)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(functools.partial(worker.run))
            yield server, worker, nursery.cancel_scope


@pytest.mark.parametrize("executor", OUTSIDE)
async def test_cancelling_run_gives_every_job_its_teardown_and_its_status(
    executor: JobExecutorType, tmp_path: Path
) -> None:
    """Row 1: no hook ran and no final status was sent (PROCESS: killed with its zygote)."""
    budget = 1.5
    notes = tmp_path / "notes.txt"
    async with cancellable_worker(executor, shutdown_process_timeout=budget) as (
        server,
        _,
        scope,
    ):
        with trio.fail_after(20):
            job = await dispatch(server, "cancelled", agents.metadata("wait", notes))
            await wait_for_note(notes, "start")
            await server.agents.changes.wait_until(lambda: len(job.history) >= 2)
            t0 = trio.current_time()
            scope.cancel()
    elapsed = trio.current_time() - t0
    assert job.status == agent.JS_SUCCESS
    assert (await wait_for_note(notes, "hook"))[1] == "worker_shutting_down"
    assert elapsed <= budget + 1 + 2 + 3


async def test_thread_jobs_cannot_use_an_in_memory_server() -> None:
    """Row 10: it failed inside trio (an AssertionError) when a job started."""
    from trio_agents import WorkerError

    async with open_local_server() as server:
        worker = AgentServer(
            server.memory_url,
            server.api_key,
            server.api_secret,
            job_executor_type=JobExecutorType.THREAD,
            port=None,
        )
        worker.rtc_session(agents.entrypoint)
        with pytest.raises(WorkerError, match="in-memory server"):
            await worker.run()


async def test_memory_is_sampled_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 9: a full sample reads /proc/PID/smaps (milliseconds, per job, every second):
    it ran on the worker's trio thread and stalled every job and the connection."""
    import threading

    from trio_agents._executor import _process

    sampled_on: list[int] = []
    real = _process._used_mb

    def spy(p: Any) -> float:
        sampled_on.append(threading.get_ident())
        return real(p)

    monkeypatch.setattr(_process, "_used_mb", spy)
    notes = tmp_path / "notes.txt"
    async with running_worker(job_memory_warn_mb=1) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "sampled", agents.metadata("wait", notes))
            await wait_for(lambda: len(sampled_on) >= 2)
            server.agents.terminate(job.job.id)
            await wait_terminal(server, job)
    assert threading.get_ident() not in sampled_on
