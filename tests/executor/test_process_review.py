"""The PROCESS executor under stress: zygote death, leaks, pid safety, log levels,
start-up errors.  Real processes need real time: every test bounds itself."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import executor_agents as agents
import pytest
import review_agents
import trio
from executor_helpers import (
    dispatch,
    is_gone,
    running_worker,
    wait_for,
    wait_for_note,
    wait_terminal,
)
from livekit.protocol import agent
from livekit.protocol.agent_dispatch import RoomAgentDispatch

from trio_agents import AgentServer, JobContext, JobExecutorType, WorkerError
from trio_agents._executor import _ipc, _process, _zygote
from trio_agents.testing import LocalServer, open_local_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")


@contextlib.asynccontextmanager
async def worker_with(
    entrypoint: Callable[[JobContext], Any], **options: Any
) -> AsyncIterator[tuple[LocalServer, AgentServer]]:
    options.setdefault("num_idle_processes", 1)
    options.setdefault("shutdown_process_timeout", 1.5)
    async with open_local_server(port=0, departure_timeout=1) as server:
        worker = AgentServer(
            server.url,
            server.api_key,
            server.api_secret,
            job_executor_type=JobExecutorType.PROCESS,
            port=None,
            load_fnc=lambda: 0.0,
            **options,
        )
        worker.rtc_session(entrypoint)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(functools.partial(worker.run, handle_signals=False))
                await worker.wait_registered()
            yield server, worker
            with trio.fail_after(15):
                await worker.aclose()
            nursery.cancel_scope.cancel()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- the zygote dies ---------------------------------------------------------------------


async def test_zygote_death_fails_its_jobs_at_once_and_the_pool_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_worker(num_idle_processes=1) as (server, worker):
        executor = worker._executor
        with trio.fail_after(30):
            notes = tmp_path / "notes.txt"
            job = await dispatch(server, "victim", agents.metadata("wait", notes))
            job_pid = int((await wait_for_note(notes, "start"))[1])
            old_zygote = executor._zygote
            os.kill(old_zygote._proc.pid, signal.SIGKILL)

            # the job process died with it (PDEATHSIG): its job ends now, as failed
            with trio.fail_after(5):
                job = await wait_terminal(server, job)
            assert job.status == agent.JS_FAILED
            assert "zygote" in job.error, job.error
            assert is_gone(job_pid)

            # a new zygote takes the next jobs
            after = await wait_terminal(
                server, await dispatch(server, "after", agents.metadata("info", tmp_path / "a.txt"))
            )
            assert after.status == agent.JS_SUCCESS, after.error
            assert executor._zygote is not old_zygote
            assert old_zygote._proc.returncode is not None  # reaped, not a zombie
    assert any("zygote" in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)


# --- leaks ----------------------------------------------------------------------------------


async def test_many_jobs_leave_no_descriptors_and_no_stack_dump_files(tmp_path: Path) -> None:
    dump_paths: set[str] = set()
    async with running_worker(num_idle_processes=2) as (server, worker):
        executor = worker._executor

        spawn = executor._spawn

        async def recording_spawn(*args: Any) -> Any:
            proc = await spawn(*args)
            dump_paths.add(proc.dump_path)
            return proc

        executor._spawn = recording_spawn
        with trio.fail_after(60):
            await wait_for(lambda: len(executor._idle) == 2)
            dump_paths.update(p.dump_path for p in executor._idle)
            for i in range(3):  # warm up: lazily opened descriptors are opened
                warm = await dispatch(server, f"warm{i}", agents.metadata("info"))
                await wait_terminal(server, warm)
            await wait_for(lambda: len(executor._idle) == 2)
            before = open_fds()
            for i in range(40):
                mode = "exit" if i % 10 == 9 else "info"  # a few that die without cleaning up
                job = await dispatch(server, f"r{i}", agents.metadata(mode))
                job = await wait_terminal(server, job)
                assert job.status == (agent.JS_SUCCESS if mode == "info" else agent.JS_FAILED)
            await wait_for(lambda: len(executor._idle) == 2)
            # connections of the last jobs may take a moment to close; none stays open
            await wait_for(lambda: open_fds() <= before)
    assert len(dump_paths) >= 40
    assert all(dump_paths), dump_paths
    left = sorted(p for p in dump_paths if Path(p).exists())  # noqa: ASYNC240 - local files
    assert left == []  # the idle processes killed at close included


# --- pids -----------------------------------------------------------------------------------


async def test_a_pid_reused_after_an_unclaimed_exit_is_a_new_process() -> None:
    """An exit report nobody waited for must not be taken for a later process's exit."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = _process.Zygote()
    zygote._sock = trio.socket.from_stdlib_socket(ours)
    zygote._forked, zygote._forked_recv = trio.open_memory_channel[int](10)
    zygote.alive = True
    with theirs, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(zygote._reader)
            theirs.send(pickle.dumps(_zygote.Exited(4242, 3 << 8)))  # nobody claims it
            theirs.send(pickle.dumps(_zygote.Forked(4242)))  # the pid, reused by our next process
            assert await zygote._forked_recv.receive() == 4242
            codes: list[int | None] = []

            async def wait() -> None:
                codes.append(await zygote.wait_exit(4242))

            nursery.start_soon(wait)
            await trio.sleep(0.2)
            assert codes == []  # the new process runs
            theirs.send(pickle.dumps(_zygote.Exited(4242, 5 << 8)))
            await wait_for(lambda: codes)
            assert codes == [5]
            theirs.shutdown(socket.SHUT_RDWR)
    zygote._sock.close()


