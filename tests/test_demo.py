"""The README's first command: the demo runs the whole system and succeeds."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from trio_agents._demo import run_demo


@pytest.mark.parametrize("executor", ["process", "inline"])
async def test_demo_job_succeeds(executor: str) -> None:
    with trio.fail_after(60):
        assert await run_demo(participants=2, executor=executor) == 0


async def test_demo_command_exits_zero(tmp_path: Path) -> None:
    svg = tmp_path / "timeline.svg"
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "trio_agents",
            "demo",
            "--participants",
            "1",
            "--timeline-svg",
            str(svg),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "ended: JS_SUCCESS" in err
    assert "HI FROM VISITOR-0" in err
    # the teaching view at the end: the job's tree and teardown against its deadline
    assert "the same job as a nursery tree" in err
    assert "shutdown: room disconnected" in err
    assert "(deadline " in err
    assert "└── teardown" in err
    assert ET.parse(svg).getroot().tag.endswith("svg")


async def test_demo_without_visitors_ends_when_the_empty_room_closes() -> None:
    # It used to wait out 30 s and then fail with UnboundLocalError.
    with trio.fail_after(30):
        assert await run_demo(participants=0, executor="inline") == 0


async def test_demo_refuses_a_negative_visitor_count() -> None:
    with pytest.raises(ValueError, match="participants must be >= 0"):
        await run_demo(participants=-1)
    result = await trio.run_process(
        [sys.executable, "-m", "trio_agents", "demo", "--participants", "-1"],
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "-1 is not in the range x>=0" in result.stderr.decode()
