"""INLINE: the job is a task of the worker's own trio run (tests, debugging)."""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
from typing import TYPE_CHECKING

import trio

from .._job._context import JobProcess, run_job
from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo
from . import given_up

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


#: After the deadline: how long an INLINE job may take to end before the worker
#: stops waiting for it (its task runs on, outside the worker's nurseries).
GIVE_UP_MARGIN = 0.5


class InlineExecutor:
    """The job is a task of the worker's trio run.

    Its task is a trio *system* task, not a task of the worker's nurseries:
    a job whose code ignores cancellation past its deadline (a shielded
    scope) is given up by the worker at shutdown start + budget + 0.5 s, like
    a THREAD job, and runs on until that code returns (``trio.run`` waits for
    it at the very end).  Sync code that blocks still blocks the whole worker.
    """

    def __init__(self, server: AgentServer) -> None:
        self._server = server

    async def start(self, nursery: trio.Nursery) -> None:
        return None

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome:
        server = self._server
        budget = server.shutdown_process_timeout
        proc = JobProcess(executor_type=JobExecutorType.INLINE)
        done = trio.Event()
        results: list[JobOutcome] = []
        raised: list[BaseException] = []
        give_up = trio.CancelScope()

        def start_clock(*_: object) -> None:
            if give_up.deadline == math.inf:
                give_up.deadline = trio.current_time() + budget + GIVE_UP_MARGIN

        def on_control() -> None:
            if control.shutdown_requested:
                start_clock()

        async def job_task() -> None:
            try:
                results.append(await setup_and_run_job(server, session, info, control, proc))
            except BaseException as exc:
                if isinstance(exc, trio.Cancelled):
                    raise  # the end of the whole trio run: its system nursery absorbs it
                raised.append(exc)
            finally:
                done.set()

        control.on_shutdown_started(start_clock)
        control.subscribe(on_control)
        on_control()
        trio.lowlevel.spawn_system_task(
            job_task, name=f"trio_agents job {info.job.id}", context=contextvars.copy_context()
        )
        try:
            with give_up:
                await done.wait()
        except BaseException:
            # the worker gave up on it (or was cancelled): the job shuts down on its own
            control.request_shutdown("job cancelled by its runner")
            raise
        finally:
            control.unsubscribe(on_control)
        if raised:
            # SystemExit/KeyboardInterrupt of job code: the job ended by it; it
            # goes on up in the worker's own run, as anywhere in trio
            raise raised[0]
        if results:
            return results[0]
        note = (
            f"the job did not end within shutdown_process_timeout={budget:g}s "
            f"(+{GIVE_UP_MARGIN:g}s): given up (its code ignores cancellation; its task runs on)"
        )
        logger.error("job %s: %s", info.job.id, note)
        return given_up(control, note)

    async def aclose(self) -> None:
        return None
