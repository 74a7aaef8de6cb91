"""The real-server harness: it runs the server isolated, and leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.real_server import harness
from trio_agents import api

pytestmark = pytest.mark.real_server


def _running(pid: int) -> bool:
    """Alive and not a zombie (a SIGKILLed parent's child may wait unreaped for init)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


async def test_the_server_answers_the_twirp_api_from_the_root_namespace(
    livekit_server: harness.ServerProcess,
) -> None:
    async with api.LiveKitAPI(
        livekit_server.url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="harness-room"))
        assert room.sid.startswith("RM_")
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["harness-room"]))
        assert [r.name for r in listed.rooms] == ["harness-room"]
        await lk.room.delete_room(api.DeleteRoomRequest(room="harness-room"))
    # it listens inside its own namespace, not on the host's interfaces
    assert livekit_server.netns.name in harness.namespaces()
    assert livekit_server.pid is not None


def test_a_second_build_reuses_the_cached_binary(livekit_server: harness.ServerProcess) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(harness.BUILD_SCRIPT)], capture_output=True, text=True, check=True
    )
    assert Path(proc.stdout.strip()) == livekit_server.binary
    assert "building" not in proc.stderr  # nothing was built
    assert time.monotonic() - start < 30
    version = subprocess.run(
        [str(livekit_server.binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"version {livekit_server.binary.parent.name.lstrip('v')}" in version


def test_a_closed_harness_leaves_no_namespace_process_or_veth(
    livekit_server: harness.ServerProcess, tmp_path: Path
) -> None:
    # (the session's server is requested only so that this skips/fails like the others)
    with harness.open_real_server(tmp_path) as server:
        name, host_if, pid = server.netns.name, server.netns.host_if, server.pid
        assert name in harness.namespaces()
        assert host_if in _links()
        assert pid is not None
    assert name not in harness.namespaces()
    assert host_if not in _links()
    assert not _running(pid)


_INTERRUPTED = textwrap.dedent(
    """
    import os, sys, time, pathlib
    sys.path.insert(0, {root!r})
    from tests.real_server import harness
    with harness.open_real_server(pathlib.Path({workdir!r})) as server:
        print(server.netns.name, server.netns.host_if, server.pid, flush=True)
        time.sleep(600)
    """
)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_leaves_nothing_behind(
    livekit_server: harness.ServerProcess, tmp_path: Path, how: signal.Signals
) -> None:
    """Ctrl-C unwinds the harness; after a SIGKILL the next run sweeps the leftovers."""
    script = _INTERRUPTED.format(root=str(harness.ROOT), workdir=str(tmp_path))
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        _interrupt(proc, how)


def _interrupt(proc: subprocess.Popen[str], how: signal.Signals) -> None:
    try:
        assert proc.stdout is not None
        name, host_if, pid = proc.stdout.readline().split()
        assert name in harness.namespaces()
        proc.send_signal(how)
        proc.wait(60)
        if how == signal.SIGKILL:
            assert name in harness.namespaces()  # nobody cleaned up ...
            assert name in harness.sweep_stale()  # ... until the next run's sweep
        assert name not in harness.namespaces()
        assert host_if not in _links()
        assert not _running(int(pid))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
