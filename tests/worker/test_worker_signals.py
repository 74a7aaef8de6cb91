"""Signals, end to end: ``python signal_agent.py start`` in a child process,
against a stand-in server on real loopback in the test process.

The first SIGTERM/SIGINT drains (WS_FULL, no new job, running jobs finish,
exit 0); a second one exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from livekit.protocol import agent, agent_dispatch

from trio_agents.testing import JobRecord, LocalServer, open_local_server

AGENT = Path(__file__).with_name("signal_agent.py")
TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Worker:
    """The agent's process and its stderr file."""

    def __init__(self, proc: trio.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server(port=0) as s:
        yield s


@contextlib.asynccontextmanager
async def start_agent(
    server: LocalServer, tmp_path: Path, mode: str, *extra: str
) -> AsyncIterator[Worker]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")
    } | {"SIGNAL_AGENT_MODE": mode}
    stderr_path = tmp_path / "agent.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [
                sys.executable, str(AGENT), "start",
                "--url", server.url, "--api-key", server.api_key, "--api-secret", server.api_secret,
                "--log-format", "text", "--log-level", "INFO", *extra,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    worker = Worker(proc, stderr_path)
    try:
        with trio.fail_after(20):
            await server.wait_for_workers(1, agent_name="signal-agent")
        yield worker
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.move_on_after(5, shield=True):
            await proc.wait()


async def two_running_jobs(server: LocalServer) -> list[JobRecord]:
    records = []
    for name in ("room-a", "room-b"):
        server.rooms.create(
            name, agents=[agent_dispatch.RoomAgentDispatch(agent_name="signal-agent")]
        )
        record = await server.wait_for_job(room=name)
        records.append(record)
    for record in records:
        # the worker reported JS_RUNNING and the agent is in its room
        await server.agents.changes.wait_until(lambda r=record: len(r.history) >= 2)
        room = server.rooms.get(record.job.room.name)
        assert room is not None
        # the stand-in has no event for joins: poll
        while f"agent-{record.job.id}" not in room.participants:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return records


async def test_first_sigterm_drains_two_running_jobs_then_exits_cleanly(
    server: LocalServer, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with start_agent(server, tmp_path, "cooperative") as worker:
            jobs = await two_running_jobs(server)
            (w,) = server.agents.workers.values()
            assert w.status == agent.WS_AVAILABLE

            worker.proc.send_signal(signal.SIGTERM)
            # draining is reported at once ...
            await server.agents.changes.wait_until(
                lambda: not server.agents.workers or w.status == agent.WS_FULL
            )
            assert w.status == agent.WS_FULL
            # ... so a new room finds no worker, while both jobs are still running
            server.rooms.create(
                "room-late", agents=[agent_dispatch.RoomAgentDispatch(agent_name="signal-agent")]
            )
            await server.agents.changes.wait_until(
                lambda: any(
                    r.job.room.name == "room-late" and r.status in TERMINAL
                    for r in server.agents.jobs.values()
                )
            )
            (late,) = [r for r in server.agents.jobs.values() if r.job.room.name == "room-late"]
            assert (late.status, late.worker_id) == (agent.JS_FAILED, None)
            assert all(r.status == agent.JS_RUNNING for r in jobs)

            # both jobs finish by themselves and report it; then the process exits 0
            for record in jobs:
                await server.wait_for_job_status(record.job.id, *TERMINAL)
                assert record.history[-1] == agent.JS_SUCCESS
            assert await worker.proc.wait() == 0
            stderr = worker.stderr
            assert "SIGTERM received: draining" in stderr
            assert "Traceback" not in stderr
    assert server.agents.workers == {}


@pytest.mark.parametrize(
    "signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM)]
)
async def test_a_second_signal_exits_at_once(
    server: LocalServer, tmp_path: Path, signals: tuple[signal.Signals, signal.Signals]
) -> None:
    with trio.fail_after(30):
        async with start_agent(server, tmp_path, "stubborn") as worker:
            jobs = await two_running_jobs(server)
            (w,) = server.agents.workers.values()
            worker.proc.send_signal(signals[0])
            await server.agents.changes.wait_until(lambda: w.status == agent.WS_FULL)
            await trio.sleep(0.2)
            assert worker.proc.returncode is None  # still draining: the jobs ignore it

            worker.proc.send_signal(signals[1])
            with trio.fail_after(1):
                code = await worker.proc.wait()
            assert code == 1
            assert f"second {signals[1].name}: exiting now" in worker.stderr
            assert all(r.status == agent.JS_RUNNING for r in jobs)  # no report: a hard exit


async def test_drain_timeout_from_the_command_line_bounds_the_drain(
    server: LocalServer, tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with start_agent(server, tmp_path, "stubborn", "--drain-timeout", "1") as worker:
            jobs = await two_running_jobs(server)
            t0 = trio.current_time()
            worker.proc.send_signal(signal.SIGTERM)
            assert await worker.proc.wait() == 0
            # drain_timeout (1 s), then the jobs' normal teardown
            assert 1 <= trio.current_time() - t0 < 1 + 5
            for record in jobs:
                assert record.history[-1] == agent.JS_SUCCESS
            assert "drain timed out" in worker.stderr

