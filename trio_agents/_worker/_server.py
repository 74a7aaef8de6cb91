"""``AgentServer``: the agent worker, as one trio nursery tree.

```
run()
└── service nursery
    ├── connection loop: websocket, register, reader/writer/timers, reconnect
    ├── load sampler (every 0.5 s)
    ├── health server (optional)
    ├── signal watcher (first signal drains, second exits)
    └── jobs nursery ── one task per job (executor.run -> outcome -> status)
```

Jobs live in their own nursery, beside the connection: a dropped websocket
reconnects without touching them, and their final status is queued until a
connection can carry it.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import attrs
import trio
from livekit import api as lkapi
from livekit.protocol import agent

from .. import protocol
from .._errors import ConnectFailed, ConnectionClosed, HandshakeRejected, TrioAgentsError
from .._groups import sole_error
from .._health import health_app
from .._http import serve_tcp
from .._job._control import JobControl
from .._load import CPULoad
from .._metrics import WorkerMetrics
from .._sync import Changes
from .._tokens import quiet_dev_secret_warning, redact_tokens
from .._transport import MessageStream, open_websocket, websocket_base_url
from .._types import (
    JobAcceptArguments,
    JobExecutorType,
    JobOutcome,
    OutcomeKind,
    RunningJobInfo,
    ServerType,
    WorkerPermissions,
)
from .._version import __version__
from ._request import AssignmentTimeoutError, JobRequest

if TYPE_CHECKING:
    from .._job._context import JobContext

logger = logging.getLogger("trio_agents.worker")

#: How long ``on_request`` may take to answer (the server waits 10 s).
REQUEST_ANSWER_TIMEOUT = 8.0
#: How long the server may take to answer ``register``.
REGISTER_RESPONSE_TIMEOUT = 10.0
#: How long closing may take to send what is queued and say goodbye (close frame).
CLOSE_CONNECTION_TIMEOUT = 3.0
#: How long closing waits for the final job statuses to be written.
FLUSH_TIMEOUT = 2.0
LOAD_INTERVAL = 0.5
#: Longest error string sent in an UpdateJobStatus.
MAX_STATUS_ERROR = 16 * 1024

EntrypointFn = Callable[[Any], Awaitable[None]]
RequestFn = Callable[[JobRequest], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])
#: An entrypoint as the user wrote it; the decorator hands it back with its own type.
E = TypeVar("E", bound="Callable[[JobContext], Awaitable[None]]")


class WorkerError(TrioAgentsError):
    """The worker cannot go on (bad credentials, server unreachable after retries)."""


@attrs.define
class RtcSession:
    """What ``@server.rtc_session`` registered."""

    entrypoint: EntrypointFn
    agent_name: str
    server_type: ServerType
    on_request: RequestFn | None
    delete_room_on_close: bool


@attrs.define(eq=False)
class _Job:
    info: RunningJobInfo
    control: JobControl
    #: When the server offered it (``time.monotonic()``), if this worker saw the offer.
    offered_at: float | None = None
    status_sent: bool = False
    #: The final status was queued (once: the job's report, or its end).
    final_sent: bool = False


class AgentServer:
    """An agent worker: registers with LiveKit, takes jobs and runs them.

    Args:
        ws_url: the server (``ws(s)://`` or ``http(s)://``); default ``LIVEKIT_URL``.
        api_key: default ``LIVEKIT_API_KEY``.
        api_secret: default ``LIVEKIT_API_SECRET``.
        setup_fnc: prewarm, ``(proc: JobProcess) -> None`` (sync or async): runs in
            each job process before it takes a job; fill ``proc.userdata``.
        load_fnc: the worker's load (0-1), ``() -> float`` or ``(server) -> float``;
            default: CPU load.
        load_threshold: at or above it the worker takes no job (default 0.7 for
            ``start``, infinite for ``dev``).
        job_executor_type: PROCESS (default), THREAD, or INLINE (same trio run).
        num_idle_processes: prewarmed job processes (default ``min(cpus, 4)``; 0 in dev).
        initialize_process_timeout: seconds a job process may take to prewarm.
        shutdown_process_timeout: the job's teardown budget: the one deadline set
            when its shutdown starts (docs/lifecycle.md).
        drain_timeout: how long draining lets running jobs go on.
        job_memory_warn_mb: warn when a job process uses more.
        job_memory_limit_mb: end a job whose process uses more (0: no limit).
        permissions: what the agent may do in its rooms (copied into its tokens).
        max_retry: attempts to reach the server before ``run()`` fails.
        host: the health server's address.
        port: the health server's port (``/``, ``/worker``, ``/metrics``); 0 picks
            a free one, None disables it.
        prometheus_port: also serve ``/metrics`` alone on this port (as upstream).
    """

    def __init__(
        self,
        ws_url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        setup_fnc: Callable[[Any], Any] | None = None,
        load_fnc: Callable[[], float] | Callable[[AgentServer], float] | None = None,
        load_threshold: float | None = None,
        job_executor_type: JobExecutorType = JobExecutorType.PROCESS,
        num_idle_processes: int | None = None,
        initialize_process_timeout: float = 10.0,
        shutdown_process_timeout: float = 10.0,
        drain_timeout: float = 1800.0,
        job_memory_warn_mb: float = 500,
        job_memory_limit_mb: float = 0,
        permissions: WorkerPermissions | None = None,
        max_retry: int = 16,
        host: str = "127.0.0.1",
        port: int | None = 8081,
        prometheus_port: int | None = None,
    ) -> None:
        for name, text in (("ws_url", ws_url), ("api_key", api_key), ("api_secret", api_secret)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} must be a str or None, not {_type_name(text)}")
        if not isinstance(job_executor_type, JobExecutorType):
            raise TypeError(
                f"job_executor_type must be a JobExecutorType, not {job_executor_type!r}"
            )
        for name, value in (
            ("initialize_process_timeout", initialize_process_timeout),
            ("shutdown_process_timeout", shutdown_process_timeout),
            ("drain_timeout", drain_timeout),
            ("job_memory_warn_mb", job_memory_warn_mb),
            ("job_memory_limit_mb", job_memory_limit_mb),
        ):
            _check_number(name, value, minimum=0)
        if load_threshold is not None:
            _check_number("load_threshold", load_threshold)
            if not load_threshold > 0:
                raise ValueError(f"load_threshold must be > 0, got {load_threshold!r}")
        if num_idle_processes is not None:
            _check_int("num_idle_processes", num_idle_processes, minimum=0)
        _check_int("max_retry", max_retry, minimum=0)
        if port is not None:
            _check_int("port", port, minimum=0)
            if port > 65535:
                raise ValueError(f"port must be in 0..65535 or None, got {port!r}")
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {_type_name(host)}")
        if permissions is not None and not isinstance(permissions, WorkerPermissions):
            raise TypeError(
                f"permissions must be a WorkerPermissions, not {_type_name(permissions)}"
            )
        if load_fnc is not None and not callable(load_fnc):
            raise TypeError("load_fnc must be callable")
        if setup_fnc is not None and not callable(setup_fnc):
            raise TypeError("setup_fnc must be callable")
        self.ws_url = ws_url
        self.api_key = api_key
        self.api_secret = api_secret
        self.setup_fnc = setup_fnc
        self.load_fnc = load_fnc
        self.load_threshold = load_threshold
        self.job_executor_type = job_executor_type
        self.num_idle_processes = num_idle_processes
        self.initialize_process_timeout = float(initialize_process_timeout)
        self.shutdown_process_timeout = float(shutdown_process_timeout)
        self.drain_timeout = float(drain_timeout)
        self.job_memory_warn_mb = job_memory_warn_mb
        self.job_memory_limit_mb = job_memory_limit_mb
        self.permissions = permissions or WorkerPermissions()
        self.max_retry = max_retry
        self.host = host
        self.port = port
        if prometheus_port is not None:
            _check_int("prometheus_port", prometheus_port, minimum=0)
        self.prometheus_port = prometheus_port
        #: This worker's Prometheus metrics (``/metrics``), in a registry of its own.
        self.metrics = WorkerMetrics()
        #: Where ``prometheus_port`` serves, once running (a port of 0 picks one).
        self.metrics_port: int | None = None
        self._offered: dict[str, float] = {}
        self._registrations = 0
        #: Development mode (``run_app dev``): no load limit, no idle processes.
        self.devmode = False

        self._session: RtcSession | None = None
        self._running = False
        # run-time state
        self.worker_id: str | None = None
        self.health_port: int | None = None
        self._jobs: dict[str, _Job] = {}
        self._unreported: dict[str, protocol.UpdateJobStatus] = {}
        self._reserved = 0
        self._load = 0.0
        self._draining = False
        self._connection_failed: str | None = None
        self._fatal: WorkerError | None = None
        self._conn: protocol.Connection | None = None
        self._send_channel: trio.MemorySendChannel[bytes] | None = None
        self._pending_assignments: dict[str, trio.MemorySendChannel[protocol.Event | None]] = {}
        self._close_requested = trio.Event()
        self._registered = trio.Event()
        self._closed = trio.Event()
        self._stop_connection = trio.Event()
        self._connection_done = trio.Event()
        self._jobs_changed = Changes()
        self._jobs_nursery: trio.Nursery | None = None
        self._executor: Any = None
        self._hard_exit: Callable[[int], None] = os._exit
        # what the current connection's writer has written, for callers that
        # must know a message left (a job's final status, before it leaves its room)
        self._queued = 0
        self._written = 0
        self._on_written: dict[int, Callable[[bool], None]] = {}

    # --- configuration ------------------------------------------------------------

    @overload
    def rtc_session(
        self,
        func: E,
        /,
        *,
        agent_name: str | None = None,
        type: ServerType = ServerType.ROOM,
        on_request: RequestFn | None = None,
        delete_room_on_close: bool = False,
    ) -> E: ...

    @overload
    def rtc_session(
        self,
        func: None = None,
        /,
        *,
        agent_name: str | None = None,
        type: ServerType = ServerType.ROOM,
        on_request: RequestFn | None = None,
        delete_room_on_close: bool = False,
    ) -> Callable[[E], E]: ...

    def rtc_session(
        self,
        func: E | None = None,
        /,
        *,
        agent_name: str | None = None,
        type: ServerType = ServerType.ROOM,
        on_request: RequestFn | None = None,
        delete_room_on_close: bool = False,
    ) -> E | Callable[[E], E]:
        """Register the job entrypoint: ``async def entrypoint(ctx: JobContext)``.

        Use as ``@server.rtc_session(agent_name="my-agent")`` or
        ``@server.rtc_session``.  ``agent_name=""`` (the default, unless
        ``LIVEKIT_AGENT_NAME`` is set) means automatic dispatch; a name means
        explicit dispatch only.  Only one session per server.
        """
        if self._session is not None:
            raise RuntimeError(
                "an AgentServer takes exactly one rtc_session; one is registered already"
            )
        if agent_name is None:
            agent_name = os.environ.get("LIVEKIT_AGENT_NAME", "")
        if not isinstance(agent_name, str):
            # (``type`` is the argument here, not the builtin)
            raise TypeError(f"agent_name must be a str, not {_type_name(agent_name)}")
        if not isinstance(type, ServerType):
            raise TypeError(f"type must be a ServerType, not {type!r}")
        if not isinstance(delete_room_on_close, bool):
            raise TypeError(
                f"delete_room_on_close must be a bool, not {_type_name(delete_room_on_close)}"
            )
        if on_request is not None and not inspect.iscoroutinefunction(on_request):
            raise TypeError("on_request must be an async function taking a JobRequest")

        def register(fn: E) -> E:
            # (a plain bool: the TypeGuard would narrow ``fn`` away from ``E``)
            is_async: bool = inspect.iscoroutinefunction(fn)
            if not is_async:
                raise TypeError("the rtc_session entrypoint must be an async function")
            if self._session is not None:
                raise RuntimeError("an AgentServer takes exactly one rtc_session")
            self._session = RtcSession(
                entrypoint=fn,
                agent_name=agent_name,
                server_type=type,
                on_request=on_request,
                delete_room_on_close=delete_room_on_close,
            )
            return fn

        if func is not None:
            return register(func)
        return register

    @property
    def session(self) -> RtcSession:
        if self._session is None:
            raise RuntimeError("no entrypoint: decorate one with @server.rtc_session(...)")
        return self._session

    @property
    def agent_name(self) -> str:
        return self._session.agent_name if self._session else ""

    def _resolve(self) -> tuple[str, str, str]:
        url = self.ws_url or os.environ.get("LIVEKIT_URL")
        key = self.api_key or os.environ.get("LIVEKIT_API_KEY")
        secret = self.api_secret or os.environ.get("LIVEKIT_API_SECRET")
        missing = [
            n
            for n, v in (("ws_url (LIVEKIT_URL)", url), ("api_key (LIVEKIT_API_KEY)", key),
                         ("api_secret (LIVEKIT_API_SECRET)", secret))
            if not v
        ]
        if missing:
            raise WorkerError("missing configuration: " + ", ".join(missing))
        assert url
        assert key
        assert secret
        try:
            url = websocket_base_url(url)
        except ValueError as exc:
            raise WorkerError(f"bad ws_url: {exc}") from None
        return url, key, secret

    @property
    def effective_load_threshold(self) -> float:
        if self.load_threshold is not None:
            return self.load_threshold
        return math.inf if self.devmode else 0.7

    @property
    def effective_num_idle_processes(self) -> int:
        """``num_idle_processes``, or the mode's default: 0 in dev, else min(cpus, 4)."""
        if self.num_idle_processes is not None:
            return self.num_idle_processes
        return 0 if self.devmode else min(os.cpu_count() or 1, 4)

    # --- state for health / tests -------------------------------------------------

    @property
    def active_jobs(self) -> list[RunningJobInfo]:
        return [j.info for j in self._jobs.values()]

    @property
    def draining(self) -> bool:
        return self._draining

    def worker_info(self) -> dict[str, Any]:
        return {
            "agent_name": self.agent_name,
            "worker_id": self.worker_id,
            "worker_type": self._session.server_type.name if self._session else None,
            "active_jobs": len(self._jobs),
            "job_ids": sorted(self._jobs),
            "worker_load": self._load,
            "status": "WS_FULL" if self._is_full() else "WS_AVAILABLE",
            "draining": self._draining,
            "sdk_version": __version__,
            "protocol_version": 1,
        }

    def _health(self) -> tuple[bool, str]:
        if self._connection_failed:
            return False, f"failed to connect to livekit: {self._connection_failed}"
        return True, "OK"

    async def wait_registered(self) -> str:
        """Wait until registered with the server (the first time); return the worker id."""
        await self._registered.wait()
        assert self.worker_id is not None
        return self.worker_id

    # --- running --------------------------------------------------------------------

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the worker until ``aclose()``/``drain()`` finish.

        A trio library call: ``await nursery.start(server.run)`` returns once
        the worker is registered (ready to take jobs).  Cancelling it (or a
        KeyboardInterrupt through it) is a drain-less shutdown: every job gets
        its full, bounded teardown, final statuses are flushed (bounded), the
        connection closes, then the cancellation goes on.

        ``handle_signals=True`` (``run_app`` asks for it) makes the first
        SIGTERM/SIGINT drain and the second exit the process at once; by
        default ``run`` leaves signals to the application.

        Raises:
            WorkerError: bad configuration, rejected credentials, or the server
                stayed unreachable for ``max_retry`` attempts.  Errors leave
                ``run`` as themselves, never wrapped in exception groups.
        """
        if self._running:
            raise RuntimeError("this AgentServer is already running")
        session = self.session
        url, key, secret = self._resolve()
        if url.startswith("memory://") and self.job_executor_type is not JobExecutorType.INLINE:
            # an in-memory stand-in lives in this trio run: a job thread's own
            # run (or a job process) cannot reach it
            raise WorkerError(
                f"job_executor_type={self.job_executor_type.name} cannot run jobs against an "
                f"in-memory server ({url}): use JobExecutorType.INLINE, or the stand-in over "
                "TCP (its ws:// url)"
            )
        escaped: BaseException | None = None
        try:
            await self._run(url, key, secret, session, handle_signals, task_status)
        except BaseException as exc:
            escaped = exc
        if escaped is not None:
            # one error (WorkerError, KeyboardInterrupt, ...) as itself, however
            # many of our nurseries it crossed; raised outside the except clause
            raise sole_error(escaped) or escaped

    def _closing_bound(self) -> float:
        """How long a shutdown may take: the jobs' budget (+1 s), the flush, the goodbye."""
        return self.shutdown_process_timeout + 1.0 + FLUSH_TIMEOUT + CLOSE_CONNECTION_TIMEOUT + 1.0

    async def _run(
        self,
        url: str,
        key: str,
        secret: str,
        session: RtcSession,
        handle_signals: bool,
        task_status: trio.TaskStatus[None],
    ) -> None:
        self._running = True
        self._close_requested = trio.Event()
        if self._registered.is_set():  # a previous run; keep an event someone already waits on
            self._registered = trio.Event()
        self._closed = trio.Event()
        self._stop_connection = trio.Event()
        self._connection_done = trio.Event()
        self._draining = False
        self._connection_failed = None
        self._fatal = None
        from .._executor import ExecutorStartError, make_executor

        self._executor = make_executor(self)
        load_fnc = _load_sampler(self)
        interrupted: list[KeyboardInterrupt] = []
        finished = False
        # Everything runs shielded from the caller's cancellation; the guard
        # task hears it and turns it into a bounded close.
        work = trio.CancelScope(shield=True)

        def close_now() -> None:
            if not self._close_requested.is_set():
                logger.info("worker cancelled: shutting down %d jobs", len(self._jobs))
            self._request_close()
            work.deadline = min(work.deadline, trio.current_time() + self._closing_bound())

        async def guard() -> None:
            try:
                await trio.sleep_forever()
            finally:
                if not finished:
                    close_now()

        try:
            async with trio.open_nursery() as guard_nursery:
                guard_nursery.start_soon(guard)
                try:
                    with work:
                        await self._serve(
                            url, key, secret, session, handle_signals, task_status, load_fnc,
                            ExecutorStartError, close_now, interrupted,
                        )
                finally:
                    finished = True
                guard_nursery.cancel_scope.cancel()
        finally:
            self._running = False
            self._closed.set()
            if self._executor is not None:
                with trio.CancelScope(shield=True):
                    await self._executor.aclose()
        if interrupted:
            raise interrupted[0]
        if self._fatal is not None:
            raise self._fatal

    async def _serve(
        self,
        url: str,
        key: str,
        secret: str,
        session: RtcSession,
        handle_signals: bool,
        task_status: trio.TaskStatus[None],
        load_fnc: Callable[[], float],
        start_error: type[Exception],
        close_now: Callable[[], None],
        interrupted: list[KeyboardInterrupt],
    ) -> None:
        started: list[bool] = []
        async with trio.open_nursery() as service:
            if self.port is not None:
                app = health_app(self._health, self.worker_info, self._metrics_page)
                bind_error: OSError | None = None
                try:
                    self.health_port = await service.start(serve_tcp, app, self.host, self.port)
                except BaseException as exc:  # hypercorn raises it inside its nurseries
                    error = sole_error(exc)
                    if not isinstance(error, OSError):
                        raise
                    bind_error = error
                if bind_error is not None:
                    raise WorkerError(
                        f"cannot serve the health check on {self.host}:{self.port}: {bind_error}"
                    )
                logger.info("health server listening on http://%s:%d", self.host, self.health_port)
            if self.prometheus_port is not None:
                metrics_app = health_app(None, None, self._metrics_page)
                try:
                    self.metrics_port = await service.start(
                        serve_tcp, metrics_app, self.host, self.prometheus_port
                    )
                except BaseException as exc:
                    error = sole_error(exc)
                    if not isinstance(error, OSError):
                        raise
                    raise WorkerError(
                        f"cannot serve metrics on {self.host}:{self.prometheus_port}: {error}"
                    ) from None
            if handle_signals:
                await service.start(self._watch_signals, service)
            service.start_soon(self._sample_load, load_fnc)
            cause: Exception | None = None
            try:
                await self._executor.start(service)
            except start_error as exc:
                cause = exc
            if cause is not None:
                raise WorkerError(f"cannot start job processes: {cause}")
            service.start_soon(self._connection_task, url, key, secret, session)
            try:
                async with trio.open_nursery() as jobs:
                    self._jobs_nursery = jobs
                    try:
                        # started = ready to serve: registered, so that a
                        # dispatch made right after start() finds this worker
                        await _first_of(self._registered.wait, self._close_requested.wait)
                        if self._registered.is_set():
                            task_status.started()
                            started.append(True)
                        await self._close_requested.wait()
                    except BaseException as exc:
                        # Ctrl-C into this task (run() in trio's main task; maybe
                        # inside a nursery of ours, so in a group): a bounded
                        # close like a cancellation, then it goes on up
                        ki = sole_error(exc)
                        if not isinstance(ki, KeyboardInterrupt):
                            raise
                        interrupted.append(ki)
                        close_now()
                    await self._shutdown_jobs()
                    # what did not end within its budget (+1 s) is given up
                    jobs.cancel_scope.cancel()
            finally:
                self._jobs_nursery = None
            await self._flush_statuses()
            await self._close_connection()
            service.cancel_scope.cancel()
        if not started and self._fatal is None and not interrupted:
            # closed before it ever registered: start() returns, run() is over
            task_status.started()

    async def _connection_task(self, url: str, key: str, secret: str, session: RtcSession) -> None:
        """The connection loop; a failure for good closes the worker like ``aclose``.

        Running jobs then get their normal, bounded teardown while the health
        check answers 503; ``run`` raises the ``WorkerError`` at the end.
        """
        try:
            await self._connection_loop(url, key, secret, session)
        except WorkerError as exc:
            if self._jobs:
                logger.error("%s; shutting down %d running jobs", exc, len(self._jobs))
            self._fatal = exc
            self._request_close()
        finally:
            self._connection_done.set()

    async def _close_connection(self) -> None:
        """End the websocket politely: send what is queued, then the close frame (bounded)."""
        self._stop_connection.set()
        with trio.move_on_after(CLOSE_CONNECTION_TIMEOUT):
            await self._connection_done.wait()

    async def aclose(self) -> None:
        """Stop now: shut every job down within its budget, then return from ``run``."""
        if not self._running:
            return
        self._request_close()
        await self._closed.wait()

    def _request_close(self) -> None:
        self._close_requested.set()

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - upstream's name
        """Stop taking jobs, let running jobs end (at most ``timeout``, default
        ``drain_timeout``), then shut down the rest with their budget and close."""
        timeout = self.drain_timeout if timeout is None else timeout
        self._start_draining()
        with trio.move_on_after(timeout) as scope:
            await self._wait_idle()
        if scope.cancelled_caught:
            logger.warning(
                "drain timed out after %.1f s; shutting down %d jobs", timeout, len(self._jobs)
            )
        await self.aclose()

    def _start_draining(self) -> None:
        if self._draining:
            return
        self._draining = True
        logger.info("draining: no new jobs; %d running", len(self._jobs))
        self._send_status()
        for job in self._jobs.values():
            job.control.notify_draining()

    async def _wait_idle(self) -> None:
        await self._jobs_changed.wait_until(lambda: not self._jobs and not self._reserved)

    async def _shutdown_jobs(self) -> None:
        for job in list(self._jobs.values()):
            job.control.request_shutdown("worker shutting down")
        # Each job bounds its own teardown; the extra second covers reporting.
        with trio.move_on_after(self.shutdown_process_timeout + 1.0):
            await self._wait_idle()

    async def _flush_statuses(self) -> None:
        """Give queued final statuses a bounded chance to reach the server."""
        with trio.move_on_after(FLUSH_TIMEOUT):
            await self._jobs_changed.wait_until(
                lambda: not self._unreported or self._conn is None
            )
        if self._unreported:
            logger.warning("%d final job statuses could not be sent", len(self._unreported))

    async def _watch_signals(
        self,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            count = 0
            async for signum in signals:
                count += 1
                if count == 1:
                    logger.info(
                        "%s received: draining (send it again to exit now)",
                        signal.Signals(signum).name,
                    )
                    self._start_draining()
                    nursery.start_soon(self._drain_then_close)
                else:
                    logger.warning("second %s: exiting now", signal.Signals(signum).name)
                    logging.shutdown()
                    self._hard_exit(1)

    async def _drain_then_close(self) -> None:
        with trio.move_on_after(self.drain_timeout) as scope:
            await self._wait_idle()
        if scope.cancelled_caught:
            logger.warning("drain timed out; shutting down %d jobs", len(self._jobs))
        self._request_close()

    async def _sample_load(self, load_fnc: Callable[[], float]) -> None:
        failing = False
        while True:
            try:
                value = float(load_fnc())
            except Exception:
                # once per run of failures, not every half second
                if not failing:
                    logger.exception("load_fnc failed; keeping the last load")
                failing = True
            else:
                failing = False
                self._load = value if math.isfinite(value) else 1.0
            await trio.sleep(LOAD_INTERVAL)

    def _is_full(self) -> bool:
        if self._draining or self._close_requested.is_set():
            return True
        active = len(self._jobs)
        if self._reserved:
            # no job to learn from: assume the threshold spread over the idle pool
            per_job = self._load / active if active else self.effective_load_threshold / max(
                self.effective_num_idle_processes, 1
            )
            if not math.isfinite(per_job):
                per_job = 0.0
            return self._load + self._reserved * per_job >= self.effective_load_threshold
        return self._load >= self.effective_load_threshold

    # --- the websocket --------------------------------------------------------------

    async def _connection_loop(self, url: str, key: str, secret: str, session: RtcSession) -> None:
        retry = 0
        while not self._stop_connection.is_set():
            self._registered_this_attempt = False
            quiet_dev_secret_warning(secret)
            unreachable = False
            try:
                token = (
                    lkapi.AccessToken(key, secret)
                    .with_grants(lkapi.VideoGrants(agent=True))
                    .to_jwt()
                )
                async with open_websocket(
                    url, "/agent", headers={"Authorization": f"Bearer {token}"}
                ) as ws:
                    await self._run_session(ws, session)
                reason = "the server closed the connection"
            except HandshakeRejected as exc:
                if exc.status in (401, 403):
                    self._connection_failed = str(exc)
                    raise WorkerError(
                        f"the server at {url} rejected the credentials "
                        f"(api key {key!r}): {redact_tokens(exc.body or str(exc))}"
                    ) from None
                reason = str(exc)
            except ConnectFailed as exc:
                # never got a connection this time: say so, with the cause
                # (refused, DNS, TLS, timeout), not "lost"
                reason = str(exc)
                unreachable = True
            except (
                ConnectionClosed,
                protocol.RemoteProtocolError,
                _RegisterTimeout,
            ) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop_connection.is_set():
                return
            if self._registered_this_attempt:
                retry = 0
            if retry >= self.max_retry:
                self._connection_failed = reason
                verb = "cannot reach" if unreachable else "failed to connect to"
                raise WorkerError(f"{verb} livekit at {url} after {retry + 1} attempts: {reason}")
            delay = min(retry * 2, 10)
            if unreachable:
                logger.warning(
                    "cannot reach livekit (%s); retrying in %d s (attempt %d of %d)",
                    reason, delay, retry + 1, self.max_retry + 1,
                )
            else:
                logger.warning("worker connection lost (%s); retrying in %d s", reason, delay)
            with trio.move_on_after(delay):
                await self._stop_connection.wait()
            retry += 1

    _registered_this_attempt = False

    async def _run_session(self, ws: MessageStream, session: RtcSession) -> None:
        conn = protocol.Connection(protocol.Role.WORKER, clock=trio.current_time)
        await ws.send_message(
            conn.send(
                protocol.Register(
                    agent_name=session.agent_name,
                    job_type=cast("agent.JobType", int(session.server_type)),
                    version=__version__,
                    permissions=self.permissions.to_proto(),
                )
            )
        )
        registered: protocol.Registered | None = None
        with trio.move_on_after(REGISTER_RESPONSE_TIMEOUT):
            while registered is None:
                raw = await ws.get_message()
                if isinstance(raw, str):
                    continue
                first = conn.receive_message(raw)
                if isinstance(first, protocol.Registered):
                    registered = first
        if registered is None:
            raise _RegisterTimeout(f"no register response within {REGISTER_RESPONSE_TIMEOUT} s")
        event = registered
        self.worker_id = event.worker_id
        self._registered_this_attempt = True
        if self._registrations:
            self.metrics.reconnects.inc()
        self._registrations += 1
        logger.info(
            "registered worker %s (agent_name=%r, server %s)",
            event.worker_id, session.agent_name, event.server_info.version,
        )
        send_ch, recv_ch = trio.open_memory_channel[bytes](math.inf)
        self._queued = self._written = 0
        self._on_written = {}
        self._conn = conn
        self._send_channel = send_ch
        # re-announce jobs that outlived the previous connection, then their news
        carried = sorted(set(self._jobs) | set(self._unreported))
        if carried:
            self._send(protocol.MigrateJob(job_ids=tuple(carried)))
        for job_id, job in self._jobs.items():
            self._send(protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_RUNNING))
            job.status_sent = True
        for update in list(self._unreported.values()):
            self._send_final(update)
        self._send_status()
        self._registered.set()
        wake = Changes()

        async def writer() -> None:
            async for data in recv_ch:
                await ws.send_message(data)
                self._written += 1
                confirm = self._on_written.pop(self._written, None)
                if confirm is not None:
                    confirm(True)
            # closed by stopper(): all that was queued is sent; end the session
            # normally, so that the websocket closes with a close frame
            nursery.cancel_scope.cancel()

        async def stopper() -> None:
            await self._stop_connection.wait()
            self._conn = None
            self._send_channel = None
            send_ch.close()

        async def timers() -> None:
            while True:
                deadline = conn.next_deadline()
                with trio.move_on_at(deadline):
                    await wake.wait_until(lambda d=deadline: conn.next_deadline() != d)  # type: ignore[misc]
                    continue
                for ev in conn.handle_timer(trio.current_time()):
                    if isinstance(ev, protocol.StatusDue):
                        self._send_status()
                    elif isinstance(ev, protocol.AssignmentTimeout):
                        ch = self._pending_assignments.get(ev.job_id)
                        if ch is not None:
                            ch.send_nowait(ev)

        error: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(timers)
                nursery.start_soon(stopper)
                while True:
                    raw = await ws.get_message()
                    if isinstance(raw, str):
                        logger.warning("ignoring a text frame from the server")
                        continue
                    try:
                        incoming = conn.receive_message(raw)
                    except protocol.RemoteProtocolError as exc:
                        logger.error(
                            "malformed message from the server (%s); resetting the connection; "
                            "running jobs are not affected",
                            exc,
                        )
                        raise
                    wake.notify()
                    if incoming is not None:
                        self._dispatch(incoming, nursery)
        except* (ConnectionClosed, protocol.RemoteProtocolError) as group:
            error = group.exceptions[0]
        finally:
            self._conn = None
            self._send_channel = None
            for ch in list(self._pending_assignments.values()):
                ch.send_nowait(None)
            unwritten, self._on_written = self._on_written, {}
            for confirm in unwritten.values():
                confirm(False)
        if error is not None:
            raise error

    def _dispatch(self, event: protocol.Event, nursery: trio.Nursery) -> None:
        match event:
            case protocol.AvailabilityRequest():
                nursery.start_soon(self._answer_availability, event.job)
            case protocol.JobAssignment():
                ch = self._pending_assignments.get(event.job.id)
                if ch is not None:
                    ch.send_nowait(event)
                else:
                    # we gave up waiting; tell the server so both sides agree
                    logger.warning("job %s was assigned after the assignment timeout", event.job.id)
                    self._send_final(
                        protocol.UpdateJobStatus(
                            job_id=event.job.id, status=agent.JS_FAILED,
                            error="assignment arrived after the worker's timeout",
                        )
                    )
            case protocol.JobTermination():
                job = self._jobs.get(event.job_id)
                if job is not None:
                    logger.info("server terminated job %s", event.job_id)
                    job.control.request_shutdown("job terminated by the server")
            case protocol.Pong() | protocol.Registered():
                pass

    def _send(
        self, event: protocol.Event, on_written: Callable[[bool], None] | None = None
    ) -> bool:
        """Send now if connected; False if there is no connection.

        ``on_written(True)`` once the writer wrote it, ``(False)`` if the
        connection ended first (not called when this returns False).
        """
        conn, ch = self._conn, self._send_channel
        if conn is None or ch is None:
            return False
        ch.send_nowait(conn.send(event))
        self._queued += 1
        if on_written is not None:
            self._on_written[self._queued] = on_written
        return True

    def _send_status(self) -> None:
        if self._draining:
            ev = protocol.UpdateWorkerStatus(status=agent.WS_FULL, job_count=len(self._jobs))
        else:
            ev = protocol.UpdateWorkerStatus(
                status=agent.WS_FULL if self._is_full() else agent.WS_AVAILABLE,
                load=self._load,
                job_count=len(self._jobs),
            )
        self._send(ev)

    def _send_final(
        self, update: protocol.UpdateJobStatus, on_done: Callable[[], None] | None = None
    ) -> None:
        """Send a final status; it stays queued (for the next connection) until written.

        ``on_done()`` once it is written, or once it is clear that it waits for
        another connection.
        """
        self._unreported[update.job_id] = update

        def written(ok: bool) -> None:
            if ok and self._unreported.get(update.job_id) is update:
                del self._unreported[update.job_id]
            self._jobs_changed.notify()
            if on_done is not None:
                on_done()

        if not self._send(update, written) and on_done is not None:
            on_done()
        self._jobs_changed.notify()

    # --- availability and launch ------------------------------------------------------

    async def _answer_availability(self, job: agent.Job) -> None:
        session = self.session
        self._offered[job.id] = time.monotonic()
        if len(self._offered) > 1000:  # offers that never became jobs: keep the newest
            for stale in list(self._offered)[:-1000]:
                del self._offered[stale]
        if self._is_full():
            self._send(protocol.Availability(job_id=job.id, available=False))
            return
        self._reserved += 1
        try:
            # on_request must answer in time; waiting for the assignment after an
            # accept has its own bound (the protocol's 7.5 s assignment timeout)
            answer_scope = trio.CancelScope(
                deadline=trio.current_time() + REQUEST_ANSWER_TIMEOUT
            )

            async def on_accept(args: JobAcceptArguments) -> None:
                ch_send, ch_recv = trio.open_memory_channel[protocol.Event | None](1)
                self._pending_assignments[job.id] = ch_send
                try:
                    if not self._send(
                        protocol.Availability(
                            job_id=job.id,
                            available=True,
                            participant_identity=args.identity,
                            participant_name=args.name,
                            participant_metadata=args.metadata,
                            participant_attributes=args.attributes,
                        )
                    ):
                        raise ConnectionClosed("worker connection lost before accepting")
                    answer_deadline, answer_scope.deadline = answer_scope.deadline, math.inf
                    try:
                        result = await ch_recv.receive()
                    finally:
                        answer_scope.deadline = answer_deadline
                finally:
                    self._pending_assignments.pop(job.id, None)
                if not isinstance(result, protocol.JobAssignment):
                    raise AssignmentTimeoutError(f"job {job.id} was accepted but never assigned")
                # accept() returns once the job is launched
                url, key, secret = self._resolve()
                self._launch(
                    RunningJobInfo(
                        job=result.job,
                        url=result.url or url,
                        token=result.token,
                        worker_id=self.worker_id or "",
                        accept_arguments=args,
                        api_key=key,
                        api_secret=secret,
                    )
                )

            async def on_reject(terminate: bool) -> None:
                self._send(
                    protocol.Availability(job_id=job.id, available=False, terminate=terminate)
                )

            req = JobRequest(
                job, on_accept=on_accept, on_reject=on_reject, agent_name=session.agent_name
            )
            handler = session.on_request or _default_on_request
            with answer_scope:
                try:
                    await handler(req)
                except AssignmentTimeoutError:
                    logger.warning("job %s: assignment timed out", job.id)
                    return
                except Exception:
                    logger.exception("on_request raised for job %s", job.id)
            if answer_scope.cancelled_caught and req.answer is None:
                logger.warning(
                    "on_request did not answer job %s within %.1f s", job.id, REQUEST_ANSWER_TIMEOUT
                )
            if req.answer is None:
                self._send(protocol.Availability(job_id=job.id, available=False, terminate=False))
        finally:
            self._reserved -= 1
            self._jobs_changed.notify()

    def _launch(self, info: RunningJobInfo) -> None:
        if self._jobs_nursery is None:
            # assigned after the worker finished closing: nothing can run it
            logger.warning(
                "job %s was assigned after the worker closed; not running it", info.job.id
            )
            self._send_final(
                protocol.UpdateJobStatus(
                    job_id=info.job.id, status=agent.JS_FAILED, error="the worker was closing"
                )
            )
            return
        control = JobControl()
        job = _Job(info=info, control=control, offered_at=self._offered.pop(info.job.id, None))
        self._jobs[info.job.id] = job
        self.metrics.jobs_started.inc()
        if job.offered_at is not None:
            self.metrics.offer_to_launch.observe(time.monotonic() - job.offered_at)
        if self._draining:
            control.notify_draining()
        if self._close_requested.is_set():
            # accepted while the worker was closing: it gets the normal teardown at once
            control.request_shutdown("worker shutting down")
        logger.info(
            "job %s launched (room=%s, agent_name=%r, dispatch=%s, metadata=%r)",
            info.job.id,
            info.job.room.name,
            info.job.agent_name,
            info.job.dispatch_id,
            info.job.metadata,
        )
        assert self._jobs_nursery is not None
        self._jobs_nursery.start_soon(self._run_job, job)

    async def _run_job(self, job: _Job) -> None:
        job_id = job.info.job.id
        started = time.monotonic()
        job.status_sent = self._send(
            protocol.UpdateJobStatus(job_id=job_id, status=agent.JS_RUNNING)
        )
        # the job reports its outcome before it leaves its room: send it at once
        job.control.on_report(lambda outcome: self._report(job, outcome))
        outcome: JobOutcome | None = None
        try:
            outcome = await self._executor.run(job.info, job.control, self.session)
        except Exception as exc:  # an executor bug must not take the worker down
            logger.exception("executor failed for job %s", job_id)
            outcome = JobOutcome(kind=OutcomeKind.CRASHED, reason="executor error", error=repr(exc))
        finally:
            self._jobs.pop(job_id, None)
            if outcome is None:  # given up on (past its budget) or cancelled
                outcome = JobOutcome(
                    kind=OutcomeKind.CRASHED,
                    reason="worker shut down",
                    error="the worker gave up on the job: it did not end within "
                    f"shutdown_process_timeout={self.shutdown_process_timeout:g}s",
                )
            # (no-op when it reported already: the status sent stands)
            self._report(job, outcome)
            self._count_end(outcome)
            self._jobs_changed.notify()
        logger.info(
            "job %s ended: %s (%s) after %.2f s%s",
            job_id, outcome.kind.value, outcome.reason or outcome.error, time.monotonic() - started,
            f"; teardown errors: {'; '.join(outcome.teardown_errors)}"
            if outcome.teardown_errors else "",
        )

    def _count_end(self, outcome: JobOutcome) -> None:
        m = self.metrics
        m.jobs_ended.labels(outcome=outcome.kind.value).inc()
        # teardown notes: errors, and steps late or cut at the deadline after the report
        # ("name: was cut off at the deadline (...)"); steps cut before the report are
        # named in a DEADLINE outcome's error
        notes = outcome.teardown_errors
        m.teardown_errors.inc(sum(1 for e in notes if "the deadline" not in e))
        late = [e.split(":", 1)[0] for e in notes if "the deadline" in e]
        if outcome.kind is OutcomeKind.DEADLINE and " in: " in outcome.error:
            late += outcome.error.rsplit(" in: ", 1)[1].split(", ")
        for step in late:
            m.deadline_hits.labels(step=step).inc()

    def _metrics_page(self) -> bytes:
        idle = getattr(self._executor, "idle_count", None)
        self.metrics.refresh(
            load=self._load,
            active_jobs=len(self._jobs),
            idle_processes=idle() if callable(idle) else None,
        )
        return self.metrics.exposition()

    def _report(self, job: _Job, outcome: JobOutcome) -> None:
        """Send a job's final status (once); the job hears when it is on its way."""
        if job.final_sent:
            return
        job.final_sent = True
        started = job.control.shutdown_started_at
        if started is not None:
            self.metrics.teardown.observe(max(0.0, time.monotonic() - started))
        self._send_final(
            protocol.UpdateJobStatus(
                job_id=job.info.job.id, status=outcome.job_status, error=_cut(outcome.error)
            ),
            on_done=job.control.mark_delivered,
        )


def _cut(error: str) -> str:
    """An error string short enough for a status update (the log has all of it).

    A server frame holds at most 2 MiB; an exception message can hold a whole
    response body.
    """
    if len(error) <= MAX_STATUS_ERROR:
        return error
    return f"{error[:MAX_STATUS_ERROR]} ... [truncated {len(error) - MAX_STATUS_ERROR} characters]"


def _load_sampler(server: AgentServer) -> Callable[[], float]:
    """``load_fnc`` as a no-argument callable; like upstream it may take the server."""
    fn = server.load_fnc
    if fn is None:
        return CPULoad()
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        params = []
    if params:
        takes_server = cast("Callable[[AgentServer], float]", fn)
        return lambda: takes_server(server)
    return cast("Callable[[], float]", fn)


def _type_name(value: object) -> str:
    return value.__class__.__name__


def _check_number(name: str, value: object, *, minimum: float | None = None) -> None:
    """A real number (not bool, not NaN), at least ``minimum``; errors name the argument."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {_type_name(value)}")
    if math.isnan(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ValueError(f"{name} must be a number{bound}, got {value!r}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {_type_name(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


async def _default_on_request(req: JobRequest) -> None:
    await req.accept()


class _RegisterTimeout(TrioAgentsError):
    pass


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return once the first of ``waits`` returns."""
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)
