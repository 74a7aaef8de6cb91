"""The THREAD executor: the job runs its own trio run in a thread of the worker."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import executor_agents as agents
import pytest
import trio
from executor_helpers import dispatch, running_worker, wait_terminal
from livekit.protocol import agent

from trio_agents import JobExecutorType


async def test_a_job_runs_in_a_thread_and_its_shutdown_callback_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(agents.ENV_DIR, str(tmp_path))
    notes = tmp_path / "notes.txt"
    async with running_worker(JobExecutorType.THREAD, setup_fnc=agents.setup_ok) as (server, _):
        with trio.fail_after(20):
            job = await dispatch(server, "threaded", agents.metadata("info", notes))
            job = await wait_terminal(server, job)
    assert job.status == agent.JS_SUCCESS, job.error
    lines = {line[0]: line[1:] for line in agents.read_notes(notes)}
    pid, thread = int(lines["start"][0]), int(lines["start"][1])
    assert pid == os.getpid()
    assert thread != threading.get_ident()
    assert lines["executor"] == ["THREAD", str(pid)]
    # prewarm ran for it, in this process
    assert lines["userdata"] == [f'{{"warmed_by":{pid}}}']
    # the shutdown callback ran, in the job's thread
    assert lines["shutdown_callback"] == [str(pid), str(thread)]
