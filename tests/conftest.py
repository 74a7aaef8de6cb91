"""Fixtures shared by every test folder: the real livekit-server peer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real_server.harness import (
    ServerProcess,
    Unavailable,
    open_real_server,
    unavailable_reason,
)


def _skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; under CI (``CI`` set) a missing real server is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the real-server tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real ``livekit-server``, in a network namespace made (and removed) for this session.

    Keys ``devkey`` / a 40-character secret; departure timeout 1 s, empty
    timeout 5 s.  Tests share it: use unique room and agent names.
    """
    reason = unavailable_reason()
    if reason:
        _skip_or_fail(reason)
    try:
        cm = open_real_server(tmp_path_factory.mktemp("livekit-server"))
        server = cm.__enter__()
    except Unavailable as exc:
        _skip_or_fail(str(exc))
        raise
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def livekit_server_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., ServerProcess]]:
    """Start dedicated servers (each in its own namespace) for tests that stop or restart one."""
    reason = unavailable_reason()
    if reason:
        _skip_or_fail(reason)
    opened: list[Any] = []

    def start(**options: object) -> ServerProcess:
        cm = open_real_server(tmp_path / f"server{len(opened)}", **options)
        try:
            server = cm.__enter__()
        except Unavailable as exc:
            _skip_or_fail(str(exc))
            raise
        opened.append(cm)
        return server

    try:
        yield start
    finally:
        for cm in reversed(opened):
            cm.__exit__(None, None, None)


REFERENCE_VENV_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reference-venv.sh"


@pytest.fixture(scope="session")
def reference_python() -> str:
    """The python of a venv holding the official ``livekit-agents`` (made on first use).

    The official worker pins ``livekit`` to an older SDK than ours, so it lives in
    a venv of its own (``scripts/reference-venv.sh``).
    """
    try:
        proc = subprocess.run(
            ["bash", str(REFERENCE_VENV_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _skip_or_fail(f"cannot make the livekit-agents venv: {exc}")
        raise
    if proc.returncode != 0:
        _skip_or_fail(f"cannot make the livekit-agents venv: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing real-server test carries the tail of the server's log."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        server = funcargs.get("livekit_server")
        if isinstance(server, ServerProcess):
            report.sections.append((f"livekit-server log ({server.log_path})", server.log_tail(80)))
    return report
