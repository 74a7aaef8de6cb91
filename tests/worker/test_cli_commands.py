"""CLI parity with livekit-agents: connect --participant-identity, download-files."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from livekit.protocol import agent

from tests.worker.test_worker_cli import AGENT, clean_env, run_agent
from trio_agents import AgentServer, JobContext, JobRequest
from trio_agents.cli import build_app_cli
from trio_agents.testing import LocalServer, open_local_server


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server(port=0) as s:
        yield s


async def test_connect_joins_with_the_given_participant_identity(server: LocalServer) -> None:
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(AGENT),
                "connect",
                "--room",
                "id-room",
                "--participant-identity",
                "my-agent-identity",
                "--url",
                server.url,
                "--api-key",
                server.api_key,
                "--api-secret",
                server.api_secret,
                "--log-level",
                "warn",
            ],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            record = await server.wait_for_job(room="id-room")
            assert record.job.state.participant_identity == "my-agent-identity"
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            assert record.history[-1] == agent.JS_SUCCESS
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def test_participant_identity_with_an_on_request_handler_is_a_clear_error() -> None:
    ws = AgentServer()

    async def on_request(req: JobRequest) -> None:
        await req.accept()

    @ws.rtc_session(agent_name="a", on_request=on_request)
    async def entry(ctx: JobContext) -> None:
        pass

    cli = build_app_cli(ws)
    with pytest.raises(SystemExit) as exc:
        cli.main(
            ["connect", "--room", "r", "--participant-identity", "x", "--url", "ws://127.0.0.1:9"],
            standalone_mode=False,
        )
    assert exc.value.code == 1


async def test_download_files_is_a_no_op_that_says_so() -> None:
    result = await run_agent("download-files")
    assert result.returncode == 0
    assert b"nothing to do" in result.stderr


async def test_health_port_moves_the_health_server(server: LocalServer) -> None:
    # two workers on one host no longer have to collide on 8081
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(AGENT),
                "start",
                "--health-port",
                str(port),
                "--url",
                server.url,
                "--api-key",
                server.api_key,
                "--api-secret",
                server.api_secret,
                "--log-level",
                "warn",
            ],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await server.wait_for_workers(1)
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{port}/worker")
            assert resp.status_code == 200
            assert resp.json()["agent_name"] == "signal-agent"
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_health_port_is_checked() -> None:
    result = await run_agent("start", "--health-port", "70000")
    assert result.returncode == 2
    assert b"70000 is not in the range" in result.stderr


async def test_console_talks_to_the_agent_from_the_terminal() -> None:
    """Each typed line reaches the agent as text; its replies are printed; EOF leaves."""
    agent_file = Path(__file__).with_name("console_agent.py")
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(agent_file), "console", "--identity", "me"],
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        out = b""

        async def read_until(needle: bytes) -> None:
            nonlocal out
            assert proc.stdout is not None
            while needle not in out:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"console ended before {needle!r}: {out.decode()}"
                out += chunk

        try:
            await read_until(b"type a line")
            await proc.stdin.send_all(b"hello agent\n")
            await read_until(b"HELLO AGENT")
            await proc.stdin.aclose()  # Ctrl-D: leave; the room closes, the job ends
            await read_until(b"the job ended: JS_SUCCESS")
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert b"[agent-" in out  # replies are labelled with the agent's identity
