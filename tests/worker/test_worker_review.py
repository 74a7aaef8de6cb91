"""The worker with the PROCESS executor, end to end: ``python agent.py start|dev``
from a temporary agent file in a child process, signals sent the way process
managers send them, a reconnect under a running job process; and the HTTP
server's socket when its port is busy."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import review_agent
import trio
from livekit.protocol import agent, agent_dispatch
from worker_helpers import TCPProxy, make_worker, running

from trio_agents import JobContext, JobExecutorType
from trio_agents._health import health_app
from trio_agents._http import serve_tcp
from trio_agents.testing import JobRecord, LocalServer, open_local_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)

AGENT_FILE = '''
import os

import trio

from trio_agents import AgentServer, JobContext, JobExecutorType, run_app

NOTES = os.environ["REVIEW_NOTES"]


def note(*words: object) -> None:
    with open(NOTES, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


server = AgentServer(
    job_executor_type=JobExecutorType.PROCESS,
    load_fnc=lambda: 0.0,
    num_idle_processes=int(os.environ["REVIEW_IDLE"]) if os.environ["REVIEW_IDLE"] else None,
    shutdown_process_timeout=3,
    port=int(os.environ["REVIEW_PORT"]) if os.environ["REVIEW_PORT"] else None,
)


@server.rtc_session(agent_name="review-agent")
async def entry(ctx: JobContext) -> None:
    await ctx.connect()
    note("start", ctx.job.id, os.getpid())
    await ctx.shutting_down.wait()
    note("draining", ctx.job.id)
    await trio.sleep(0.5)
    ctx.shutdown("finished after drain")


note("imported", __name__, os.getpid())

if __name__ == "__main__":
    run_app(server)
'''


def read_notes(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


async def wait_for_notes(path: Path, word: str, count: int) -> list[list[str]]:
    while len(found := [n for n in read_notes(path) if n[0] == word]) < count:  # noqa: ASYNC110
        await trio.sleep(0.02)
    return found


@contextlib.asynccontextmanager
async def agent_process(
    server: LocalServer, tmp_path: Path, args: list[str], **env_extra: str
) -> AsyncIterator[trio.Process]:
    """``python ARGS`` in ``tmp_path``, configured for ``server``, in a process group of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(
        LIVEKIT_URL=server.url,
        LIVEKIT_API_KEY=server.api_key,
        LIVEKIT_API_SECRET=server.api_secret,
        REVIEW_NOTES=str(tmp_path / "notes.txt"),
        PYTHONWARNINGS="ignore:The HMAC key is",
        **env_extra,
    )
    with (tmp_path / "agent.stderr").open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, *args],
            cwd=str(tmp_path),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, as under a process manager
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with trio.move_on_after(5, shield=True):
            await proc.wait()


async def two_running_jobs(server: LocalServer, notes: Path) -> list[JobRecord]:
    records = []
    for name in ("room-a", "room-b"):
        server.rooms.create(
            name, agents=[agent_dispatch.RoomAgentDispatch(agent_name="review-agent")]
        )
        records.append(await server.wait_for_job(room=name))
    await wait_for_notes(notes, "start", 2)
    return records


@pytest.mark.parametrize("command", ["start", "dev"])
async def test_agent_file_with_process_jobs_drains_on_a_signal_to_all_its_processes(
    command: str, tmp_path: Path
) -> None:
    """``start``: SIGTERM to every process of the worker, as systemd stops a service
    (KillMode=control-group); ``dev``: Ctrl-C, SIGINT to the foreground group."""
    notes = tmp_path / "notes.txt"
    async with open_local_server(port=0) as server:
        idle, port = ("1", "") if command == "start" else ("", "8081")  # dev: its own defaults
        script = tmp_path / "agent.py"
        script.write_text(AGENT_FILE)
        async with agent_process(
            server, tmp_path, [str(script), command], REVIEW_IDLE=idle, REVIEW_PORT=port
        ) as proc:
            with trio.fail_after(30):
                await server.wait_for_workers(1, agent_name="review-agent")
                jobs = await two_running_jobs(server, notes)
                job_pids = [int(n[2]) for n in await wait_for_notes(notes, "start", 2)]
                t0 = trio.current_time()
                if command == "start":
                    os.killpg(proc.pid, signal.SIGTERM)  # the worker and its zygote
                    for pid in job_pids:  # job processes lead groups of their own
                        os.kill(pid, signal.SIGTERM)
                else:
                    os.killpg(proc.pid, signal.SIGINT)
                code = await proc.wait()
                elapsed = trio.current_time() - t0
            stderr = (tmp_path / "agent.stderr").read_text()
            assert code == 0, stderr
            assert elapsed < 10, stderr
            # every job process saw the worker drain and ended by itself
            assert sorted(n[1] for n in read_notes(notes) if n[0] == "draining") == sorted(
                r.job.id for r in jobs
            )
            for record in jobs:
                assert record.history[-1] == agent.JS_SUCCESS, (record.error, stderr)
            assert "Traceback" not in stderr
            # the zygote loaded the agent file without running its command line
            imported = [n for n in read_notes(notes) if n[0] == "imported"]
            assert [n[1] for n in imported] == ["__main__", "__trio_agents_main__"], imported


