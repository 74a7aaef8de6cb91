"""INLINE: the job is a task of the worker's own trio run (tests, debugging)."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

import trio

from .._job._context import JobProcess, run_job
from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo

if TYPE_CHECKING:
    from .._job._control import JobControl
    from .._worker._server import AgentServer, RtcSession

logger = logging.getLogger("trio_agents.executor")


async def run_setup(setup_fnc: object, proc: JobProcess, setup_timeout: float) -> None:
    """Run ``setup_fnc(proc)`` (sync or async) bounded by ``setup_timeout``.

    A sync ``setup_fnc`` cannot be interrupted; the PROCESS executor kills its
    process from outside when it overruns.

    Raises:
        trio.TooSlowError: it took longer than ``setup_timeout``.
    """
    if setup_fnc is None:
        return
    assert callable(setup_fnc)
    with trio.fail_after(setup_timeout):
        result = setup_fnc(proc)
        if inspect.isawaitable(result):
            await result


async def setup_and_run_job(
    server: AgentServer,
    session: RtcSession,
    info: RunningJobInfo,
    control: JobControl,
    proc: JobProcess,
) -> JobOutcome:
    """Prewarm ``proc`` with ``setup_fnc``, then run the job tree in this trio run."""
    try:
        await run_setup(server.setup_fnc, proc, server.initialize_process_timeout)
    except Exception as exc:
        logger.exception("setup_fnc failed for job %s", info.job.id)
        return JobOutcome(
            kind=OutcomeKind.ERROR,
            reason="setup failed",
            error=f"setup_fnc failed: {type(exc).__name__}: {exc}",
        )
    return await run_job(
        info,
        session.entrypoint,
        control,
        proc=proc,
        shutdown_process_timeout=server.shutdown_process_timeout,
        delete_room_on_close=session.delete_room_on_close,
    )


class InlineExecutor:
    def __init__(self, server: AgentServer) -> None:
        self._server = server

    async def start(self, nursery: trio.Nursery) -> None:
        return None

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome:
        proc = JobProcess(executor_type=JobExecutorType.INLINE)
        return await setup_and_run_job(self._server, session, info, control, proc)

    async def aclose(self) -> None:
        return None
