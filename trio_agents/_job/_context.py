"""``JobContext`` and the job's nursery tree.

```
run_job()
└── job nursery
    ├── room task (after ctx.connect): connection + event pump
    ├── work scope ── entrypoint(ctx)
    │              └── participants nursery ── one scope per participant ── one task per entrypoint
    └── (main task) waits for the first shutdown trigger, then tears down
```

Teardown reads one deadline, ``shutdown start + shutdown_process_timeout``;
every step runs under ``move_on_at(deadline, shield=True)`` so that no step
can outlive it and a cancelled caller cannot skip one, and a step that ends
after the deadline anyway (sync code) counts as cut, by the clock.  The
outcome is decided and reported once the work has unwound, before the room
is left; docs/lifecycle.md lists every place that reads the deadline.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio
from livekit.protocol import agent

from .. import rtc
from .._errors import TrioAgentsError
from .._groups import sole_error
from .._types import (
    DEFAULT_PARTICIPANT_KINDS,
    AutoSubscribe,
    JobExecutorType,
    JobOutcome,
    OutcomeKind,
    RunningJobInfo,
)
from ._control import JobControl
from ._logging import install_record_factory, job_log_fields

if TYPE_CHECKING:
    from ..api import LiveKitAPI

T = TypeVar("T")

logger = logging.getLogger("trio_agents.job")

#: Warn if the entrypoint neither connected nor shut down within this many seconds.
CONNECT_WARNING_DELAY = 10.0

_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "trio_agents_job_context", default=None
)
_in_teardown: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "trio_agents_in_teardown", default=False
)

EntrypointFn = Callable[["JobContext"], Awaitable[None]]
ParticipantFn = Callable[["JobContext", rtc.RemoteParticipant], Awaitable[None]]
ShutdownCallback = Callable[..., Any]
Recorder = Callable[..., None]


class JobShutdownError(TrioAgentsError):
    """A wait could not complete because the job is shutting down."""


def get_job_context() -> JobContext:
    """The context of the job whose code is running (from any task of the job).

    Raises:
        RuntimeError: called outside a job.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no job is running in this context (get_job_context outside a job)")
    return ctx


@attrs.define(eq=False)
class JobProcess:
    """The process (or thread/task) a job runs in; ``setup_fnc`` fills ``userdata``."""

    executor_type: JobExecutorType = JobExecutorType.INLINE
    pid: int = attrs.field(factory=os.getpid)
    userdata: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class _ParticipantEntrypoint:
    fn: ParticipantFn
    kinds: frozenset[int]
    after_connect: bool


def _kinds(kind: int | Iterable[int]) -> frozenset[int]:
    bad = TypeError(
        f"kind must be a ParticipantKind or an iterable of them, not {type(kind).__name__}"
    )
    if isinstance(kind, bool | str | bytes):
        raise bad
    if isinstance(kind, int):
        return frozenset({int(kind)})
    try:
        items = list(kind)
    except TypeError:
        raise bad from None
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in items):
        raise bad
    out = frozenset(int(k) for k in items)
    if not out:
        raise ValueError("kind must name at least one participant kind")
    return out


def _callback_arity(cb: ShutdownCallback) -> int:
    """1 if ``cb`` can take the reason positionally (``cb(reason="")``, ``cb(*args)``), else 0."""
    try:
        params = list(inspect.signature(cb).parameters.values())
    except (TypeError, ValueError):
        return 0
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if sum(1 for p in positional if p.default is p.empty) > 1:
        raise TypeError("a shutdown callback takes no argument or one (the reason)")
    if positional or any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        # name the actual errors, not "Exceptions from Trio nursery (1 sub-exception)"
        return f"{type(exc).__name__}[{'; '.join(_describe(e) for e in exc.exceptions)}]"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _without_cancelled(exc: BaseException) -> BaseException:
    """``exc`` minus its ``Cancelled`` leaves (``exc`` must not be only those)."""
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split(trio.Cancelled)[1]
        assert rest is not None
        return rest
    return exc


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _split_errors(exc: BaseException) -> tuple[Exception | None, BaseException | None]:
    """Split what user code raised into its errors and the rest.

    User code that is being cancelled can raise a group mixing ``Cancelled``
    with errors of its cleanup (a nursery whose child fails in a ``finally``).
    The errors are the job's to report; the rest (``Cancelled``, ...) must go
    on propagating so that the cancel scope that caused it absorbs it.
    """
    if isinstance(exc, Exception):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Exception)
    return None, exc