async def test_an_agent_module_run_with_dash_m_loads_in_job_processes_as_a_module(
    tmp_path: Path,
) -> None:
    """``python -m pkg.agent start``: the module uses relative imports, which only
    work when job processes import it by its name, as part of its package."""
    notes = tmp_path / "notes.txt"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("GREETING = 'hello'\n")
    (package / "agent.py").write_text("from .helpers import GREETING\n" + AGENT_FILE)
    args = ["-m", "pkg.agent", "start"]
    async with (
        open_local_server(port=0) as server,
        agent_process(server, tmp_path, args, REVIEW_IDLE="1", REVIEW_PORT="") as proc,
    ):
        with trio.fail_after(30):
            await server.wait_for_workers(1, agent_name="review-agent")
            server.rooms.create(
                "room", agents=[agent_dispatch.RoomAgentDispatch(agent_name="review-agent")]
            )
            job = await server.wait_for_job(room="room")
            await wait_for_notes(notes, "start", 1)
            proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
        stderr = (tmp_path / "agent.stderr").read_text()
        assert code == 0, stderr
        assert job.history[-1] == agent.JS_SUCCESS, (job.error, stderr)
        imported = [n[1] for n in read_notes(notes) if n[0] == "imported"]
        assert imported == ["__main__", "pkg.agent"]


BAD_AGENT_FILE = """
from trio_agents import AgentServer, JobContext, JobExecutorType, run_app

server = AgentServer(job_executor_type=JobExecutorType.PROCESS, port=None)

if __name__ == "__main__":

    @server.rtc_session(agent_name="hidden")
    async def entry(ctx: JobContext) -> None:
        pass

    run_app(server)
"""


async def test_an_entrypoint_defined_under_the_main_guard_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(BAD_AGENT_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["PYTHONWARNINGS"] = "ignore:The HMAC key is"
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(script), "start", "--url", "ws://127.0.0.1:9",
             "--api-key", "key", "--api-secret", "secret", "--log-format", "text"],
            env=env,
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            stdin=b"",
        )
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: cannot start job processes:")
    assert "'entry' is not defined" in lines[0]
    assert "__main__" in lines[0]


# --- reconnecting under a running job process ---------------------------------------------


async def test_a_process_job_outlives_a_dropped_worker_connection(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    with trio.fail_after(30):
        async with open_local_server(port=0) as server, trio.open_nursery() as nursery:
            proxy = TCPProxy(int(server.url.rsplit(":", 1)[1]))
            await nursery.start(proxy.serve)
            ws = make_worker(
                proxy.url,
                job_executor_type=JobExecutorType.PROCESS,
                num_idle_processes=1,
                shutdown_process_timeout=2,
            )
            ws.rtc_session(review_agent.wait_for_shutdown)
            async with running(ws):
                first_id = ws.worker_id
                server.create_room("steady", metadata=str(notes))
                record = await server.wait_for_job(room="steady")
                await server.agents.changes.wait_until(lambda: len(record.history) >= 2)
                assert proxy.cut() == 1
                await server.agents.changes.wait_until(
                    lambda: ws.worker_id in server.agents.workers
                    and ws.worker_id != first_id
                    and record.worker_id == ws.worker_id  # MigrateJob arrived
                )
                await trio.sleep(0.3)
                assert record.status == agent.JS_RUNNING
                assert not notes.exists()  # no teardown started
                # the new connection carries the termination and the final status
                assert server.agents.terminate(record.job.id)
                await server.wait_for_job_status(record.job.id, *TERMINAL)
            assert record.status == agent.JS_SUCCESS, record.error
            assert notes.read_text().split() == ["job_terminated_by_the_server"]
            nursery.cancel_scope.cancel()


# --- the HTTP server -------------------------------------------------------------------------


async def test_a_busy_port_leaves_no_socket_behind() -> None:
    app = health_app(lambda: (True, "OK"), dict)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            failures = 0
            for _ in range(3):
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(serve_tcp, app, "127.0.0.1", port)
                except* OSError:
                    failures += 1
            gc.collect()
    assert failures == 3
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


async def test_the_http_server_still_serves_and_frees_its_port() -> None:
    app = health_app(lambda: (True, "OK"), dict)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data = b""
            async for chunk in stream:
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert data.endswith(b"OK")
        nursery.cancel_scope.cancel()
    with socket.socket() as again:  # nothing listens there any more
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


# --- sizes -----------------------------------------------------------------------------------


async def test_a_huge_error_is_cut_to_fit_the_status_update() -> None:
    """An entrypoint error of megabytes (a response body in the message) must not
    make the status update too big for the server, which would reset the
    connection on every attempt to send it."""

    async def entry(ctx: JobContext) -> None:
        raise RuntimeError("y" * (3 * 1024 * 1024))

    with trio.fail_after(30):
        async with open_local_server(port=0) as server:
            ws = make_worker(server.url)
            ws.rtc_session(entry)
            async with running(ws):
                first_id = ws.worker_id
                server.create_room("huge-error")
                record = await server.wait_for_job(room="huge-error")
                await server.wait_for_job_status(record.job.id, *TERMINAL)
                assert ws.worker_id == first_id  # the connection was not reset
    assert record.status == agent.JS_FAILED
    assert record.error.startswith("entrypoint raised RuntimeError: yyy")
    assert "truncated" in record.error
    assert len(record.error) <= 64 * 1024
