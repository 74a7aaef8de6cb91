"""PROCESS: each job in its own process, forked from a zygote, prewarmed.

```
ProcessExecutor
├── zygote (a child process; forks job processes on request)
├── pool task: keeps num_idle_processes forked, set up and waiting
└── per job: supervise(proc) ── reader (pong, logs, outcome)
                              ├── pinger (every 2.5 s; unresponsive -> stack dump, kill)
                              ├── memory monitor (warn; over the limit -> shutdown, then kill)
                              └── the deadline: shutdown start + budget (+ <= 1 s) -> kill
```
"""

from __future__ import annotations

import array
import contextlib
import logging
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import attrs
import psutil
import trio

from .._types import JobExecutorType, JobOutcome, OutcomeKind, RunningJobInfo
from . import ExecutorStartError, _ipc, _zygote

if TYPE_CHECKING:
    from .._job._control import JobControl
    from .._worker._server import AgentServer, RtcSession

logger = logging.getLogger("trio_agents.executor")

PING_INTERVAL = 2.5
#: A job process that has not answered a ping for this long is killed.
PING_TIMEOUT = 60.0
#: A pong later than this is worth a warning.
HIGH_PING = 0.5
MEMORY_INTERVAL = 1.0
MEMORY_WARN_EVERY = 120.0
#: After the deadline: the stack dump gets this long before SIGKILL.
DUMP_GRACE = 0.3
#: SIGKILL at shutdown start + shutdown_process_timeout + this (the promise: "+ at most 1 s"),
#: leaving the rest of that second for the kill itself and the reaping.
KILL_MARGIN = 0.5
ZYGOTE_START_TIMEOUT = 60.0
MAX_BACKOFF = 10.0
#: How many job processes a job may try when they die before taking it.
MAX_START_ATTEMPTS = 3
#: After a job process exits: how long its last messages (the outcome) may take to be read.
DRAIN_AFTER_EXIT = 1.0


