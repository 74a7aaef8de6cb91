"""The asyncio bridge: one asyncio loop thread that trio code awaits into.

The official LiveKit SDK (``livekit.rtc``) and its ecosystem are asyncio-only,
and every SDK object is bound to the asyncio loop that was current when it was
built.  The bridge runs one such loop in its own thread, for the whole trio
run, owned by an ``async with``::

    async with open_asyncio_bridge() as bridge:
        room = await bridge.run_sync(livekit.rtc.Room)      # built on the loop thread
        await bridge.run(room.connect, url, token)          # awaited from trio

How a call crosses:

* trio -> asyncio: the callable is scheduled on the loop thread with
  ``call_soon_threadsafe``; the trio task parks in
  ``trio.lowlevel.wait_task_rescheduled`` (no trio worker thread is blocked);
  the asyncio task's done-callback reschedules it with
  ``TrioToken.run_sync_soon``.  Exceptions cross as themselves.
* cancellation: a cancelled trio task cancels the asyncio task and waits until
  that task has finished (its ``finally`` blocks ran) before it resumes with
  ``trio.Cancelled``.
* events asyncio -> trio: an ``EventPipe`` collects items on the loop thread
  and hands them over in batches (one ``run_sync_soon`` per burst) to a
  bounded buffer read from trio; an overflow is counted and logged.

The bridge starts its thread lazily, on the first call: opening one costs
nothing until it is used.  ``current_bridge()`` returns the bridge open in
this trio run (the job opens one for its whole life; ``open_asyncio_bridge``
nested inside reuses it).

Fork safety: a process whose bridge thread has started may have started
LiveKit's native client (its threads cannot be forked).  A child forked from
such a process refuses to start a bridge, with an error that says why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import outcome
import trio

logger = logging.getLogger("trio_agents.rtc.bridge")

T = TypeVar("T")

#: Name of the loop thread.
THREAD_NAME = "trio-agents-asyncio"
#: Default bound on waiting for abandoned work (e.g. a connect) when the bridge closes.
DEFAULT_CLOSE_TIMEOUT = 5.0

# pid of this process once its bridge thread has started (in a forked child it
# is the parent's pid: the child must not use the SDK)
_started_in_pid: int | None = None
_forked_after_use = False


def _after_fork_in_child() -> None:
    global _forked_after_use, _started_in_pid
    if _started_in_pid is not None:
        _forked_after_use = True
        _started_in_pid = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class ForkedAfterUseError(RuntimeError):
    """This process was forked from one that had started the asyncio bridge (and the SDK)."""


def bridge_used_in_this_process() -> bool:
    """True once a bridge thread has started in this process (the SDK may be running)."""
    return _started_in_pid == os.getpid()


class BridgeClosedError(RuntimeError):
    """The bridge is closed (or closing): nothing more can cross."""


class _Call:
    __slots__ = ("cancel_requested", "done", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.cancel_requested = False
        self.done = False


class AsyncioBridge:
    """One asyncio loop thread and the ways trio code crosses into it (see module doc)."""

    #: An owner's deadline (a job's teardown deadline, trio time) that closing
    #: must not pass, if sooner than ``close_timeout`` from the start of the close.
    close_deadline: float | None = None

    def __init__(self, *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._close_timeout = close_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_done = trio.Event()
        self._closing = False
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: abandoned work (a connect cancelled in trio) awaited at close, bounded
        self._orphans: set[asyncio.Task[Any]] = set()

    # --- the loop thread ------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (starting the thread if needed).  Use it only on the loop thread."""
        return self._ensure_loop()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        global _started_in_pid
        if self._closing:
            raise BridgeClosedError("the asyncio bridge is closed")
        if self._loop is not None:
            return self._loop
        if _forked_after_use:
            raise ForkedAfterUseError(
                "this process was forked (os.fork) from a process that had already "
                "started LiveKit's native client (livekit.rtc); the SDK cannot run in a "
                "forked copy.  Start such processes with the 'spawn' or 'forkserver' "
                "method, or fork before anything uses trio_agents.rtc's livekit backend."
            )
        loop = asyncio.new_event_loop()
        self._loop = loop
        _started_in_pid = os.getpid()
        token = self._token
        done = self._thread_done

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_forever()
                # the last callbacks: tasks finishing their cancellation
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

        self._thread = threading.Thread(target=main, name=THREAD_NAME, daemon=True)
        self._thread.start()
        return loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    # --- calls ---------------------------------------------------------------------

    async def run(self, afn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``afn(*args)`` as an asyncio task on the loop thread; return its result.

        Cancelled in trio, the asyncio task is cancelled and awaited: trio
        resumes (with ``trio.Cancelled``) only after the task's ``finally``
        blocks have run.  Any other exception of the task is raised as itself.
        """
        loop = self._ensure_loop()
        call = _Call()
        trio_task = trio.lowlevel.current_task()
        token = self._token

        def finished(result: outcome.Outcome[Any]) -> None:
            if call.done:
                return
            call.done = True
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, trio_task, result)

        def start() -> None:
            try:
                task = loop.create_task(afn(*args))
            except BaseException as exc:
                finished(outcome.Error(exc))
                return
            call.task = task
            task.add_done_callback(lambda t: finished(outcome.capture(t.result)))
            if call.cancel_requested:
                task.cancel()

        def cancel() -> None:
            call.cancel_requested = True
            if call.task is not None:
                call.task.cancel()

        raise_cancel: Callable[[], Any] | None = None

        def abort(raise_cancel_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = raise_cancel_
            try:
                loop.call_soon_threadsafe(cancel)
            except RuntimeError:  # the loop closed under us: nothing will answer
                call.done = True
                return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED  # wait for the asyncio side to finish

        loop.call_soon_threadsafe(start)
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        except asyncio.CancelledError:
            if raise_cancel is not None:
                raise_cancel()  # raises trio.Cancelled
            raise
        return result

    async def run_abandonable(
        self,
        afn: Callable[..., Coroutine[Any, Any, T]],
        *args: Any,
        on_abandoned: Callable[[asyncio.Task[T]], object] | None = None,
    ) -> T:
        """Await ``afn(*args)`` on the loop, but never cancel it.

        For work that must not be cut in the middle (the SDK's connect): if
        the trio task is cancelled it resumes at once with ``trio.Cancelled``
        and the asyncio task goes on as an orphan; when it finishes,
        ``on_abandoned(task)`` runs on the loop thread (e.g. to disconnect a
        room whose connect succeeded after all).  The bridge waits for
        orphans, bounded, when it closes.
        """
        loop = self._ensure_loop()
        trio_task = trio.lowlevel.current_task()
        token = self._token
        lock = threading.Lock()
        state = "waiting"  # -> "answered" (loop thread) or "abandoned" (trio thread)

        def answer(result: outcome.Outcome[Any]) -> None:
            nonlocal state
            with lock:
                if state != "waiting":
                    return
                state = "answered"
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, trio_task, result)

        def done(task: asyncio.Task[T]) -> None:
            answer(outcome.capture(task.result))
            if state == "abandoned":
                if on_abandoned is not None:
                    try:
                        on_abandoned(task)
                    except Exception:
                        logger.exception("error in %r on the asyncio loop", on_abandoned)
                elif not task.cancelled() and task.exception() is not None:
                    logger.debug("abandoned work failed: %r", task.exception())

        def start() -> None:
            try:
                task = self.spawn(afn(*args), orphan=True)
            except BaseException as exc:
                answer(outcome.Error(exc))
                return
            task.remove_done_callback(_log_task_error)
            task.add_done_callback(done)

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            nonlocal state
            with lock:
                if state == "answered":
                    return trio.lowlevel.Abort.FAILED  # the answer is on its way
                state = "abandoned"
            return trio.lowlevel.Abort.SUCCEEDED

        loop.call_soon_threadsafe(start)
        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the loop thread and return its result (not cancellable)."""
        loop = self._ensure_loop()
        trio_task = trio.lowlevel.current_task()
        token = self._token

        def call() -> None:
            result = outcome.capture(fn, *args)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, trio_task, result)

        loop.call_soon_threadsafe(call)
        value: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return value

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, fire and forget (errors are logged)."""
        loop = self._ensure_loop()

        def call() -> None:
            try:
                fn(*args)
            except Exception:
                logger.exception("error in %r on the asyncio loop", fn)

        loop.call_soon_threadsafe(call)

    # --- on the loop thread --------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, orphan: bool = False) -> asyncio.Task[Any]:
        """(Loop thread) start a background task; cancelled when the bridge closes.

        ``orphan=True``: work abandoned by trio that must finish on its own
        (e.g. a connect never to be cancelled); the bridge waits for it at
        close, bounded, and only then cancels it.
        """
        assert self._loop is not None
        task = self._loop.create_task(coro)
        tasks = self._orphans if orphan else self._background
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_task_error)
        return task

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Register an async cleanup run on the loop at close (LIFO); returns its remover."""
        self._closers.append(closer)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._closers.remove(closer)

        return remove

    @property
    def orphan_count(self) -> int:
        return len(self._orphans)

    # --- close -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Run the closers, wait (bounded) for orphans, stop the loop, join the thread.

        The cleanup is shielded from cancellation and bounded by
        ``close_timeout``; what is still running then is cancelled, and the
        thread is joined before this returns.
        """
        if self._closing:
            return
        loop = self._loop
        if loop is None:
            self._closing = True
            await trio.lowlevel.checkpoint()
            return
        try:
            # shielded and bounded: rooms still open must leave before the loop
            # stops (else the native client keeps posting to a closed loop)
            until = trio.current_time() + self._close_timeout
            if self.close_deadline is not None:
                until = min(until, self.close_deadline)
            with trio.move_on_at(until, shield=True):
                await self.run(self._close_on_loop)
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                loop.call_soon_threadsafe(self._stop_on_loop)
                await self._thread_done.wait()
                assert self._thread is not None
                self._thread.join()

    async def _close_on_loop(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:
                logger.exception("error closing %r on the asyncio loop", closer)
        if self._orphans:
            await asyncio.wait(list(self._orphans))

    def _stop_on_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()

        async def finish() -> None:
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            loop.stop()

        loop.create_task(finish())


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("a background task on the asyncio loop failed", exc_info=exc)


_current: trio.lowlevel.RunVar[AsyncioBridge | None] = trio.lowlevel.RunVar(
    "trio_agents_asyncio_bridge", default=None
)


def current_bridge() -> AsyncioBridge:
    """The bridge open in this trio run.

    Raises:
        RuntimeError: none is open (use ``async with open_asyncio_bridge()``).
    """
    bridge = _current.get()
    if bridge is None:
        raise RuntimeError(
            "no asyncio bridge is open in this trio run: wrap the code in "
            "`async with trio_agents.rtc.open_asyncio_bridge():` (jobs have one already)"
        )
    return bridge


@contextlib.asynccontextmanager
async def open_asyncio_bridge(
    *, close_timeout: float = DEFAULT_CLOSE_TIMEOUT
) -> AsyncIterator[AsyncioBridge]:
    """``async with open_asyncio_bridge() as bridge:`` — the run's asyncio loop thread.

    Reentrant: inside an open bridge, yields that one (the outer block owns it).
    On exit the owner closes it: cleanups registered on the loop run (rooms
    leave, streams close), abandoned work is awaited up to ``close_timeout``
    seconds, the loop stops and its thread is joined; no thread is left.
    """
    existing = _current.get()
    if existing is not None and not existing._closing:
        yield existing
        return
    bridge = AsyncioBridge(close_timeout=close_timeout)
    _current.set(bridge)
    try:
        yield bridge
    finally:
        try:
            await bridge.aclose()
        finally:
            _current.set(existing)


@contextlib.asynccontextmanager
async def use_asyncio_bridge() -> AsyncIterator[AsyncioBridge]:
    """The bridge open in this trio run, or, if none is, a private one for the block.

    A private bridge is not registered as the run's bridge (the block owns
    it, and others must not borrow a bridge that closes with the block): to
    share one loop thread between several rooms, open one around them with
    ``open_asyncio_bridge``.
    """
    existing = _current.get()
    if existing is not None and not existing._closing:
        yield existing
        return
    bridge = AsyncioBridge()
    try:
        yield bridge
    finally:
        await bridge.aclose()


class EventPipe(Generic[T]):
    """Items produced on the loop thread (or any thread), consumed in trio.

    ``put`` may be called from any thread: items are batched and handed to
    trio with one ``run_sync_soon`` per burst.  The trio side holds at most
    ``capacity`` items; beyond that the *oldest* is dropped, counted in
    ``dropped`` and logged (once per overflow episode).  ``close`` (any
    thread) ends iteration after the buffered items.
    """

    def __init__(self, token: trio.lowlevel.TrioToken, capacity: int, name: str) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._token = token
        self._capacity = capacity
        self._name = name
        self._pending: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed_pending = False
        self._buffer: collections.deque[T] = collections.deque()
        self._closed = False
        self._lot = trio.lowlevel.ParkingLot()
        self._overflowing = False
        #: Items dropped because the consumer fell behind.
        self.dropped = 0
        #: Items handed to trio.
        self.delivered = 0

    # producer side (any thread)
    def put(self, item: T) -> None:
        with self._lock:
            if self._closed_pending:
                return
            self._pending.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule()

    def close(self) -> None:
        with self._lock:
            if self._closed_pending:
                return
            self._closed_pending = True
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule()

    def _schedule(self) -> None:
        try:
            self._token.run_sync_soon(self._flush)
        except trio.RunFinishedError:
            with self._lock:
                self.dropped += len(self._pending)
                self._pending.clear()

    # trio side
    def _flush(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            closed = self._closed_pending
            self._scheduled = False
        if self._closed:
            return
        for item in batch:
            if len(self._buffer) >= self._capacity:
                self._buffer.popleft()
                self.dropped += 1
                if not self._overflowing:
                    self._overflowing = True
                    logger.warning(
                        "%s: the trio side is %d items behind; dropping the oldest "
                        "(%d dropped so far)",
                        self._name,
                        self._capacity,
                        self.dropped,
                    )
            self._buffer.append(item)
        self.delivered += len(batch)
        if len(self._buffer) < self._capacity // 2:
            self._overflowing = False
        if closed:
            self._closed = True
        self._lot.unpark_all()

    def get_nowait(self) -> T:
        """The next buffered item; raises ``trio.WouldBlock`` if none."""
        if not self._buffer:
            raise trio.WouldBlock
        return self._buffer.popleft()

    async def get_batch(self) -> list[T]:
        """Every buffered item (waits for at least one); raises ``trio.EndOfChannel`` at the end."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        batch = list(self._buffer)
        self._buffer.clear()
        if self._overflowing:
            self._overflowing = False
        await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    def __aiter__(self) -> EventPipe[T]:
        return self

    async def __anext__(self) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        return self._buffer.popleft()

    def _close_now(self) -> None:
        """(trio) end iteration at once, dropping what is buffered."""
        self._closed = True
        self._closed_pending = True
        self._buffer.clear()
        self._lot.unpark_all()


def new_pipe(capacity: int, name: str) -> EventPipe[Any]:
    """An ``EventPipe`` bound to the current trio run."""
    return EventPipe(trio.lowlevel.current_trio_token(), capacity, name)
