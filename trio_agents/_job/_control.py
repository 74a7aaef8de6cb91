"""``JobControl``: the line between a job and whoever runs it.

The worker (through an executor) asks a job to shut down or tells it the
worker is draining; the job reports its outcome.  For the INLINE executor
both ends hold the same object; the PROCESS executor mirrors it over IPC.

The outcome leaves the job twice:

* ``report(outcome)``: as soon as the work has unwound, *before* the job
  leaves its room (a LiveKit server marks a job failed when its agent leaves
  first).  The runner's ``on_report`` listeners send the status at once and
  call ``mark_delivered()`` once it is on its way to the server; the job
  waits for that (bounded by its deadline) before it leaves the room.
* ``finish(outcome)``: when the teardown is over, the same outcome with the
  errors of the later steps in ``teardown_errors``.
"""

from __future__ import annotations

import contextlib
import time
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
        #: The outcome as reported before the room was left (None until then).
        self.reported: JobOutcome | None = None
        self._report_listeners: list[Callable[[JobOutcome], None]] = []
        self._delivered = trio.Event()
        self._shutdown_listeners: list[Callable[[str, float], None]] = []
        #: When the job's shutdown started (``time.monotonic()``), whoever started it.
        self.shutdown_started_at: float | None = None

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

    def on_shutdown_started(self, fn: Callable[[str, float], None]) -> None:
        """Call ``fn(reason, monotonic_time)`` the moment the job's shutdown starts.

        Called synchronously from ``JobContext.shutdown()``: ``fn`` must not
        block and must not need the job's event loop (the job's next code may
        block it), so that the runner's own clock starts at once.
        """
        self._shutdown_listeners.append(fn)

    def on_report(self, fn: Callable[[JobOutcome], None]) -> None:
        """Call ``fn(outcome)`` (sync, never blocking) when the job reports its outcome.

        Registered after the report, ``fn`` is called at once.  Whoever
        registers one must call ``mark_delivered()`` once the report is
        forwarded: the job waits for that before it leaves its room.
        """
        self._report_listeners.append(fn)
        if self.reported is not None:
            fn(self.reported)

    def mark_delivered(self) -> None:
        """The reported outcome is on its way to the server (thread-unsafe; trio thread)."""
        self._delivered.set()

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

    def shutdown_started(self, reason: str) -> None:
        """The job's shutdown started (called by the job, once)."""
        if self.shutdown_started_at is not None:
            return
        self.shutdown_started_at = time.monotonic()
        for fn in list(self._shutdown_listeners):
            fn(reason, self.shutdown_started_at)

    def report(self, outcome: JobOutcome) -> bool:
        """Report the job's outcome now (first report wins); never blocks.

        Returns whether someone listens (then ``wait_delivered`` means
        something); with no listener the report is delivered by definition.
        """
        if self.reported is None:
            self.reported = outcome
            for fn in list(self._report_listeners):
                fn(outcome)
        if not self._report_listeners:
            self._delivered.set()
        return bool(self._report_listeners)

    async def wait_delivered(self) -> None:
        if self._delivered.is_set():
            # (no checkpoint: a teardown past its deadline would count this
            # already finished step as cut)
            return
        await self._delivered.wait()

    def finish(self, outcome: JobOutcome) -> None:
        if self.reported is None:
            self.report(outcome)
        if self.outcome is None:
            self.outcome = outcome
        self._done.set()

    def _notify(self) -> None:
        for fn in list(self._listeners):
            fn()