class PoolUnavailable(ExecutorStartError):
    """No job process could be had in time (or the zygote could not start)."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        #: More than the one-line message (a traceback from the agent's module).
        self.detail = detail


#: How often a job process whose zygote died is checked for having exited.
LOST_POLL_INTERVAL = 0.05


class Zygote:
    """The worker's handle on its fork server."""

    def __init__(self) -> None:
        self._sock: trio.socket.SocketType | None = None
        self._proc: trio.Process | None = None
        self._fork_lock = trio.Lock()
        self._forked: trio.MemorySendChannel[int] | None = None
        self._forked_recv: trio.MemoryReceiveChannel[int] | None = None
        #: Exit statuses reported and not yet claimed by ``wait_exit``.
        self.exits: dict[int, int] = {}
        self._exit_events: dict[int, trio.Event] = {}
        #: Forked and not yet reported exited: only these pids are ours to signal.
        #: (With a handle that tells the process from a later one with its pid.)
        self._live: dict[int, psutil.Process | None] = {}
        self.alive = False
        #: It went away by itself (not closed by the worker): its job processes died with it.
        self.died = False
        #: Set once the zygote is gone (its reports end there).
        self.gone = trio.Event()
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, nursery: trio.Nursery, spec: _zygote.LoadSpec) -> None:
        """Start the zygote and wait until it loaded the agent.

        Raises:
            PoolUnavailable: it could not start or load the agent (it is gone then).
        """
        try:
            await self._start(spec)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise
        self.alive = True
        self._forked, self._forked_recv = trio.open_memory_channel[int](math.inf)
        nursery.start_soon(self._reader)

    async def _start(self, spec: _zygote.LoadSpec) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = trio.socket.from_stdlib_socket(parent)
        try:
            self._proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_agents._executor._zygote_main", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        await self._sock.send(pickle.dumps(spec))
        reply: object = None
        with trio.move_on_after(ZYGOTE_START_TIMEOUT) as scope:
            data = await self._sock.recv(1 << 20)
            if not data:
                raise PoolUnavailable(
                    "the job process zygote exited during start-up (see its stderr)"
                )
            reply = pickle.loads(data)
        if scope.cancelled_caught:
            raise PoolUnavailable("the job process zygote did not start in time")
        if isinstance(reply, _zygote.ZygoteError):
            raise PoolUnavailable(
                f"the job process zygote could not load the agent: {reply.error}",
                detail=reply.traceback,
            )

    async def _reader(self) -> None:
        assert self._sock is not None
        assert self._forked is not None
        died = False  # (not: the worker stopped listening)
        try:
            while True:
                try:
                    data = await self._sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    died = not self._closing
                    break
                msg = pickle.loads(data)
                if isinstance(msg, _zygote.Forked):
                    # a new process: an unclaimed exit of an earlier one with this pid is stale
                    self.exits.pop(msg.pid, None)
                    self._live[msg.pid] = _handle(msg.pid)
                    self._forked.send_nowait(msg.pid)
                elif isinstance(msg, _zygote.Exited):
                    self._live.pop(msg.pid, None)
                    self.exits[msg.pid] = msg.status
                    ev = self._exit_events.pop(msg.pid, None)
                    if ev is not None:
                        ev.set()
        finally:
            self.alive = False
            self.died = died
            self._forked.close()
            # nobody will report the exits still awaited: wake their waiters
            for ev in self._exit_events.values():
                ev.set()
            self._exit_events.clear()
            self.gone.set()
            if died:
                logger.error(
                    "the job process zygote (pid %s) died; its job processes died with it",
                    self.pid,
                )

    async def fork(self) -> tuple[int, _ipc.FramedStream]:
        """A new job process and the worker's end of its IPC socket."""
        if not self.alive or self._sock is None or self._forked_recv is None:
            raise PoolUnavailable("the job process zygote is not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with self._fork_lock:
                fds = array.array("i", [theirs.fileno()])
                await self._sock.sendmsg(
                    [pickle.dumps(_zygote.Fork())],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
                )
                theirs.close()
                try:
                    pid = await self._forked_recv.receive()
                except trio.EndOfChannel:
                    raise PoolUnavailable("the job process zygote died") from None
        except BaseException:
            ours.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                theirs.close()
        stream = _ipc.FramedStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        return pid, stream

    def is_running(self, pid: int) -> bool:
        """False once ``pid`` exited, even if the zygote has not reaped it yet."""
        if pid not in self._live or self.died:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def signal(self, pid: int, sig: int = signal.SIGKILL, *, group: bool = True) -> None:
        """Send ``sig`` to job process ``pid`` (and its process group) if it is still ours.

        Once the zygote reaped it, its pid (and so its group id) may belong to
        some other process: then nothing is sent.  (What the job left in its
        group is killed by the zygote, before it reaps the job process.)
        """
        if pid not in self._live or self.died:  # (orphans since: see wait_exit)
            return
        if group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

    async def wait_exit(self, pid: int) -> int | None:
        """Wait for ``pid`` to exit; its exit code (negative: killed by that signal).

        None if the zygote died first: then nobody can say how the process
        ended (it died with the zygote: its parent-death signal).
        """
        while pid not in self.exits:
            if not self.alive:
                handle = self._live.pop(pid, None)
                if handle is not None:
                    await _end_lost(handle)
                return None
            ev = self._exit_events.setdefault(pid, trio.Event())
            await ev.wait()
        return os.waitstatus_to_exitcode(self.exits.pop(pid))

    async def aclose(self) -> None:
        self._closing = True
        if self._sock is not None:
            self._sock.close()
        if self._proc is not None:
            with trio.move_on_after(2):
                await self._proc.wait()
            if self._proc.returncode is None:
                self._proc.kill()
                with trio.move_on_after(1):
                    await self._proc.wait()


def _handle(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


async def _end_lost(proc: psutil.Process) -> None:
    """End a job process whose zygote died, with its group, and wait until it is gone.

    It is an orphan now (whatever init reaps it); the handle recognises it,
    and while it exists, even as a zombie, its pid and group id are its own.
    """
    with contextlib.suppress(psutil.Error, OSError):
        if proc.is_running():
            os.killpg(proc.pid, signal.SIGKILL)
    while True:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        await trio.sleep(LOST_POLL_INTERVAL)


@attrs.define(eq=False)
class JobProc:
    """One job process, from fork to exit."""

    pid: int
    stream: _ipc.FramedStream
    #: The zygote that forked it: the one that reports its exit.
    zygote: Zygote
    dump_path: str = ""
    ready_at: float = 0.0
    watch: trio.CancelScope = attrs.field(factory=trio.CancelScope)


#: The reason of a job process that died with its zygote.
LOST_WITH_ZYGOTE = "job process lost: the job process zygote died, and its job processes with it"


def _exit_reason(code: int | None) -> str:
    if code is None:
        return LOST_WITH_ZYGOTE
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"job process killed by {name}"
    return f"job process exited with code {code}"


def _log_levels() -> dict[str, int]:
    """The levels set on this process's loggers (``""``: the root logger)."""
    levels = {"": logging.getLogger().level}
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET:
            levels[name] = lg.level
    return levels


@attrs.define
class Observed:
    """What the worker saw of one job process: the input of ``decide_outcome``."""

    #: It got the job (``Started``): before that, the job can go to another process.
    started: bool = False
    #: The outcome it reported once its work unwound (before it left its room).
    reported: JobOutcome | None = None
    #: The outcome it sent at the end of its teardown.
    done: JobOutcome | None = None
    #: Why the worker killed it (deadline, unresponsive), if it did.
    kill_reason: str | None = None
    memory_exceeded: bool = False
    #: Its exit code (negative: the signal); None if lost with its zygote.
    exit_code: int | None = None


def decide_outcome(seen: Observed, *, memory_limit_mb: float) -> JobOutcome | None:
    """How the job ended, from what was seen; None if it never took the job.

    Pure: called when the job reports (the status sent then) and when the
    process is gone (the outcome returned); a report is never contradicted
    later, only completed (``teardown_errors``).
    """
    final = seen.done or seen.reported
    if (
        not seen.started
        and final is None
        and seen.kill_reason is None
        and not seen.memory_exceeded
    ):
        return None
    if seen.memory_exceeded:
        return JobOutcome(
            kind=OutcomeKind.MEMORY_LIMIT,
            reason="memory limit exceeded",
            error=f"job exceeded job_memory_limit_mb={memory_limit_mb:g}",
            teardown_errors=final.teardown_errors if final else (),
        )
    if final is not None:
        if seen.kill_reason is not None and seen.done is None:
            # killed after its report (leaving the room or its hooks overran):
            # the status sent stands; the kill is part of how it ended
            return attrs.evolve(
                final, teardown_errors=(*final.teardown_errors, f"killed: {seen.kill_reason}")
            )
        return final
    return JobOutcome(
        kind=OutcomeKind.CRASHED,
        reason="job process ended",
        error=seen.kill_reason or _exit_reason(seen.exit_code),
    )


class _Supervisor:
    """One job in one process: its messages, its liveness, its memory, its deadline."""

    def __init__(
        self,
        server: AgentServer,
        proc: JobProc,
        info: RunningJobInfo,
        control: JobControl,
        session: RtcSession,
    ) -> None:
        self.server = server
        self.proc = proc
        self.info = info
        self.control = control
        self.session = session
        self.budget = server.shutdown_process_timeout
        job = info.job
        self.extra = {
            "job_id": job.id, "pid": proc.pid, "room": job.room.name, "room_id": job.room.sid
        }
        self.seen = Observed()
        self.read_all = trio.Event()
        self.finished = False
        #: When the job's shutdown started (trio time), whoever started it.
        self.shutdown_at: float | None = None
        self.deadline_changed = trio.Event()
        self.last_pong = trio.current_time()
        self.nursery: trio.Nursery | None = None

    # --- the one clock -------------------------------------------------------------

    def shutdown_started(self, monotonic_at: float | None = None) -> None:
        """Start the kill clock (first call wins); ``monotonic_at``: when, in the job."""
        if self.shutdown_at is not None:
            return
        now = trio.current_time()
        if monotonic_at is not None:
            # the same CLOCK_MONOTONIC in both processes: back-date to the job's moment
            now -= min(max(time.monotonic() - monotonic_at, 0.0), self.budget)
        self.shutdown_at = now
        self.deadline_changed.set()

    async def enforce_deadline(self) -> None:
        while self.shutdown_at is None:
            await self.deadline_changed.wait()
        # the budget, plus a little for the report and the exit; gone before 1 s extra
        await trio.sleep_until(self.shutdown_at + self.budget + KILL_MARGIN - DUMP_GRACE)
        if self.seen.done is not None:
            # it sent its final outcome and is only slow to exit: not a failure
            self.proc.zygote.signal(self.proc.pid)
            return
        await self.kill(
            f"still running {self.budget:g} s after shutdown started (shutdown_process_timeout)"
        )

    # --- messages ------------------------------------------------------------------

    async def send(self, msg: object) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.proc.stream.send(msg)

    async def reader(self) -> None:
        try:
            while True:
                self.handle(await self.proc.stream.receive())
        except (
            EOFError,
            _ipc.FrameError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ):
            return
        finally:
            self.read_all.set()

    def handle(self, msg: object) -> None:
        if isinstance(msg, _ipc.Pong):
            self.last_pong = trio.current_time()
            delay = time.monotonic() - msg.timestamp
            if delay > HIGH_PING:
                logger.warning(
                    "job process %d answered a ping after %.2f s",
                    self.proc.pid,
                    delay,
                    extra=self.extra,
                )
        elif isinstance(msg, _ipc.LogRecord):
            fields = dict(msg.fields)
            for k, v in self.extra.items():
                fields.setdefault(k, v)
            record = logging.makeLogRecord(fields)
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):  # as if it was logged here
                target.handle(record)
        elif isinstance(msg, _ipc.ShuttingDown):
            self.shutdown_started(msg.at or None)
        elif isinstance(msg, _ipc.Started):
            self.seen.started = True
        elif isinstance(msg, _ipc.Reported):
            self.seen.reported = msg.outcome
            self.report()
        elif isinstance(msg, _ipc.Done):
            self.seen.done = msg.outcome
            self.report()

    def report(self) -> None:
        """Forward the job's report to the worker at once; tell the job once it is sent."""
        if self.control.reported is not None:
            return
        outcome = decide_outcome(self.seen, memory_limit_mb=self.server.job_memory_limit_mb)
        assert outcome is not None
        self.control.report(outcome)
        assert self.nursery is not None
        self.nursery.start_soon(self.confirm_delivery)

    async def confirm_delivery(self) -> None:
        await self.control.wait_delivered()
        await self.send(_ipc.Delivered())

    def on_control(self) -> None:
        if self.finished:  # JobControl keeps its listeners; this one has nothing left to do
            return
        assert self.nursery is not None
        control = self.control
        if control.shutdown_requested:
            self.shutdown_started()
            self.nursery.start_soon(
                self.send, _ipc.Shutdown(control.shutdown_reason or "shutdown requested")
            )
        if control.draining:
            self.nursery.start_soon(self.send, _ipc.Drain())

    # --- liveness and memory -------------------------------------------------------

    async def pinger(self) -> None:
        while True:
            await self.send(_ipc.Ping(time.monotonic()))
            await trio.sleep(PING_INTERVAL)
            if trio.current_time() - self.last_pong > PING_TIMEOUT:
                await self.kill(f"job process unresponsive for {PING_TIMEOUT:g} s")
                return

    async def memory(self) -> None:
        server, proc = self.server, self.proc
        warn_mb = server.job_memory_warn_mb
        limit_mb = server.job_memory_limit_mb
        if not warn_mb and not limit_mb:
            return
        try:
            p = psutil.Process(proc.pid)
        except psutil.Error:
            return
        last_warn = -math.inf
        while True:
            try:
                # off the event loop: a full sample (PSS) reads /proc/PID/smaps,
                # milliseconds per call, per job, every second
                mb = await trio.to_thread.run_sync(_used_mb, p, abandon_on_cancel=True)
            except psutil.Error:
                return
            if limit_mb and mb > limit_mb and not self.seen.memory_exceeded:
                self.seen.memory_exceeded = True
                logger.error(
                    "job process %d uses %.0f MB, over job_memory_limit_mb=%g; "
                    "shutting the job down",
                    proc.pid,
                    mb,
                    limit_mb,
                    extra=self.extra,
                )
                self.shutdown_started()
                await self.send(_ipc.Shutdown("memory limit exceeded"))
            elif warn_mb and mb > warn_mb and trio.current_time() - last_warn > MEMORY_WARN_EVERY:
                last_warn = trio.current_time()
                logger.warning(
                    "job process %d uses %.0f MB (job_memory_warn_mb=%g)",
                    proc.pid,
                    mb,
                    warn_mb,
                    extra=self.extra,
                )
            await trio.sleep(MEMORY_INTERVAL)

    async def kill(self, reason: str) -> None:
        proc = self.proc
        if self.seen.kill_reason is None:
            self.seen.kill_reason = reason
        dump = ""
        if proc.zygote.is_running(proc.pid):
            proc.zygote.signal(proc.pid, signal.SIGUSR1, group=False)
            await trio.sleep(DUMP_GRACE)
            with contextlib.suppress(OSError), open(proc.dump_path) as f:  # noqa: ASYNC230 - a small local file
                dump = f.read().strip()
        logger.error(
            "killing job process %d: %s%s",
            proc.pid,
            reason,
            f"\nstack at the time:\n{dump}" if dump else "",
            extra=self.extra,
        )
        proc.zygote.signal(proc.pid)

    # --- the whole -----------------------------------------------------------------

    async def run(self) -> Observed:
        proc, control = self.proc, self.control
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.reader)
            nursery.start_soon(self.pinger)
            nursery.start_soon(self.memory)
            nursery.start_soon(self.enforce_deadline)
            await self.send(
                _ipc.StartJob(
                    info=self.info,
                    shutdown_process_timeout=self.budget,
                    delete_room_on_close=self.session.delete_room_on_close,
                    log_levels=_log_levels(),
                )
            )
            control.subscribe(self.on_control)
            self.on_control()
            self.seen.exit_code = await proc.zygote.wait_exit(proc.pid)
            # the zygote may say "exited" before we read the last frames (the outcome)
            with trio.move_on_after(DRAIN_AFTER_EXIT):
                await self.read_all.wait()
            self.finished = True
            nursery.cancel_scope.cancel()
        return self.seen


