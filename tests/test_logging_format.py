"""The command line's log output: livekit-agents' JSON fields, its level names."""

from __future__ import annotations

import datetime
import json
import logging
import sys

import click
import pytest

from trio_agents import cli
from trio_agents._logging import TRACE, JSONFormatter, log_level


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("my.agent")
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    return logger.makeRecord(
        "my.agent",
        logging.WARNING,
        __file__,
        42,
        "job %s failed",
        ("AJ_1",),
        exc_info,
        func="entrypoint",
        extra=extra,
    )


def test_json_lines_carry_livekit_agents_fields() -> None:
    line = JSONFormatter().format(_record(job_id="AJ_1", room="r", custom={"a": 1}))
    out = json.loads(line)
    assert out["level"] == "WARNING"
    assert out["name"] == "my.agent"
    assert out["message"] == "job AJ_1 failed"
    assert out["job_id"] == "AJ_1"
    assert out["room"] == "r"
    assert out["custom"] == "{'a': 1}"  # non-scalar extras are written as their repr
    assert out["code.file.path"] == __file__
    assert out["code.function.name"] == "entrypoint"
    assert out["code.line.number"] == 42
    assert isinstance(out["pid"], int)
    assert "ValueError: boom" in out["exc_info"]
    stamp = datetime.datetime.fromisoformat(out["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)  # ISO 8601, UTC


def test_an_extra_field_cannot_replace_the_message() -> None:
    out = json.loads(JSONFormatter().format(_record(level="spoofed", name_="x")))
    assert out["level"] == "WARNING"
    assert out["message"] == "job AJ_1 failed"


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("trace", TRACE),
        ("DEBUG", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("Warning", logging.WARNING),
        ("error", logging.ERROR),
        ("critical", logging.CRITICAL),
    ],
)
def test_the_upstream_log_level_names_are_accepted(name: str, number: int) -> None:
    assert log_level(name) == number
    command = cli.main.commands["local-server"]
    ctx = command.make_context("local-server", ["--log-level", name])
    assert ctx.params["log_level"].upper() == name.upper()


def test_an_unknown_log_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="TRACE, DEBUG, INFO, WARN, WARNING, ERROR, CRITICAL"):
        log_level("verbose")
    command = cli.main.commands["local-server"]
    with pytest.raises(click.BadParameter, match="verbose"):
        command.make_context("local-server", ["--log-level", "verbose"])
