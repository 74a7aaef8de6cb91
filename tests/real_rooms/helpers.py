"""Real-room test helpers: SDK participants and trio-agents workers, each in its own process.

Every process that joins a room over WebRTC runs inside the real server's
network namespace (``livekit_server.netns.cmd``): official-SDK participants
(``sdk_participant.py``) and trio-agents workers (whose job processes join
rooms).  The pytest process itself only talks to the server's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio
from livekit import api as lkapi
from livekit.protocol import agent_dispatch

from tests.real_server.harness import ServerProcess
from trio_agents.api import LiveKitAPI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTICIPANT = HERE / "sdk_participant.py"
RUN_AGENT = HERE / "run_agent.py"
#: Generous bound of every wait (2 shared cores, other suites running).
WAIT = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def token(server: ServerProcess, identity: str, room: str, *, kind: str | None = None) -> str:
    t = (
        lkapi.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(lkapi.VideoGrants(room_join=True, room=room, can_update_own_metadata=True))
    )
    if kind is not None:
        t = t.with_kind(kind)
    return t.to_jwt()


class Changes:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class SdkParticipant:
    """An ``sdk_participant.py`` process: ``events`` it printed, ``send`` commands to it."""

    def __init__(self, proc: trio.Process, identity: str) -> None:
        self.proc = proc
        self.identity = identity
        self.events: list[dict[str, Any]] = []
        self.changed = Changes()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))
                    self.changed.notify()
        self.events.append({"ev": "exited"})
        self.changed.notify()

    async def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all((json.dumps(cmd) + "\n").encode())

    async def wait_for(self, ev: str, **match: Any) -> dict[str, Any]:
        """The first event ``ev`` with the given fields (bounded by WAIT)."""
        with trio.fail_after(WAIT):
            while True:
                for e in self.events:
                    if e.get("ev") == ev and all(e.get(k) == v for k, v in match.items()):
                        return e
                if any(e.get("ev") == "exited" for e in self.events):
                    raise AssertionError(
                        f"{self.identity} exited before {ev} {match}: {self.events}"
                    )
                await self.changed.wait()

    async def command(self, op: str, **args: Any) -> None:
        """Send a command and wait until it was done."""
        done = sum(1 for e in self.events if e.get("ev") == "done" and e.get("op") == op)
        await self.send(op=op, **args)
        with trio.fail_after(WAIT):
            while (
                sum(1 for e in self.events if e.get("ev") == "done" and e.get("op") == op) <= done
            ):
                await self.changed.wait()


@contextlib.asynccontextmanager
async def sdk_participant(
    server: ServerProcess,
    room: str,
    identity: str,
    *,
    kind: str | None = None,
    topics: tuple[str, ...] = (),
) -> AsyncIterator[SdkParticipant]:
    """An official-SDK participant in ``room``, connected when the block starts."""
    argv = server.netns.cmd(
        [
            sys.executable,
            str(PARTICIPANT),
            server.url,
            token(server, identity, room, kind=kind),
            *topics,
        ]
    )
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        p = SdkParticipant(proc, identity)
        nursery.start_soon(p._read)
        try:
            await p.wait_for("connected")
            yield p
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await p.send(op="leave")
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            nursery.cancel_scope.cancel()


class Worker:
    """A trio-agents worker process (``python AGENT dev``) in the namespace."""

    def __init__(self, proc: trio.Process, log: Path, agent_name: str) -> None:
        self.proc = proc
        self.log = log
        self.agent_name = agent_name

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def agent_worker(
    server: ServerProcess, agent_file: Path, tmp_path: Path, *, agent_name: str | None = None
) -> AsyncIterator[Worker]:
    """Run ``agent_file`` as a worker registered under a unique agent name.

    ``dev`` mode: no load limit (``start`` reports the worker full while the
    2-core test machine is busy, and the server then dispatches nothing).
    """
    name = agent_name or unique("agent")
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "LIVEKIT_AGENT_NAME": name,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(agent_file.parent)]),
    }
    argv = server.netns.cmd(
        [sys.executable, str(RUN_AGENT), str(agent_file), "dev", "--log-level", "DEBUG"]
    )
    with open(log, "wb") as out:  # noqa: ASYNC230 - opened once, for the child
        proc = await trio.lowlevel.open_process(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    worker = Worker(proc, log, name)
    try:
        with trio.fail_after(WAIT):
            while "registered worker" not in worker.log_text():
                if proc.poll() is not None:
                    raise AssertionError(f"the worker exited: {worker.log_text()[-3000:]}")
                await trio.sleep(0.1)
        yield worker
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def server_api(server: ServerProcess) -> AsyncIterator[LiveKitAPI]:
    async with LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
        yield lk


async def dispatch(
    server: ServerProcess, room: str, agent_name: str, metadata: dict[str, Any] | None = None
) -> agent_dispatch.AgentDispatch:
    async with server_api(server) as lk:
        return await lk.agent_dispatch.create_dispatch(
            agent_dispatch.CreateAgentDispatchRequest(
                agent_name=agent_name, room=room, metadata=json.dumps(metadata or {})
            )
        )


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110 - polls files and processes
            await trio.sleep(0.1)


def read_report(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