def _used_mb(p: psutil.Process) -> float:
    info = p.memory_full_info()
    used = getattr(info, "pss", 0) or info.rss
    return float(used) / (1024 * 1024)


class ProcessExecutor:
    def __init__(self, server: AgentServer) -> None:
        self._server = server
        self._zygote = Zygote()
        self._zygote_changed = trio.Event()
        #: Why the last zygote could not be started (while that lasts).
        self._zygote_error: str | None = None
        self._spec: _zygote.LoadSpec | None = None
        self._dump_dir = ""
        self._closing = False
        self._idle: list[JobProc] = []
        self._idle_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._target = 0
        self._backoff = 0.0
        self.prewarm_failures: list[tuple[int, str]] = []

    def idle_count(self) -> int:
        """Prewarmed job processes waiting for a job (for the worker's metrics)."""
        return len(self._idle)

    # --- pool ----------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the zygote and the pool.

        Raises:
            PoolUnavailable: job processes cannot be had (the entrypoint is not
                importable by name, or the agent's module fails to load).
        """
        server = self._server
        session = server.session
        try:
            entrypoint = _zygote.ref_for(session.entrypoint)
            setup_fnc = _zygote.ref_for(server.setup_fnc) if server.setup_fnc else None
        except ValueError as exc:
            raise PoolUnavailable(str(exc)) from None
        self._dump_dir = tempfile.mkdtemp(prefix="trio-agents-")
        self._spec = _zygote.LoadSpec(
            sys_path=list(sys.path),
            cwd=os.getcwd(),
            entrypoint=entrypoint,
            setup_fnc=setup_fnc,
            init_timeout=server.initialize_process_timeout,
            log_level=logging.getLogger().getEffectiveLevel(),
            dump_dir=self._dump_dir,
        )
        self._nursery = nursery
        try:
            await self._zygote.start(nursery, self._spec)
        except PoolUnavailable as exc:
            if exc.detail:
                logger.error("%s\n%s", exc, exc.detail.rstrip())
            raise
        if server.num_idle_processes is not None:
            self._target = server.num_idle_processes
        else:
            self._target = 0 if server.devmode else min(os.cpu_count() or 1, 4)
        nursery.start_soon(self._run_pool)

    async def _run_pool(self) -> None:
        """Keep the pool warm; when the zygote dies, start another (with backoff)."""
        delay = 0.0
        while True:
            zygote = self._zygote
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_warm, zygote)
                await zygote.gone.wait()
                nursery.cancel_scope.cancel()
            if self._closing:
                return
            self._drop_idle()
            with trio.CancelScope(shield=True):
                await zygote.aclose()  # reap it (bounded)
            # a zygote that dies soon after it started is not restarted in a tight loop
            lived = trio.current_time() - started
            delay = 0.0 if lived > 30 else min(max(delay * 2, 0.5), MAX_BACKOFF)
            while not self._closing:
                logger.warning("starting a new job process zygote in %.1f s", delay)
                await trio.sleep(delay)
                new = Zygote()
                try:
                    assert self._nursery is not None
                    assert self._spec is not None
                    await new.start(self._nursery, self._spec)
                except PoolUnavailable as exc:
                    self._zygote_error = str(exc)
                    logger.error("%s", exc)
                    delay = min(max(delay * 2, 0.5), MAX_BACKOFF)
                    continue
                self._zygote = new
                self._zygote_error = None
                self._zygote_changed.set()
                self._zygote_changed = trio.Event()
                break

    def _drop_idle(self) -> None:
        for proc in self._idle:
            proc.watch.cancel()
            self._discard(proc)
        self._idle.clear()
        self._poke()

    async def _live_zygote(self) -> Zygote:
        """The running zygote, once there is one again if it died."""
        while not self._zygote.alive:
            if self._closing:
                raise PoolUnavailable("the worker is closing")
            await self._zygote_changed.wait()
        return self._zygote

    async def _keep_warm(self, zygote: Zygote) -> None:
        """Keep ``num_idle_processes`` ready, replacing dead ones, with backoff on failure."""
        while True:
            if len(self._idle) < self._target:
                try:
                    proc = await self._spawn(zygote)
                except PoolUnavailable as exc:
                    self._backoff = min(max(self._backoff * 2, 0.5), MAX_BACKOFF)
                    logger.error(
                        "prewarming a job process failed: %s (retry in %.1f s)", exc, self._backoff
                    )
                    await trio.sleep(self._backoff)
                    continue
                self._backoff = 0.0
                self._idle.append(proc)
                assert self._nursery is not None
                self._nursery.start_soon(self._watch_idle, proc)
                self._poke()
                continue
            await self._idle_changed.wait()

    def _poke(self) -> None:
        self._idle_changed.set()
        self._idle_changed = trio.Event()

    async def _watch_idle(self, proc: JobProc) -> None:
        """Replace an idle process that dies (its scope is cancelled when it is taken)."""
        with proc.watch:
            code = await proc.zygote.wait_exit(proc.pid)
            if proc in self._idle:
                self._idle.remove(proc)
                logger.warning(
                    "idle job process %d died (%s); replacing it", proc.pid, _exit_reason(code)
                )
                self._discard(proc)
                self._poke()

    def _discard(self, proc: JobProc) -> None:
        """Let go of a process that will not run a job (dead, or about to be killed)."""
        with contextlib.suppress(OSError):
            os.unlink(proc.dump_path)
        proc.stream.close()

    def _dump_path(self, pid: int) -> str:
        return _zygote.dump_path_for(self._dump_dir, pid)

    async def _spawn(self, zygote: Zygote | None = None) -> JobProc:
        """Fork a process and wait for its setup, bounded by initialize_process_timeout."""
        timeout = self._server.initialize_process_timeout
        if zygote is None:
            zygote = await self._live_zygote()
        pid, stream = await zygote.fork()
        try:
            with trio.move_on_after(timeout + 1.0) as scope:
                try:
                    msg = await stream.receive()
                except (EOFError, _ipc.FrameError, trio.BrokenResourceError) as exc:
                    msg = _ipc.InitFailed(pid, f"process ended during setup ({exc!r})")
        except BaseException:
            # cancelled while it was setting up (the worker is closing): it is nobody's
            self._forget(zygote, pid, stream)
            raise
        if scope.cancelled_caught:
            msg = _ipc.InitFailed(pid, f"setup did not finish within {timeout:g} s")
        if isinstance(msg, _ipc.Ready):
            return JobProc(
                pid=pid,
                stream=stream,
                zygote=zygote,
                dump_path=msg.dump_path,
                ready_at=time.monotonic(),
            )
        reason = msg.error if isinstance(msg, _ipc.InitFailed) else f"unexpected {msg!r}"
        self.prewarm_failures.append((pid, reason))
        logger.error("job process %d failed to start: %s", pid, reason)
        self._forget(zygote, pid, stream)
        raise PoolUnavailable(f"job process {pid} failed to start: {reason}")

    def _forget(self, zygote: Zygote, pid: int, stream: _ipc.FramedStream) -> None:
        """Kill a process that will never run a job, and forget it once reaped."""
        zygote.signal(pid)
        stream.close()
        with contextlib.suppress(OSError):
            os.unlink(self._dump_path(pid))
        if self._nursery is not None:
            self._nursery.start_soon(zygote.wait_exit, pid)  # claims its exit report

    async def _acquire(self) -> JobProc:
        while self._idle:
            proc = self._idle.pop(0)
            proc.watch.cancel()
            self._poke()
            if proc.zygote.is_running(proc.pid):
                return proc
            # it died a moment ago and the zygote has not said so yet: not that one
            logger.warning("idle job process %d died; replacing it", proc.pid)
            self._discard(proc)
            assert self._nursery is not None
            self._nursery.start_soon(proc.zygote.wait_exit, proc.pid)  # forget it once reaped
        return await self._spawn()

    # --- one job -------------------------------------------------------------------------

    async def run(
        self, info: RunningJobInfo, control: JobControl, session: RtcSession, *, _attempt: int = 1
    ) -> JobOutcome:
        server = self._server
        job_id = info.job.id
        if _attempt > MAX_START_ATTEMPTS:
            reason = (
                f"{MAX_START_ATTEMPTS} job processes in a row died before they could take the job"
            )
            logger.error("job %s could not start: %s", job_id, reason)
            return JobOutcome(kind=OutcomeKind.CRASHED, reason="no job process", error=reason)
        try:
            with trio.fail_after(server.initialize_process_timeout + 2.0):
                proc = await self._acquire()
        except (PoolUnavailable, trio.TooSlowError) as exc:
            reason = str(exc) or self._zygote_error or "no job process became ready in time"
            logger.error("job %s could not start: %s", job_id, reason)
            return JobOutcome(kind=OutcomeKind.CRASHED, reason="no job process", error=reason)
        outcome = await self._supervise(proc, info, control, session)
        if outcome is not None:
            return outcome
        # the process died before it took the job (killed while idle, a moment
        # before the zygote said so): the job never started, so it can go to another
        logger.warning(
            "job process %d died before it took job %s; starting another", proc.pid, job_id
        )
        return await self.run(info, control, session, _attempt=_attempt + 1)

    async def _supervise(
        self, proc: JobProc, info: RunningJobInfo, control: JobControl, session: RtcSession
    ) -> JobOutcome | None:
        """Run the job in ``proc``; None if the process died before it took the job."""
        supervisor = _Supervisor(self._server, proc, info, control, session)
        seen = await supervisor.run()
        # (what it left in its process group was killed before it was reaped)
        self._discard(proc)
        return decide_outcome(seen, memory_limit_mb=self._server.job_memory_limit_mb)

    async def aclose(self) -> None:
        self._closing = True
        self._zygote_changed.set()  # whoever waits for a new zygote: there will be none
        for proc in self._idle:
            proc.zygote.signal(proc.pid)
            self._discard(proc)
        self._idle.clear()
        await self._zygote.aclose()
        if self._dump_dir:
            # the stack-dump files of processes killed before they could remove theirs
            shutil.rmtree(self._dump_dir, ignore_errors=True)


__all__ = ["JobExecutorType", "ProcessExecutor"]
