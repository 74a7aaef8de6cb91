"""The PROCESS executor end to end: real job processes, a worker, a loopback stand-in.

Jobs are ``executor_agents.entrypoint``; each job's metadata says what it does
and names a file it appends its steps to.  Real processes need real time, so
every test bounds itself with ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import executor_agents as agents
import pytest
import trio
from executor_helpers import (
    dispatch,
    is_gone,
    running_worker,
    wait_for,
    wait_for_note,
    wait_terminal,
    words,
)
from livekit.protocol import agent

from trio_agents._executor import _process

# --- crashes --------------------------------------------------------------------------

CRASHES = {
    "exit": "job process exited with code 3",
    "segfault": "job process killed by SIGSEGV",
    "raise": "entrypoint raised RuntimeError: entrypoint-boom",
}


@pytest.mark.parametrize("mode", list(CRASHES))
async def test_a_crashing_job_fails_alone(mode: str, tmp_path: Path) -> None:
    async with running_worker() as (server, worker):
        with trio.fail_after(20):
            long_notes = tmp_path / "long.txt"
            long_job = await dispatch(
                server, "long", agents.metadata("long", long_notes, seconds=1.5)
            )
            long_pid = int((await wait_for_note(long_notes, "start"))[1])

            crash_notes = tmp_path / "crash.txt"
            crash = await dispatch(server, "crash", agents.metadata(mode, crash_notes))
            crash = await wait_terminal(server, crash)
            assert crash.status == agent.JS_FAILED
            assert crash.error == CRASHES[mode]
            crash_pid = int((await wait_for_note(crash_notes, "start"))[1])
            assert crash_pid != long_pid
            # (reported before it left its room: it is gone once its teardown ended)
            await wait_for(lambda: is_gone(crash_pid), interval=0.01)

            # the other job was untouched and ends on its own, normally
            assert not is_gone(long_pid)
            assert long_job.status == agent.JS_RUNNING
            long_job = await wait_terminal(server, long_job)
            assert long_job.status == agent.JS_SUCCESS, long_job.error
            await wait_for_note(long_notes, "hook")  # the hooks run after the report
            assert words(long_notes) == ["start", "done", "hook"]

            # and the worker takes new jobs
            after = await dispatch(server, "after", agents.metadata("info", tmp_path / "after.txt"))
            assert (await wait_terminal(server, after)).status == agent.JS_SUCCESS
        assert worker.worker_id in {r.worker_id for r in server.agents.jobs.values()}


# --- the teardown deadline, enforced from outside ------------------------------------------


async def test_a_hook_blocking_its_thread_is_killed_at_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 1.0
    notes = tmp_path / "notes.txt"
    async with running_worker(shutdown_process_timeout=budget) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "blocked", agents.metadata("blocking_hook", notes))
            pid = int((await wait_for_note(notes, "start"))[1])
            await wait_for_note(notes, "ready")

            started = trio.current_time()
            assert server.agents.terminate(job.job.id)  # JobTermination -> shutdown starts
            await wait_for(lambda: is_gone(pid), interval=0.01)
            elapsed = trio.current_time() - started
            assert elapsed <= budget + 1.0, f"process lived {elapsed:.2f} s after shutdown started"

            job = await wait_terminal(server, job)
    # the outcome was reported before the room was left and the hooks ran: the
    # status sent stands; the kill is logged (and in the job's teardown errors)
    assert job.status == agent.JS_SUCCESS
    # every hook that could run did run: the entrypoint's finally, the two
    # callbacks that do not block, and the blocking one up to its block
    assert set(words(notes)) == {
        "start",
        "ready",
        "entrypoint_finally",
        "sync_hook",
        "async_hook",
        "blocking_hook",
    }
    # the kill was explained, with the stack of the blocked thread
    kills = [r for r in caplog.records if r.getMessage().startswith(f"killing job process {pid}")]
    assert len(kills) == 1
    assert "hook_that_blocks_the_thread" in kills[0].getMessage()
    assert kills[0].job_id == job.job.id  # type: ignore[attr-defined]


# --- the pool -------------------------------------------------------------------------


@pytest.mark.parametrize("noticed", [True, False], ids=["pool-checks", "pool-blind"])
async def test_sigkill_of_an_idle_process_does_not_lose_the_next_job(
    noticed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not noticed:
        # the pool believes the dead process is fine: StartJob goes to a dead
        # process, which never acknowledges it, and the job must go elsewhere
        async def blind_watch(self: _process.ProcessExecutor, proc: _process.JobProc) -> None:
            with proc.watch:
                await trio.sleep_forever()

        monkeypatch.setattr(_process.ProcessExecutor, "_watch_idle", blind_watch)
        monkeypatch.setattr(_process.Zygote, "is_running", lambda self, pid: True)
    async with running_worker(num_idle_processes=1) as (server, worker):
        executor = worker._executor
        with trio.fail_after(20):
            idle = await wait_for(lambda: list(executor._idle))
            victim = idle[0].pid
            os.kill(victim, signal.SIGKILL)
            # at once, before the pool has necessarily noticed
            notes = tmp_path / "notes.txt"
            job = await dispatch(server, "next", agents.metadata("info", notes))
            job = await wait_terminal(server, job)
            assert job.status == agent.JS_SUCCESS, job.error
            pid = int((await wait_for_note(notes, "start"))[1])
            assert pid != victim
            # the pool refills
            await wait_for(lambda: [p for p in executor._idle if p.pid not in (victim, pid)])
    messages = [r.getMessage() for r in caplog.records]
    retried = f"job process {victim} died before it took job {job.job.id}; starting another"
    if noticed:
        # seen as dead by the pool, when taken, or (killed a moment ago) by the missing ack
        assert retried in messages or any(
            m.startswith(f"idle job process {victim} died") for m in messages
        )
    else:
        assert retried in messages


async def test_prewarm_that_raises_is_reported_retried_with_backoff_and_fails_jobs_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(agents.ENV_DIR, str(tmp_path))
    async with running_worker(setup_fnc=agents.setup_raises, initialize_process_timeout=2) as (
        server,
        worker,
    ):
        executor = worker._executor
        with trio.fail_after(20):
            await wait_for(lambda: len(executor.prewarm_failures) >= 2)
            t0 = trio.current_time()
            job = await dispatch(server, "doomed", agents.metadata("info", tmp_path / "notes.txt"))
            job = await wait_terminal(server, job)
            assert trio.current_time() - t0 < 2.0
        assert job.status == agent.JS_FAILED
        assert "failed to start" in job.error
        assert "RuntimeError: prewarm-boom" in job.error
        assert not (tmp_path / "notes.txt").exists()  # the entrypoint never ran
        # bounded retry: backoff 0.5, 1, 2, ... s between attempts
        await trio.sleep(1.0)
        failures = list(executor.prewarm_failures)
    pids = [pid for pid, _ in failures]
    assert 3 <= len(failures) <= 6, failures
    assert len(set(pids)) == len(pids)
    assert all(reason == "RuntimeError: prewarm-boom" for _, reason in failures)
    assert all(is_gone(pid) for pid in pids)
    for pid in pids:
        assert any(
            r.getMessage() == f"job process {pid} failed to start: RuntimeError: prewarm-boom"
            for r in caplog.records
        )


async def test_prewarm_past_its_timeout_is_killed_and_jobs_fail_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(agents.ENV_DIR, str(tmp_path))
    timeout = 0.5
    async with running_worker(
        setup_fnc=agents.setup_blocks, initialize_process_timeout=timeout
    ) as (
        server,
        worker,
    ):
        executor = worker._executor
        with trio.fail_after(20):
            first = await wait_for(lambda: list(executor.prewarm_failures))
            pid, reason = first[0]
            assert reason == f"setup did not finish within {timeout:g} s"
            await wait_for(lambda: is_gone(pid))

            t0 = trio.current_time()
            job = await wait_terminal(
                server, await dispatch(server, "doomed", agents.metadata("info"))
            )
            assert trio.current_time() - t0 < timeout + 3.0
        assert job.status == agent.JS_FAILED
        assert "setup did not finish within 0.5 s" in job.error


async def test_prewarm_that_fails_once_is_replaced_and_its_userdata_reaches_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(agents.ENV_DIR, str(tmp_path))
    async with running_worker(setup_fnc=agents.setup_fails_first) as (server, worker):
        executor = worker._executor
        with trio.fail_after(20):
            await wait_for(lambda: list(executor._idle))
            notes = tmp_path / "notes.txt"
            job = await wait_terminal(
                server, await dispatch(server, "warm", agents.metadata("info", notes))
            )
        assert job.status == agent.JS_SUCCESS, job.error
        [(failed_pid, reason)] = executor.prewarm_failures
    assert reason == "RuntimeError: first-prewarm-boom"
    pid = int(agents.read_notes(notes)[0][1])
    assert pid != failed_pid
    assert ["userdata", f'{{"warmed_by":{pid}}}'] in agents.read_notes(notes)


# --- memory ---------------------------------------------------------------------------


async def test_memory_limit_ends_the_job_and_its_hooks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_process, "MEMORY_INTERVAL", 0.1)
    notes = tmp_path / "notes.txt"
    async with running_worker(job_memory_limit_mb=200) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "hog", agents.metadata("memory", notes, mb=300))
            job = await wait_terminal(server, job)
    assert job.status == agent.JS_FAILED
    assert "job_memory_limit_mb=200" in job.error
    assert words(notes) == ["start", "allocated", "entrypoint_finally", "hook"]
    assert agents.read_notes(notes)[-1] == ["hook", "memory_limit_exceeded"]


# --- logs -----------------------------------------------------------------------------


async def test_log_records_from_the_job_process_carry_job_pid_and_custom_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notes = tmp_path / "notes.txt"
    async with running_worker() as (server, _):
        with trio.fail_after(20):
            job = await wait_terminal(
                server, await dispatch(server, "logs", agents.metadata("log", notes))
            )
    assert job.status == agent.JS_SUCCESS, job.error
    pid = int(agents.read_notes(notes)[0][1])
    records = {r.getMessage(): r for r in caplog.records if r.name == agents.logger.name}
    assert set(records) == {"hello from the entrypoint", "hello from a child task"}
    for record in records.values():
        fields = record.__dict__
        assert fields["job_id"] == job.job.id
        assert fields["pid"] == pid
        assert record.process == pid  # the record was made in the job process
        assert fields["room"] == "logs"
        assert fields["customer"] == "acme"
        assert fields["call_n"] == 7
        assert record.levelno == logging.WARNING
    assert records["hello from a child task"].__dict__["step"] == "child"


# --- subprocesses ---------------------------------------------------------------------


@pytest.mark.parametrize("end", ["shutdown", "crash"])
async def test_subprocesses_of_a_job_end_with_it(end: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    async with running_worker() as (server, _):
        with trio.fail_after(20):
            job = await wait_terminal(
                server,
                await dispatch(server, "spawner", agents.metadata("subprocess", notes, then=end)),
            )
            child = int((await wait_for_note(notes, "child"))[1])
            await wait_for(lambda: is_gone(child))
    assert job.status == (agent.JS_SUCCESS if end == "shutdown" else agent.JS_FAILED)
