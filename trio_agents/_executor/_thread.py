"""THREAD: the job runs its own ``trio.run`` in a worker thread.

Cheaper than a process, but nothing can stop a thread from outside: the
teardown budget is enforced only by the job's own cancel scopes, and a
blocking call in the job blocks its thread until it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import trio

from .._job._context import JobProcess
from .._job._control import JobControl
from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo
from ._inline import setup_and_run_job

if TYPE_CHECKING:
    from .._worker._server import AgentServer, RtcSession

logger = logging.getLogger("trio_agents.executor")


class ThreadExecutor:
    def __init__(self, server: AgentServer) -> None:
        self._server = server

    async def start(self, nursery: trio.Nursery) -> None:
        return None

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome:
        server = self._server
        inner = JobControl()  # lives in the job thread's trio run
        tokens: list[trio.lowlevel.TrioToken] = []
        worker_token = trio.lowlevel.current_trio_token()

        def forward() -> None:
            if not tokens:
                return
            reason = control.shutdown_reason
            shut = control.shutdown_requested
            drain = control.draining

            def apply() -> None:
                if drain:
                    inner.notify_draining()
                if shut:
                    inner.request_shutdown(reason or "shutdown requested")

            with contextlib.suppress(trio.RunFinishedError):
                tokens[0].run_sync_soon(apply)

        async def job_main() -> JobOutcome:
            tokens.append(trio.lowlevel.current_trio_token())
            worker_token.run_sync_soon(forward)  # catch up on requests made meanwhile
            proc = JobProcess(executor_type=JobExecutorType.THREAD, pid=os.getpid())
            return await setup_and_run_job(server, session, info, inner, proc)

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
                nursery.start_soon(watch_cancel)
                # a thread of its own for as long as the job runs: not a token of
                # trio's default limiter, which the worker's other threads need
                result.append(
                    await trio.to_thread.run_sync(
                        trio.run, job_main, limiter=trio.CapacityLimiter(1)
                    )
                )
                nursery.cancel_scope.cancel()
            return result[0]
        except Exception as exc:
            logger.exception("job thread failed")
            return JobOutcome(kind=OutcomeKind.CRASHED, reason="job thread failed", error=repr(exc))

    async def aclose(self) -> None:
        return None