async def test_the_worker_never_signals_a_job_process_after_it_was_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pid may belong to another process by then (and its group id to another group)."""
    signalled: list[int] = []
    real_kill, real_killpg = os.kill, os.killpg

    def kill(pid: int, sig: int) -> None:
        signalled.append(pid)
        real_kill(pid, sig)

    def killpg(pgid: int, sig: int) -> None:
        signalled.append(pgid)
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    async with running_worker() as (server, _):
        with trio.fail_after(20):
            pids = []
            for mode in ("info", "raise", "exit"):
                notes = tmp_path / f"{mode}.txt"
                job = await dispatch(server, mode, agents.metadata(mode, notes))
                await wait_terminal(server, job)
                pids.append(int((await wait_for_note(notes, "start"))[1]))
            await trio.sleep(0.3)
            assert all(is_gone(pid) for pid in pids)
            assert [pid for pid in signalled if pid in pids] == []


async def test_subprocesses_left_by_a_killed_job_still_end_with_it(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    async with running_worker() as (server, _):
        with trio.fail_after(20):
            job = await wait_terminal(
                server,
                await dispatch(
                    server, "spawner", agents.metadata("subprocess", notes, then="crash")
                ),
            )
            child = int((await wait_for_note(notes, "child"))[1])
            await wait_for(lambda: is_gone(child))
    assert job.status == agent.JS_FAILED


# --- logs -----------------------------------------------------------------------------------


async def test_job_processes_log_at_the_levels_the_worker_has_when_the_job_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)  # when the zygote and the idle process start
    async with worker_with(review_agents.log_levels) as (server, _):
        # the worker's configuration changes later (as run_app's setup_logging does
        # for noisy libraries): the next job follows it
        caplog.set_level(logging.DEBUG)
        review_agents.quiet.setLevel(logging.WARNING)
        try:
            with trio.fail_after(20):
                server.rooms.create("logs", agents=[RoomAgentDispatch(agent_name="")])
                job = await server.wait_for_job(room="logs")
                job = await wait_terminal(server, job)
        finally:
            review_agents.quiet.setLevel(logging.NOTSET)
    assert job.status == agent.JS_SUCCESS, job.error
    seen = {r.getMessage() for r in caplog.records if r.name.startswith("tests.review")}
    assert seen == {"chatty debug", "chatty info", "quiet warning"}


# --- start-up errors ---------------------------------------------------------------------


async def test_an_entrypoint_job_processes_cannot_reach_is_a_worker_error() -> None:
    async def nested(ctx: JobContext) -> None:
        pass

    worker = AgentServer(
        "ws://127.0.0.1:9", "key", "secret", job_executor_type=JobExecutorType.PROCESS, port=None
    )
    worker.rtc_session(nested)
    with trio.fail_after(10), pytest.raises(WorkerError, match="module-level function"):
        await worker.run(handle_signals=False)


async def test_an_agent_module_the_zygote_cannot_import_is_a_one_line_worker_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import review_import_fails

    monkeypatch.setenv(review_import_fails.FAIL, "1")  # the zygote inherits it
    worker = AgentServer(
        "ws://127.0.0.1:9", "key", "secret", job_executor_type=JobExecutorType.PROCESS, port=None
    )
    worker.rtc_session(review_import_fails.entry)
    with trio.fail_after(30), pytest.raises(WorkerError) as info:
        await worker.run(handle_signals=False)
    message = str(info.value)
    assert "RuntimeError: the agent module refuses to load" in message
    assert "\n" not in message
    # the user's traceback is in the log, where the user can find the line
    assert any("review_import_fails.py" in (r.exc_text or r.getMessage()) for r in caplog.records)


# --- watchdogs -------------------------------------------------------------------------------


async def test_a_job_process_that_stops_answering_pings_is_dumped_and_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_process, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(_process, "PING_TIMEOUT", 0.6)
    notes = tmp_path / "notes.txt"
    async with running_worker() as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "hung", agents.metadata("block", notes))
            pid = int((await wait_for_note(notes, "start"))[1])
            job = await wait_terminal(server, job)
            await wait_for(lambda: is_gone(pid))
    assert job.status == agent.JS_FAILED
    assert job.error == "job process unresponsive for 0.6 s"
    [kill] = [r for r in caplog.records if r.getMessage().startswith(f"killing job process {pid}")]
    assert "_block" in kill.getMessage()  # the stack of the blocked thread


async def test_the_memory_warning_is_rate_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_process, "MEMORY_INTERVAL", 0.02)
    async with running_worker(job_memory_warn_mb=1) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "big", agents.metadata("wait"))
            await server.agents.changes.wait_until(lambda: len(job.history) >= 2)
            await trio.sleep(0.5)  # some 25 samples, all over the threshold
            assert server.agents.terminate(job.job.id)
            job = await wait_terminal(server, job)
    warnings = [r for r in caplog.records if "job_memory_warn_mb=1" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].job_id == job.job.id  # type: ignore[attr-defined]


async def test_a_log_record_too_big_for_one_frame_is_cut_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with worker_with(review_agents.log_a_huge_message) as (server, _):
        with trio.fail_after(30):
            server.rooms.create("huge", agents=[RoomAgentDispatch(agent_name="")])
            job = await wait_terminal(server, await server.wait_for_job(room="huge"))
    assert job.status == agent.JS_SUCCESS, job.error
    messages = [r.getMessage() for r in caplog.records if r.name == review_agents.chatty.name]
    assert len(messages) == 2
    assert messages[0].startswith("huge xxx")
    assert "truncated" in messages[0]
    assert len(messages[0]) < _ipc.MAX_FRAME
    assert messages[1] == "after the huge one"


async def test_an_error_too_big_for_one_frame_still_reaches_the_server() -> None:
    async with worker_with(review_agents.raise_a_huge_error) as (server, _):
        with trio.fail_after(30):
            server.rooms.create("huge", agents=[RoomAgentDispatch(agent_name="")])
            job = await wait_terminal(server, await server.wait_for_job(room="huge"))
    assert job.status == agent.JS_FAILED
    assert job.error.startswith("entrypoint raised RuntimeError: zzz"), job.error[:100]
    assert "truncated" in job.error
