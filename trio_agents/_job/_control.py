"""``JobControl``: the line between a job and whoever runs it.

The worker (through an executor) asks a job to shut down or tells it the
worker is draining; the job reports its outcome.  For the INLINE executor
both ends hold the same object; the PROCESS executor mirrors it over IPC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from .._types import JobOutcome


class JobControl:
    """Requests into a running job, and its outcome out of it."""

    def __init__(self) -> None:
        self.shutdown_reason: str | None = None
        self._shutdown = trio.Event()
        self._draining = trio.Event()
        self._listeners: list[Callable[[], None]] = []
        self.outcome: JobOutcome | None = None
        self._done = trio.Event()

    # --- worker side ------------------------------------------------------------

    def request_shutdown(self, reason: str) -> None:
        """Ask the job to shut down (first reason wins); never blocks."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
        self._shutdown.set()
        self._notify()

    def notify_draining(self) -> None:
        """The worker started draining: the job should wrap up on its own."""
        self._draining.set()
        self._notify()

    async def wait_done(self) -> JobOutcome:
        await self._done.wait()
        assert self.outcome is not None
        return self.outcome

    # --- job side -----------------------------------------------------------------

    @property
    def shutdown_requested(self) -> bool:
        return self._shutdown.is_set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def subscribe(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (sync, in the trio thread) on every request."""
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[], None]) -> None:
        """Stop calling ``fn`` (no error if it is not subscribed)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def finish(self, outcome: JobOutcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._done.set()

    def _notify(self) -> None:
        for fn in list(self._listeners):
            fn()
