"""The README's first command: the demo runs the whole system and succeeds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from trio_agents._demo import run_demo


@pytest.mark.parametrize("executor", ["process", "inline"])
async def test_demo_job_succeeds(executor: str) -> None:
    with trio.fail_after(60):
        assert await run_demo(participants=2, executor=executor) == 0


async def test_demo_command_exits_zero() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "trio_agents", "demo", "--participants", "1"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "ended: JS_SUCCESS" in err
    assert "HI FROM VISITOR-0" in err
