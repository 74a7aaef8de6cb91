"""``decide_outcome``: how a job in a process ended, from what the worker saw.

A pure function: the same table is read when the job reports (the status
sent then) and when the process is gone (the outcome returned).
"""

from __future__ import annotations

import pytest

from trio_agents._executor._process import LOST_WITH_ZYGOTE, Observed, decide_outcome
from trio_agents._types import JobOutcome, OutcomeKind

CLEAN = JobOutcome(kind=OutcomeKind.CLEAN, reason="done")
CLEAN_FINAL = JobOutcome(kind=OutcomeKind.CLEAN, reason="done", teardown_errors=("hook: boom",))
FAILED = JobOutcome(
    kind=OutcomeKind.ERROR, reason="entrypoint raised X", error="entrypoint raised X"
)
KILL = "still running 1 s after shutdown started (shutdown_process_timeout)"

TABLE: list[tuple[str, Observed, JobOutcome | None]] = [
    ("died before it took the job", Observed(exit_code=-9), None),
    (
        "took the job, then died without a word",
        Observed(started=True, exit_code=-11),
        JobOutcome(
            kind=OutcomeKind.CRASHED,
            reason="job process ended",
            error="job process killed by SIGSEGV",
        ),
    ),
    (
        "exited with a code",
        Observed(started=True, exit_code=3),
        JobOutcome(
            kind=OutcomeKind.CRASHED,
            reason="job process ended",
            error="job process exited with code 3",
        ),
    ),
    (
        "lost with its zygote",
        Observed(started=True, exit_code=None),
        JobOutcome(kind=OutcomeKind.CRASHED, reason="job process ended", error=LOST_WITH_ZYGOTE),
    ),
    ("reported only (the status sent)", Observed(started=True, reported=CLEAN), CLEAN),
    (
        "reported, then done: the final outcome completes the report",
        Observed(started=True, reported=CLEAN, done=CLEAN_FINAL, exit_code=0),
        CLEAN_FINAL,
    ),
    (
        "killed before it could report",
        Observed(started=True, kill_reason=KILL, exit_code=-9),
        JobOutcome(kind=OutcomeKind.CRASHED, reason="job process ended", error=KILL),
    ),
    (
        "killed after its report: the status stands, the kill is noted",
        Observed(started=True, reported=CLEAN, kill_reason=KILL, exit_code=-9),
        JobOutcome(kind=OutcomeKind.CLEAN, reason="done", teardown_errors=(f"killed: {KILL}",)),
    ),
    (
        "done, then killed for being slow to exit",
        Observed(started=True, reported=CLEAN, done=CLEAN_FINAL, kill_reason=KILL, exit_code=-9),
        CLEAN_FINAL,
    ),
    ("an entrypoint error is reported as such", Observed(started=True, reported=FAILED), FAILED),
    (
        "over the memory limit, whatever it reported",
        Observed(started=True, reported=CLEAN_FINAL, memory_exceeded=True),
        JobOutcome(
            kind=OutcomeKind.MEMORY_LIMIT,
            reason="memory limit exceeded",
            error="job exceeded job_memory_limit_mb=100",
            teardown_errors=("hook: boom",),
        ),
    ),
    (
        "over the memory limit before it took the job",
        Observed(memory_exceeded=True, exit_code=-9),
        JobOutcome(
            kind=OutcomeKind.MEMORY_LIMIT,
            reason="memory limit exceeded",
            error="job exceeded job_memory_limit_mb=100",
        ),
    ),
]


@pytest.mark.parametrize(
    ("seen", "expected"), [row[1:] for row in TABLE], ids=[r[0] for r in TABLE]
)
def test_decide_outcome(seen: Observed, expected: JobOutcome | None) -> None:
    assert decide_outcome(seen, memory_limit_mb=100) == expected
