"""THREAD: the job runs its own ``trio.run`` in a worker thread.

Cheaper than a process, but nothing can stop a thread from outside: the
teardown budget is enforced by the job's own cancel scopes, and a job whose
code ignores them (a blocking call, a shielded scope) is abandoned at the
deadline: its outcome is reported, the worker goes on, and the thread runs
on until that code returns.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._groups import sole_error
from .._job._context import JobProcess
from .._job._control import JobControl
from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo
from . import given_up
from ._inline import setup_and_run_job

if TYPE_CHECKING:
    from .._worker._server import AgentServer, RtcSession

logger = logging.getLogger("trio_agents.executor")


#: After the deadline: how long a job thread may take to return before it is abandoned.
ABANDON_MARGIN = 0.5


class ThreadExecutor:
    def __init__(self, server: AgentServer) -> None:
        self._server = server

    async def start(self, nursery: trio.Nursery) -> None:
        return None

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome:
        server = self._server
        budget = server.shutdown_process_timeout
        inner = JobControl()  # lives in the job thread's trio run
        tokens: list[trio.lowlevel.TrioToken] = []
        worker_token = trio.lowlevel.current_trio_token()
        # the one clock, seen from the worker: abandon the thread at its end
        abandon = trio.CancelScope()

        def in_job(fn: Callable[[], None]) -> None:
            if tokens:
                with contextlib.suppress(trio.RunFinishedError):
                    tokens[0].run_sync_soon(fn)

        def in_worker(fn: Callable[[], None]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                worker_token.run_sync_soon(fn)

        def start_clock(monotonic_at: float | None = None) -> None:
            if abandon.deadline != math.inf:
                return
            now = trio.current_time()
            if monotonic_at is not None:
                now -= min(max(time.monotonic() - monotonic_at, 0.0), budget)
            abandon.deadline = now + budget + ABANDON_MARGIN

        def forward() -> None:
            reason = control.shutdown_reason
            shut = control.shutdown_requested
            drain = control.draining
            if shut:
                start_clock()

            def apply() -> None:
                if drain:
                    inner.notify_draining()
                if shut:
                    inner.request_shutdown(reason or "shutdown requested")

            in_job(apply)

        def reported(outcome: JobOutcome) -> None:  # in the job thread
            def deliver() -> None:
                control.report(outcome)
                in_worker_nursery(outcome)

            in_worker(deliver)

        confirmations: list[trio.Nursery] = []

        def in_worker_nursery(outcome: JobOutcome) -> None:
            if confirmations:
                confirmations[0].start_soon(confirm)

        async def confirm() -> None:
            await control.wait_delivered()
            in_job(inner.mark_delivered)

        # (in the job thread, synchronously from ctx.shutdown(): no free loop needed)
        inner.on_shutdown_started(lambda reason, at: in_worker(lambda: start_clock(at)))
        inner.on_report(reported)

        async def job_main() -> JobOutcome:
            tokens.append(trio.lowlevel.current_trio_token())
            worker_token.run_sync_soon(forward)  # catch up on requests made meanwhile
            proc = JobProcess(executor_type=JobExecutorType.THREAD, pid=os.getpid())
            try:
                return await setup_and_run_job(server, session, info, inner, proc)
            except BaseException as exc:
                # SystemExit/KeyboardInterrupt of job code ends this job, by its
                # reason (hooks ran): not the worker, not the other jobs
                if isinstance(exc, trio.Cancelled) or inner.outcome is None:
                    raise
                logger.error(
                    "job %s: job code raised %s; the job ends", info.job.id, type(exc).__name__
                )
                return inner.outcome

        control.subscribe(forward)
        result: list[JobOutcome] = []

        async def watch_cancel() -> None:
            # the thread cannot be cancelled: turn our cancellation into a shutdown
            try:
                await trio.sleep_forever()
            finally:
                if not result:
                    control.request_shutdown("job cancelled by its runner")

        try:
            async with trio.open_nursery() as nursery:
                confirmations.append(nursery)
                nursery.start_soon(watch_cancel)
                with abandon:
                    # a thread of its own for as long as the job runs: not a token
                    # of trio's default limiter, which the worker's other threads need
                    result.append(
                        await trio.to_thread.run_sync(
                            trio.run,
                            job_main,
                            limiter=trio.CapacityLimiter(1),
                            abandon_on_cancel=True,
                        )
                    )
                nursery.cancel_scope.cancel()
        except Exception as exc:
            logger.exception("job thread failed")
            return JobOutcome(kind=OutcomeKind.CRASHED, reason="job thread failed", error=repr(exc))
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled) or sole_error(exc) is None:
                raise
            error = sole_error(exc)
            logger.error("job thread failed: %r", error)
            return JobOutcome(
                kind=OutcomeKind.CRASHED, reason="job thread failed", error=repr(error)
            )
        finally:
            control.unsubscribe(forward)
        if result:
            return result[0]
        # past the deadline (+ a margin) the thread is left to itself: nothing
        # can stop a thread; whatever it still does, the job is over
        note = (
            f"the job thread did not return within shutdown_process_timeout={budget:g}s "
            f"(+{ABANDON_MARGIN:g}s) and was abandoned"
        )
        logger.error("job %s: %s", info.job.id, note)
        return given_up(control, note)

    async def aclose(self) -> None:
        return None
