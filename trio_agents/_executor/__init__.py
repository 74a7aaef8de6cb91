"""Where jobs run.  Every executor has the same small interface:

* ``await start(nursery)``: start whatever the executor keeps running (a pool);
* ``await run(info, control, session) -> JobOutcome``: run one job to its end;
* ``await aclose()``: stop, bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from .._job._control import JobControl
from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo

if TYPE_CHECKING:
    from .._job._control import JobControl
    from .._worker._server import AgentServer, RtcSession


class ExecutorStartError(Exception):
    """An executor cannot start (e.g. job processes cannot load the agent)."""


class Executor(Protocol):
    async def start(self, nursery: trio.Nursery) -> None: ...

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome: ...

    async def aclose(self) -> None: ...


def make_executor(server: AgentServer) -> Executor:
    """The executor for ``server.job_executor_type``."""
    kind = server.job_executor_type
    if kind is JobExecutorType.INLINE:
        from ._inline import InlineExecutor

        return InlineExecutor(server)
    if kind is JobExecutorType.THREAD:
        from ._thread import ThreadExecutor

        return ThreadExecutor(server)
    from ._process import ProcessExecutor

    return ProcessExecutor(server)


def given_up(control: JobControl, note: str) -> JobOutcome:
    """The outcome of a job its runner gave up on (THREAD/INLINE, past the deadline).

    If the job reported already, that status stands and ``note`` joins its
    teardown errors; otherwise the job hit its deadline before reporting.
    """
    if control.reported is not None:
        base = control.reported
        return attrs.evolve(base, teardown_errors=(*base.teardown_errors, note))
    return JobOutcome(kind=OutcomeKind.DEADLINE, reason=control.shutdown_reason or "", error=note)
