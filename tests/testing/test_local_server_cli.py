"""`trio-agents local-server`: the stand-in as a command, with livekit-server --dev defaults."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import trio
from livekit.protocol.room import ListRoomsRequest

from trio_agents.api import LiveKitAPI
from trio_agents.cli import main


def test_defaults_are_those_of_livekit_server_dev() -> None:
    params = {p.name: p.default for p in main.commands["local-server"].params}
    assert params["host"] == "127.0.0.1"
    assert params["port"] == 7880
    assert params["api_key"] == "devkey"
    assert params["api_secret"] == "secret"
    assert params["departure_timeout"] == 20.0


async def test_local_server_command_serves_the_api_and_stops_on_sigint() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_agents", "local-server", "--port", "0"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    try:
        seen = b""
        with trio.fail_after(30):
            while not re.search(rb"at (ws://127\.0\.0\.1:\d+)", seen):
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        match = re.search(rb"at (ws://127\.0\.0\.1:\d+)", seen)
        assert match is not None
        url = match.group(1).decode()
        async with LiveKitAPI(url, "devkey", "secret") as lk:
            rooms = await lk.room.list_rooms(ListRoomsRequest())
        assert list(rooms.rooms) == []
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            code = await proc.wait()
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stderr.aclose()


async def test_a_port_in_use_is_a_one_line_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = await trio.run_process(
            [sys.executable, "-m", "trio_agents", "local-server", "--port", str(port)],
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    err = result.stderr.decode()
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
