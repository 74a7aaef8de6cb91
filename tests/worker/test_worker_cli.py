"""Start-up errors through the command line: a one-line message, exit status 1,
no traceback (``python signal_agent.py start ...`` in a child process, and
``run_app`` in process for what needs no server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from livekit.protocol import agent

from trio_agents import AgentServer, JobContext, run_app
from trio_agents.testing import LocalServer, open_local_server

AGENT = Path(__file__).with_name("signal_agent.py")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    # PyJWT warns (two lines, once per token) about secrets shorter than 32 bytes,
    # which the dev keys and these test keys are; that is PyJWT's output, not ours
    env["PYTHONWARNINGS"] = "ignore:The HMAC key is"
    env.update(extra)
    return env


async def run_agent(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(20):
        return await trio.run_process(
            [sys.executable, str(AGENT), *args],
            env=env if env is not None else clean_env(),
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            stdin=b"",
        )


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with open_local_server(port=0) as s:
        yield s


async def test_wrong_credentials_exit_1_with_one_line(server: LocalServer) -> None:
    result = await run_agent(
        "start", "--url", server.url, "--api-key", "devkey", "--api-secret", "not-the-secret"
    )
    assert result.returncode == 1
    # the server's own words (LiveKit quotes the token it refused)
    line = one_line(result)
    assert line.startswith(
        f"error: the server at {server.url} rejected the credentials (api key 'devkey'): "
        "invalid token: "
    ), line
    assert line.endswith(", error: token signature is invalid: signature is invalid"), line
    assert server.agents.workers == {}


async def test_unknown_api_key_from_the_environment(server: LocalServer) -> None:
    env = clean_env(LIVEKIT_URL=server.url, LIVEKIT_API_KEY="nobody", LIVEKIT_API_SECRET="secret")
    result = await run_agent("start", env=env)
    assert result.returncode == 1
    assert one_line(result) == (
        f"error: the server at {server.url} rejected the credentials (api key 'nobody'): "
        "invalid API key: nobody"
    )


async def test_missing_configuration_exit_1_naming_what_is_missing() -> None:
    result = await run_agent("start", "--api-key", "devkey")
    assert result.returncode == 1
    assert one_line(result) == (
        "error: missing configuration: ws_url (LIVEKIT_URL), api_secret (LIVEKIT_API_SECRET)"
    )


async def test_unreachable_server_exits_1_after_its_retries() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()  # nobody listens there now
    result = await run_agent(
        "start", "--url", f"ws://127.0.0.1:{port}", "--api-key", "k", "--api-secret", "s",
        env=clean_env(SIGNAL_AGENT_MAX_RETRY="0"),
    )
    assert result.returncode == 1
    line = one_line(result)
    # it never had a connection: "cannot reach", with the cause (issue 9 row 13)
    assert line.startswith(
        f"error: cannot reach livekit at ws://127.0.0.1:{port} after 1 attempts: "
        f"cannot connect to ws://127.0.0.1:{port}/agent: "
    )
    assert line.endswith("Connection refused")


async def test_bad_url_exits_1() -> None:
    result = await run_agent(
        "start", "--url", "ftp://example.com", "--api-key", "k", "--api-secret", "s"
    )
    assert result.returncode == 1
    assert one_line(result).startswith("error: bad ws_url: url must be ws://, wss://")


# --- in process -------------------------------------------------------------------------


def test_run_app_reports_missing_configuration_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    server = AgentServer(port=None)

    @server.rtc_session()
    async def entry(ctx: JobContext) -> None:
        pass

    with pytest.raises(SystemExit) as info:
        run_app(server, ["start", "--url", "ws://127.0.0.1:7880"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "error: missing configuration: api_key (LIVEKIT_API_KEY), api_secret (LIVEKIT_API_SECRET)"
    )
    assert "Traceback" not in err


def test_run_app_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="AgentServer"):
        run_app("agent.py")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="rtc_session"):
        run_app(AgentServer())


async def test_connect_dispatches_the_agent_to_the_named_room(
    server: LocalServer, tmp_path: Path
) -> None:
    stderr_path = tmp_path / "connect.stderr"
    with trio.fail_after(20):
        with stderr_path.open("wb") as stderr:
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable, str(AGENT), "connect", "--room", "cli-room",
                    "--metadata", "from the command line", "--url", server.url,
                    "--api-key", server.api_key, "--api-secret", server.api_secret,
                    "--log-level", "INFO",
                ],
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            record = await server.wait_for_job(room="cli-room")
            await server.agents.changes.wait_until(lambda: len(record.history) >= 2)
            assert (record.job.agent_name, record.job.metadata) == (
                "signal-agent",
                "from the command line",
            )
            proc.send_signal(signal.SIGTERM)  # the job wraps up when draining starts
            assert await proc.wait() == 0
            assert record.history[-1] == agent.JS_SUCCESS
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert "Traceback" not in stderr_path.read_text()
