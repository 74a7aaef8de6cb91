"""Driving a running stand-in from another process: ``trio-agents dispatch`` and ``sim``.

The stand-in runs here on loopback with a worker (the demo agent: greets each
participant on topic ``greeting``, echoes ``chat`` texts upper-cased on
``echo``); every step is a separate ``trio-agents`` command, as a developer
would type them in a second terminal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import trio
from livekit.protocol import agent

from trio_agents import AgentServer, JobExecutorType
from trio_agents._demo import demo_entrypoint
from trio_agents.testing import LocalServer, open_local_server

AGENT = "outside-agent"


@pytest.fixture
async def running() -> AsyncIterator[LocalServer]:
    async with open_local_server(port=0, departure_timeout=0.5) as server:
        worker = AgentServer(
            server.url,
            server.api_key,
            server.api_secret,
            job_executor_type=JobExecutorType.INLINE,
            load_fnc=lambda: 0.0,
            load_threshold=math.inf,
            port=None,
        )
        worker.rtc_session(agent_name=AGENT)(demo_entrypoint)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            await worker.wait_registered()
            yield server
            await worker.aclose()
            nursery.cancel_scope.cancel()


async def cli(server: LocalServer, *args: str, check: bool = True) -> str:
    """``trio-agents COMMAND --url <the stand-in> ARGS``; its output (stdout + stderr)."""
    split = 2 if args[0] == "sim" else 1  # the command path: "dispatch" or "sim say"
    result = await trio.run_process(
        [sys.executable, "-m", "trio_agents", *args[:split], "--url", server.url, *args[split:]],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return (result.stdout + result.stderr).decode()


async def test_dispatch_join_say_attrs_audio_leave(running: LocalServer) -> None:
    server = running
    with trio.fail_after(60):
        out = await cli(server, "dispatch", "--room", "r1", "--agent-name", AGENT)
        assert out.strip().startswith("AD_")
        record = await server.wait_for_job(room="r1")

        await cli(
            server,
            "sim",
            "join",
            "--room",
            "r1",
            "--identity",
            "alice",
            "--attribute",
            "mood=curious",
            "--kind",
            "sip",
        )
        room = server.rooms.get("r1")
        assert room is not None
        alice = next(p for p in room.participants.values() if p.identity == "alice")
        assert dict(alice.info.attributes) == {"mood": "curious"}
        assert alice.info.kind == 3  # SIP

        await cli(
            server,
            "sim",
            "say",
            "--room",
            "r1",
            "--identity",
            "alice",
            "--topic",
            "chat",
            "hello agent",
        )
        texts: list[dict[str, str]] = []
        while not any(t["topic"] == "echo" for t in texts):
            out = await cli(server, "sim", "texts", "--room", "r1", "--identity", "alice")
            texts = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert {
            "from": record.job.state.participant_identity,
            "topic": "echo",
            "text": "HELLO AGENT",
        } in texts
        assert any(t["topic"] == "greeting" and "alice" in t["text"] for t in texts)

        await cli(server, "sim", "attrs", "--room", "r1", "--identity", "alice", "mood=happy")
        assert dict(alice.info.attributes) == {"mood": "happy"}
        await cli(
            server,
            "sim",
            "publish-audio",
            "--room",
            "r1",
            "--identity",
            "alice",
            "--seconds",
            "0.2",
        )
        assert alice.info.tracks, "the tone was published as a track"

        await cli(server, "sim", "leave", "--room", "r1", "--identity", "alice")
        assert all(p.identity != "alice" for p in room.participants.values())
        # the last participant left: the room closes and the job ends cleanly
        final = await server.wait_for_job_status(record.job.id, agent.JS_SUCCESS, agent.JS_FAILED)
        assert final.status == agent.JS_SUCCESS


async def test_sim_errors_are_one_line(running: LocalServer) -> None:
    server = running
    with trio.fail_after(60):
        out = await cli(
            server, "sim", "say", "--room", "nowhere", "--identity", "bob", "x", check=False
        )
        assert "no simulated participant 'bob' in room 'nowhere'" in out
        assert "Traceback" not in out
        await cli(server, "sim", "join", "--room", "r2", "--identity", "bob")
        out = await cli(server, "sim", "join", "--room", "r2", "--identity", "bob", check=False)
        assert "'bob' is in room 'r2' already" in out
        out = await cli(
            server,
            "sim",
            "join",
            "--room",
            "r2",
            "--identity",
            "eve",
            "--api-secret",
            "wrong",
            check=False,
        )
        assert "sim join:" in out
        assert "signature is invalid" in out
        assert "invalid token: <token>, error" in out  # the refused token is not printed
        out = await cli(
            server, "sim", "attrs", "--room", "r2", "--identity", "bob", "oops", check=False
        )
        assert "'oops' is not KEY=VALUE" in out
        await cli(server, "sim", "leave", "--room", "r2", "--identity", "bob")
