"""Helpers shared by the job tests (``tests/job``).

Every test runs the real job tree (INLINE: ``run_job`` in the test's own trio
run) against an in-memory stand-in server, under pytest-trio's
``autojump_clock`` fixture, so deadlines and departure timeouts cost no real
time and every timing below is exact virtual time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from livekit.protocol import agent

from trio_agents._types import JobAcceptArguments, RunningJobInfo
from trio_agents.testing import LocalServer, Simulation

Clock = trio.testing.MockClock


@attrs.define
class Trace:
    """What user code did, with the virtual time it did it at."""

    start: float = attrs.field(factory=trio.current_time)
    items: list[tuple[float, str, tuple[Any, ...]]] = attrs.field(factory=list)

    def add(self, label: str, *args: Any) -> None:
        self.items.append((trio.current_time() - self.start, label, args))

    def labels(self) -> list[str]:
        return [label for _, label, _ in self.items]

    def count(self, label: str) -> int:
        return self.labels().count(label)

    def args(self, label: str) -> list[tuple[Any, ...]]:
        return [args for _, lbl, args in self.items if lbl == label]

    def times(self, label: str) -> list[float]:
        return [t for t, lbl, _ in self.items if lbl == label]


def job_info(
    server: LocalServer, room: str, *, metadata: str = "", token: str | None = None
) -> RunningJobInfo:
    """A ``RunningJobInfo`` for a job in ``room`` of ``server`` (as simulate_job builds it)."""
    room_obj, _ = server.rooms.create(room)
    job = agent.Job(
        id="AJ_test" + secrets.token_hex(4),
        type=agent.JT_ROOM,
        room=room_obj.snapshot(),
        metadata=metadata,
    )
    identity = f"agent-{job.id}"
    if token is None:
        token = server.participant_token(identity, room, kind="agent")
    return RunningJobInfo(
        job=job,
        url=server.memory_url,
        token=token,
        worker_id="AW_test",
        accept_arguments=JobAcceptArguments(identity=identity),
        api_key=server.api_key,
        api_secret=server.api_secret,
    )


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` in virtual time (free under the autojump clock); 60 s at most."""
    with trio.fail_after(60):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def wait_for_agent(sim: Simulation, participant: Any) -> None:
    """Wait until ``participant`` (a SimulatedParticipant) sees the job's agent in the room."""
    from trio_agents import rtc

    await participant.room.wait_for_participant(kind=rtc.ParticipantKind.AGENT)


class RecordingHandler(logging.Handler):
    """Collects records of one logger tree (independent of pytest's caplog level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def capture_logs(*names: str) -> Iterator[RecordingHandler]:
    """Attach a ``RecordingHandler`` at DEBUG to each named logger for the block."""
    handler = RecordingHandler()
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