class JobContext:
    """What an entrypoint gets: the job, its room, and its lifecycle controls."""

    def __init__(
        self,
        info: RunningJobInfo,
        *,
        proc: JobProcess,
        control: JobControl,
        shutdown_process_timeout: float,
        delete_room_on_close: bool = False,
        recorder: Recorder | None = None,
    ) -> None:
        self._info = info
        self._proc = proc
        self._control = control
        self._budget = shutdown_process_timeout
        self.delete_room_on_close = delete_room_on_close
        self._record = recorder or (lambda *a, **k: None)
        self.room = rtc.Room()
        self.log_context_fields: dict[str, Any] = {}
        self.shutting_down = trio.Event()
        # shutdown state
        self._shutdown_reason: str | None = None
        self._drain = False
        self._deadline = math.inf
        self._shutdown_started = trio.Event()
        self._teardown_done = trio.Event()
        # structure
        self._nursery: trio.Nursery | None = None
        self._participants: trio.Nursery | None = None
        self._work_scope = trio.CancelScope()
        self._work_done = trio.Event()
        self._connect_lock = trio.Lock()
        self._connected = False
        self._handlers_installed = False
        self._auto_subscribe = AutoSubscribe.SUBSCRIBE_ALL
        self._room_changed = trio.Event()
        self._room_error: BaseException | None = None
        self._entrypoints: list[_ParticipantEntrypoint] = []
        # participant sid -> one scope per running entrypoint task (a CancelScope
        # can be entered only once, so two entrypoints cannot share one)
        self._participant_scopes: dict[str, list[trio.CancelScope]] = {}
        self._started_pairs: set[tuple[str, int]] = set()
        self._callbacks: list[ShutdownCallback] = []
        # while the callbacks step runs: where a callback added by another goes
        self._callback_starter: Callable[[ShutdownCallback], None] | None = None
        self._callbacks_done = False
        self._api: LiveKitAPI | None = None
        # outcome inputs
        self._entrypoint_error: BaseException | None = None
        self._deadline_hit: list[str] = []
        self._teardown_errors: list[BaseException] = []
        # the outcome as reported (once the work unwound); later steps only add notes
        self._reported: JobOutcome | None = None
        self._late_notes: list[str] = []

    # --- the job --------------------------------------------------------------------

    @property
    def job(self) -> agent.Job:
        """The ``livekit.protocol.agent.Job``: id, metadata, room, agent_name, ..."""
        return self._info.job

    @property
    def proc(self) -> JobProcess:
        return self._proc

    @property
    def worker_id(self) -> str:
        return self._info.worker_id

    @property
    def info(self) -> RunningJobInfo:
        return self._info

    def is_fake_job(self) -> bool:
        return self._info.fake_job

    @property
    def api(self) -> LiveKitAPI:
        """A ``trio_agents.api.LiveKitAPI`` with the worker's credentials (closed at teardown)."""
        if self._api is None:
            from ..api import LiveKitAPI

            self._api = LiveKitAPI(self._info.url, self._info.api_key, self._info.api_secret)
        return self._api

    @property
    def shutdown_reason(self) -> str | None:
        return self._shutdown_reason

    def _log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "job_id": self.job.id,
            "room": self.job.room.name,
            "room_id": self.job.room.sid,
            "agent_name": self.job.agent_name,
        }
        fields.update(self.log_context_fields)
        return fields

    async def aio(self, coro_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await the asyncio coroutine function ``coro_fn(*args)`` from trio.

        It runs as a task on the job's asyncio loop thread (the one the livekit
        backend uses), so asyncio libraries (the official ``LiveKitAPI``,
        plugins) work from a trio agent.  Its exceptions arrive as themselves;
        cancelling the trio caller cancels the asyncio task and waits for its
        cleanup; an asyncio-side cancellation arrives as ``asyncio.CancelledError``.
        """
        return await rtc.current_bridge().run(coro_fn, *args)

    # --- connecting -------------------------------------------------------------------

    async def connect(
        self,
        *,
        auto_subscribe: AutoSubscribe = AutoSubscribe.SUBSCRIBE_ALL,
        e2ee: object | None = None,
        rtc_config: object | None = None,
    ) -> None:
        """Connect ``room``.  Idempotent; later calls return once connected.

        ``e2ee`` (a ``livekit.rtc.E2EEOptions``) and ``rtc_config`` (a
        ``livekit.rtc.RtcConfiguration``) go to the livekit backend; the
        simulated backend refuses them with ``rtc.ConnectError``.

        Raises:
            rtc.ConnectError: the room could not be joined.
            JobShutdownError: the job is already shutting down.
        """
        if not isinstance(auto_subscribe, AutoSubscribe):
            raise TypeError(f"auto_subscribe must be an AutoSubscribe, not {auto_subscribe!r}")
        async with self._connect_lock:
            if self._connected:
                return
            if self._shutdown_reason is not None:
                raise JobShutdownError(
                    f"cannot connect: the job is shutting down ({self._shutdown_reason})"
                )
            assert self._nursery is not None
            self._auto_subscribe = auto_subscribe
            if not self._handlers_installed:  # once, however many attempts
                self._install_room_handlers()
                self._handlers_installed = True
            options = rtc.RoomOptions(
                auto_subscribe=auto_subscribe is AutoSubscribe.SUBSCRIBE_ALL,
                e2ee=e2ee,
                rtc_config=rtc_config,
            )
            self._record("connecting")
            try:
                await self._nursery.start(self._room_task, options)
            finally:
                # trio's start() checkpoints after the room task has started:
                # cancelled there (a shutdown at the moment of the join), this
                # call raises, yet the room is joined and is the job's to
                # disconnect in teardown (_connected was set when it started).
                self._after_join()

    def _after_join(self) -> None:
        """What a join brings: the participants present at connect."""
        if not self._connected:
            return
        self._record("connected")
        if self.room.isconnected():
            for p in list(self.room.remote_participants.values()):
                self._subscribe_existing(p)
                self._start_participant(p, present_at_connect=True)

    async def _room_task(
        self,
        options: rtc.RoomOptions,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        ctx = self

        class _Status:
            def started(self, value: object = None) -> None:
                nonlocal started
                started = True
                ctx._connected = True  # joined, whether or not connect() sees it return
                task_status.started()

        try:
            await self.room.run(self._info.url, self._info.token, options, task_status=_Status())
        except Exception as exc:
            if not started:
                raise
            logger.error("room connection failed: %s", _describe(exc))
            self._room_error = exc
        finally:
            if started:
                self._poke()
                self.shutdown("room disconnected")

    def _install_room_handlers(self) -> None:
        room = self.room

        @room.on("participant_connected")
        def _joined(ev: rtc.ParticipantConnected) -> None:
            self._poke()
            if self._connected:
                self._start_participant(ev.participant, present_at_connect=False)

        @room.on("participant_disconnected")
        def _left(ev: rtc.ParticipantDisconnected) -> None:
            self._poke()
            for scope in self._participant_scopes.pop(ev.participant.sid, []):
                scope.cancel()

        @room.on("track_published")
        def _published(ev: rtc.TrackPublished) -> None:
            self._maybe_subscribe(ev.publication)

    def _wants(self, kind: object) -> bool:
        mode = self._auto_subscribe
        if mode is AutoSubscribe.AUDIO_ONLY:
            return kind == rtc.TrackKind.KIND_AUDIO
        if mode is AutoSubscribe.VIDEO_ONLY:
            return kind == rtc.TrackKind.KIND_VIDEO
        return False

    def _maybe_subscribe(self, publication: rtc.RemoteTrackPublication) -> None:
        if (
            self._auto_subscribe in (AutoSubscribe.AUDIO_ONLY, AutoSubscribe.VIDEO_ONLY)
            and self._wants(publication.kind)
            and not publication.subscribed
        ):
            publication.set_subscribed(True)

    def _subscribe_existing(self, participant: rtc.RemoteParticipant) -> None:
        for pub in list(participant.track_publications.values()):
            self._maybe_subscribe(pub)

    def _poke(self) -> None:
        self._room_changed.set()
        self._room_changed = trio.Event()

    # --- participants -------------------------------------------------------------------

    def add_participant_entrypoint(
        self,
        entrypoint_fnc: ParticipantFn,
        *,
        kind: int | Iterable[int] = DEFAULT_PARTICIPANT_KINDS,
    ) -> None:
        """Run ``entrypoint_fnc(ctx, participant)`` once per matching participant.

        Registered before ``connect()``: runs for participants present at connect
        and every later joiner.  Registered after: later joiners only.  Each run
        is a task of the job; it is cancelled when its participant leaves or the
        job shuts down, and an exception in it is logged and stops nothing else.

        Raises:
            ValueError: ``entrypoint_fnc`` is already registered.
        """
        if not inspect.iscoroutinefunction(entrypoint_fnc):
            raise TypeError("a participant entrypoint must be an async function (ctx, participant)")
        if any(e.fn is entrypoint_fnc for e in self._entrypoints):
            raise ValueError(
                f"participant entrypoint {entrypoint_fnc.__qualname__} is already registered"
            )
        self._entrypoints.append(
            _ParticipantEntrypoint(entrypoint_fnc, _kinds(kind), after_connect=self._connected)
        )

    def _start_participant(
        self, participant: rtc.RemoteParticipant, *, present_at_connect: bool
    ) -> None:
        if self._participants is None or self._shutdown_reason is not None:
            return
        for index, ep in enumerate(self._entrypoints):
            if int(participant.kind) not in ep.kinds:
                continue
            if present_at_connect and ep.after_connect:
                continue
            key = (participant.sid, index)
            if key in self._started_pairs:
                continue
            self._started_pairs.add(key)
            scope = trio.CancelScope()
            self._participant_scopes.setdefault(participant.sid, []).append(scope)
            self._participants.start_soon(self._run_participant, ep, participant, scope)

    async def _run_participant(
        self,
        ep: _ParticipantEntrypoint,
        participant: rtc.RemoteParticipant,
        scope: trio.CancelScope,
    ) -> None:
        self._record("participant_entrypoint_started", participant.identity, ep.fn.__qualname__)
        failed = False
        with scope:
            try:
                await ep.fn(self, participant)
            except BaseException as raised:
                error, rest = _split_errors(raised)
                if error is None:
                    raise
                failed = True
                logger.error(
                    "participant entrypoint %s failed for %s (job %s)",
                    ep.fn.__qualname__,
                    participant.identity,
                    self.job.id,
                    exc_info=error,
                    extra={"participant_identity": participant.identity},
                )
                self._record(
                    "participant_entrypoint_failed", participant.identity, _describe(error)
                )
                if rest is not None:
                    raise rest from None  # the cancellation it was mixed with
        if not failed:
            self._record("participant_entrypoint_ended", participant.identity, ep.fn.__qualname__)

    async def wait_for_participant(
        self, *, identity: str | None = None, kind: int | Iterable[int] = DEFAULT_PARTICIPANT_KINDS
    ) -> rtc.RemoteParticipant:
        """The first remote participant matching ``identity`` and ``kind``.

        Connects the room first if needed.

        Raises:
            JobShutdownError: the room disconnected or the job shut down first.
        """
        if identity is not None and not isinstance(identity, str):
            raise TypeError(f"identity must be a str or None, not {type(identity).__name__}")
        kinds = _kinds(kind)
        await self.connect()
        while True:
            # a disconnected room still lists the participants it had: never
            # hand out one of those
            connected = self.room.isconnected()
            if connected:
                for p in self.room.remote_participants.values():
                    if (identity is None or p.identity == identity) and int(p.kind) in kinds:
                        return p
            if self._shutdown_reason is not None or not connected:
                raise JobShutdownError(
                    "no matching participant joined before the job ended "
                    f"({self._shutdown_reason or 'room disconnected'})"
                )
            await self._room_changed.wait()

    # --- shutdown ---------------------------------------------------------------------

    def add_shutdown_callback(self, callback: ShutdownCallback) -> None:
        """Run ``callback()`` or ``callback(reason)`` (sync or async) once, during teardown.

        Added by another callback while the callbacks run, it runs too (bounded
        by the same deadline).

        Raises:
            RuntimeError: the job's callbacks have already run.
        """
        if not callable(callback):
            raise TypeError("a shutdown callback must be callable")
        _callback_arity(callback)
        if self._callbacks_done:
            raise RuntimeError(
                "cannot add a shutdown callback: this job's shutdown callbacks have already run"
            )
        self._callbacks.append(callback)
        if self._callback_starter is not None:
            self._callback_starter(callback)

    def shutdown(self, reason: str = "user requested", *, drain: bool = False) -> None:
        """Start shutting the job down.  Never blocks; idempotent; the first reason wins."""
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        if self._shutdown_reason is not None:
            return
        self._shutdown_reason = reason
        self._drain = drain
        self._deadline = trio.current_time() + self._budget
        # the room's own closing (leave, close the socket) ends by the same deadline
        self.room.close_deadline = self._deadline
        self.shutting_down.set()
        self._shutdown_started.set()
        self._poke()
        # the runner's clock (the PROCESS executor's kill, THREAD's abandon)
        # starts now, without waiting for this event loop to be free again
        self._control.shutdown_started(reason)
        self._record("shutdown", reason)
        # shutdown() may be called from outside the job (the worker's control
        # line, a webhook holding the context): stamp this job's fields anyway
        fields_token = job_log_fields.set(self._log_fields)
        try:
            logger.info("job shutting down: %s", reason)
        finally:
            job_log_fields.reset(fields_token)
        if not drain:
            # Step 3 at once: the work is cancelled from its next checkpoint on,
            # not a scheduling round later when the teardown task wakes up.
            # (After the poke: waiters it woke see the shutdown, not Cancelled.)
            self._work_scope.cancel()

    async def aclose(self, reason: str = "user requested") -> None:
        """Shut down now (no drain) and wait for the teardown to finish.

        Called from the entrypoint or a participant task it does not return
        normally: the caller is cancelled with the rest of the job's work.
        """
        self.shutdown(reason)
        if _in_teardown.get():
            return
        await self._teardown_done.wait()

    async def delete_room(self) -> None:
        """Delete this job's room (RoomService.DeleteRoom); "not found" is success."""
        if self.is_fake_job():
            return
        from livekit.api import TwirpError
        from livekit.protocol.room import DeleteRoomRequest

        try:
            await self.api.room.delete_room(DeleteRoomRequest(room=self.job.room.name))
        except TwirpError as exc:
            if exc.code != "not_found":
                raise

    # --- the tree ------------------------------------------------------------------------

    async def _run(self, entrypoint: EntrypointFn) -> JobOutcome:
        install_record_factory()
        token = _current.set(self)
        fields_token = job_log_fields.set(self._log_fields)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._work, entrypoint)
                if not self.is_fake_job():
                    nursery.start_soon(self._connect_warning)
                self._control.subscribe(self._on_control)
                self._on_control()
                cancelled: trio.Cancelled | None = None
                try:
                    await self._shutdown_started.wait()
                except trio.Cancelled as exc:
                    # our runner was cancelled: still a full, bounded teardown
                    cancelled = exc
                    self.shutdown("job cancelled by its runner")
                with trio.CancelScope(shield=True):
                    outcome = await self._teardown()
                self._control.finish(outcome)
                nursery.cancel_scope.cancel()
                if cancelled is not None:
                    raise cancelled
            return outcome
        finally:
            # a finished job hears nothing more from its control line (and the
            # line, which its runner may keep, no longer keeps the job alive)
            self._control.unsubscribe(self._on_control)
            job_log_fields.reset(fields_token)
            _current.reset(token)
            self._teardown_done.set()

    def _on_control(self) -> None:
        if self._control.draining:
            self.shutting_down.set()
        if self._control.shutdown_requested:
            self.shutdown(self._control.shutdown_reason or "shutdown requested")

    async def _connect_warning(self) -> None:
        await trio.sleep(CONNECT_WARNING_DELAY)
        if not self._connected and self._shutdown_reason is None:
            logger.warning(
                "the job has neither connected to its room nor shut down %.0f s after it started; "
                "did the entrypoint forget `await ctx.connect()`?",
                CONNECT_WARNING_DELAY,
            )

    async def _work(self, entrypoint: EntrypointFn) -> None:
        try:
            with self._work_scope:
                async with trio.open_nursery() as participants:
                    self._participants = participants
                    self._record("entrypoint_started")
                    try:
                        await entrypoint(self)
                    except BaseException as raised:
                        error, rest = _split_errors(raised)
                        if error is None:
                            raise
                        if self._shutdown_reason is None:
                            self._entrypoint_error = error
                            logger.error(
                                "the entrypoint of job %s raised", self.job.id, exc_info=error
                            )
                            self._record("entrypoint_failed", _describe(error))
                            self.shutdown(f"entrypoint raised {type(error).__name__}")
                        else:
                            # its cleanup failed: part of how the job ended
                            logger.error(
                                "the entrypoint raised during shutdown: %s", _describe(error)
                            )
                            self._teardown_errors.append(error)
                        if rest is not None:
                            raise rest from None  # the cancellation it was mixed with
                        return
                    self._record("entrypoint_returned")
                    # Returning does not end the job: participant tasks go on.
                    await trio.sleep_forever()
        except BaseException as raised:
            # What escapes the work scope and is not a cancellation is a
            # BaseException of user code (SystemExit, KeyboardInterrupt, from the
            # entrypoint or a participant task).  It goes on up, as it would
            # anywhere in trio, but the job ends as failed, by its reason, with
            # its hooks; not as if its runner had cancelled it.
            if not _only_cancelled(raised) and self._shutdown_reason is None:
                crash = sole_error(raised) or _without_cancelled(raised)
                self._entrypoint_error = crash
                self._record("entrypoint_failed", _describe(crash))
                self.shutdown(f"entrypoint raised {type(_first_leaf(crash)).__name__}")
            raise
        finally:
            self._participants = None
            self._work_done.set()

    async def _step(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """One teardown step: bounded by the deadline and shielded; errors recorded."""
        started = trio.current_time()
        with trio.move_on_at(self._deadline, shield=True) as scope:
            try:
                await fn()
            except BaseException as raised:
                # cut at the deadline, a step can raise errors of its cleanup
                # mixed with the Cancelled: record them, let the Cancelled go
                # on to the deadline's scope, which absorbs it
                error, rest = _split_errors(raised)
                if error is None:
                    raise
                logger.error("teardown step %s failed: %s", name, _describe(error))
                self._teardown_errors.append(error)
                if rest is not None:
                    raise rest from None
        # (crossed the deadline while it ran: one that starts after it is cut
        # at its first checkpoint, and an earlier step already was late)
        late = not scope.cancelled_caught and started <= self._deadline < trio.current_time()
        if scope.cancelled_caught or late:
            # by the clock: a step that blocked in sync code past the deadline
            # was never cancelled, and is as late as one that was
            how = "ended after" if late else "was cut off at"
            logger.error("teardown step %s %s the deadline", name, how)
            if self._reported is None:
                self._deadline_hit.append(name)
            else:
                self._late_notes.append(
                    f"{name}: {how} the deadline "
                    f"(shutdown_process_timeout={self._budget:g}s)"
                )
        self._record("phase_done", name)

    async def _teardown(self) -> JobOutcome:
        token = _in_teardown.set(True)
        try:
            # 2. drain pending outbound work
            if self._drain and self._connected and self.room.isconnected():
                await self._step("drain", self.room.local_participant.wait_for_outbound)
            # 3. cancel the work scope and let it unwind
            self._work_scope.cancel()
            await self._step("cancel_work", self._work_done.wait)
            # 4. decide the outcome and report it before the room is left: a
            # LiveKit server fails a job whose agent leaves the room first
            reported = self._reported = self._outcome()
            self._record("reported", reported.kind.value, reported.reason)
            self._control.report(reported)
            await self._step("report", self._control.wait_delivered)
            # 5. room deletion, then disconnect
            # (connected or not: the job's room exists, it was dispatched into it)
            if self.delete_room_on_close:
                await self._step("delete_room", self.delete_room)
            if self._connected:
                await self._step("disconnect", self.room.disconnect)
            # 6. every shutdown callback, concurrently
            if self._callbacks:
                await self._step("callbacks", self._run_callbacks)
            self._callbacks_done = True
            if self._api is not None:
                await self._step("close_api", self._api.aclose)
        finally:
            _in_teardown.reset(token)
        # the status already sent stands; what the later steps did is added to it
        return attrs.evolve(
            reported,
            teardown_errors=(
                *(_describe(e) for e in self._teardown_errors),
                *self._late_notes,
            ),
        )

    async def _run_callbacks(self) -> None:
        reason = self._shutdown_reason or ""
        errors: list[Exception] = []

        async def run_one(cb: ShutdownCallback) -> None:
            name = getattr(cb, "__qualname__", repr(cb))
            try:
                result = cb(reason) if _callback_arity(cb) == 1 else cb()
                if inspect.isawaitable(result):
                    await result
            except BaseException as raised:
                # a callback cut at the deadline may raise its cleanup's errors
                # mixed with the Cancelled (a nursery of its own): they are
                # reported with the others, the Cancelled goes on
                error, rest = _split_errors(raised)
                if error is None:
                    raise
                errors.append(error)
                self._record("callback_failed", name, _describe(error))
                if rest is not None:
                    raise rest from None
                return
            self._record("callback_done", name)

        done: set[int] = set()

        async def tracked(i: int, cb: ShutdownCallback) -> None:
            await run_one(cb)
            done.add(i)

        started: list[ShutdownCallback] = []
        try:
            async with trio.open_nursery() as nursery:

                def start(cb: ShutdownCallback) -> None:
                    nursery.start_soon(tracked, len(started), cb)
                    started.append(cb)

                for cb in self._callbacks:
                    start(cb)
                self._callback_starter = start
        finally:
            self._callback_starter = None
            self._callbacks_done = True
            for i, cb in enumerate(started):
                if i not in done:
                    self._record("callback_cut", getattr(cb, "__qualname__", repr(cb)))
            if errors:
                group = ExceptionGroup(f"{len(errors)} shutdown callback(s) failed", errors)
                logger.error("shutdown callbacks failed", exc_info=group)
                self._teardown_errors.extend(errors)

    def _outcome(self) -> JobOutcome:
        reason = self._shutdown_reason or ""
        teardown = tuple(_describe(e) for e in self._teardown_errors)
        if self._entrypoint_error is not None:
            return JobOutcome(
                kind=OutcomeKind.ERROR,
                reason=reason,
                error=f"entrypoint raised {_describe(self._entrypoint_error)}",
                teardown_errors=teardown,
            )
        if self._deadline_hit:
            return JobOutcome(
                kind=OutcomeKind.DEADLINE,
                reason=reason,
                error=(
                    f"teardown exceeded shutdown_process_timeout={self._budget:g}s "
                    f"in: {', '.join(self._deadline_hit)}"
                ),
                teardown_errors=teardown,
            )
        return JobOutcome(kind=OutcomeKind.CLEAN, reason=reason, teardown_errors=teardown)


async def run_job(
    info: RunningJobInfo,
    entrypoint: EntrypointFn,
    control: JobControl,
    *,
    proc: JobProcess | None = None,
    shutdown_process_timeout: float = 10.0,
    delete_room_on_close: bool = False,
    recorder: Recorder | None = None,
) -> JobOutcome:
    """Run one job as a nursery tree and return how it ended.

    The job ends on the first of its triggers (docs/lifecycle.md): ``ctx.shutdown()``,
    the room disconnecting, ``control.request_shutdown`` (server termination,
    worker shutdown), the entrypoint raising, or cancellation of the caller.
    The entrypoint returning is not one of them.
    """
    ctx = JobContext(
        info,
        proc=proc or JobProcess(),
        control=control,
        shutdown_process_timeout=shutdown_process_timeout,
        delete_room_on_close=delete_room_on_close,
        recorder=recorder,
    )
    try:
        # the job's asyncio loop thread (started on first use: by the livekit
        # backend or ctx.aio), closed once the job tree has ended
        async with rtc.open_asyncio_bridge() as bridge:
            try:
                return await ctx._run(entrypoint)
            finally:
                # closing the loop (rooms still leaving) is bounded by the job's one deadline
                if math.isfinite(ctx._deadline):
                    bridge.close_deadline = ctx._deadline
    except trio.Cancelled:
        raise
    except BaseException as exc:
        escaped = exc
    if control.outcome is None:  # pragma: no cover - a bug in the tree itself
        control.finish(
            JobOutcome(
                kind=OutcomeKind.CRASHED, reason="job runner failed", error=_describe(escaped)
            )
        )
    # A BaseException of user code (SystemExit, KeyboardInterrupt) goes on up
    # as itself, not in as many groups as it crossed nurseries; raised outside
    # the except clause so that its own context and cause are kept.
    raise sole_error(escaped) or escaped


__all__: Sequence[str] = [
    "JobContext",
    "JobProcess",
    "JobShutdownError",
    "get_job_context",
    "run_job",
]
