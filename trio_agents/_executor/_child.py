"""The main function of a job process (forked from the zygote).

One process runs one job: it runs ``setup_fnc`` (prewarm), says ``Ready``,
waits for ``StartJob``, runs the job tree with its own ``trio.run``, sends
``Done(outcome)``, ends the subprocesses it started, and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import psutil
import trio

from .._job._context import JobProcess, run_job
from .._job._control import JobControl
from .._types import JobExecutorType, JobOutcome
from . import _ipc
from ._inline import run_setup
from ._zygote import dump_path_for, ignore_signal

logger = logging.getLogger("trio_agents.executor")

PR_SET_PDEATHSIG = 1
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


#: Longest string field of a log record sent to the worker (the rest is cut).
MAX_LOG_TEXT = _ipc.MAX_FRAME // 16


def _too_big(fields: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for a record too big for one frame: its place and level, no payload."""
    keep = ("name", "levelno", "levelname", "created", "msecs", "pathname", "lineno")
    small = {k: fields[k] for k in keep if k in fields}
    small.update(msg="[a log record too big to forward was dropped]", args=None)
    return small


class _IPCLogHandler(logging.Handler):
    """Hands every record to the trio task that forwards it to the worker."""

    def __init__(self, submit: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._submit = submit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
            fields.update(
                name=record.name,
                levelno=record.levelno,
                levelname=record.levelname,
                msg=record.getMessage(),
                args=None,
                created=record.created,
                msecs=record.msecs,
                pathname=record.pathname,
                lineno=record.lineno,
                funcName=record.funcName,
                process=record.process,
                processName=record.processName,
                threadName=record.threadName,
                exc_text=self.format_exc(record),
            )
            for k, v in list(fields.items()):
                if not isinstance(v, str | int | float | bool | type(None)):
                    v = fields[k] = repr(v)
                if isinstance(v, str) and len(v) > MAX_LOG_TEXT:
                    # one IPC frame carries one record: a huge message is cut, not fatal
                    cut = len(v) - MAX_LOG_TEXT
                    fields[k] = f"{v[:MAX_LOG_TEXT]} ... [truncated {cut} characters]"
            self._submit(fields)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)

    @staticmethod
    def format_exc(record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return logging.Formatter().formatException(record.exc_info)
        return record.exc_text


#: How long the job's subprocesses get between SIGTERM and SIGKILL (at most; the
#: job's deadline comes first).
SUBPROCESS_GRACE = 0.5


def _end_subprocesses(control: JobControl, budget: float) -> None:
    """Terminate, then kill, every process this job process started.

    The grace reads the job's deadline: none left, no grace.
    """
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover
        return
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.terminate()
    grace = SUBPROCESS_GRACE
    if control.shutdown_started_at is not None:
        left = control.shutdown_started_at + budget - time.monotonic()
        grace = max(0.0, min(grace, left))
    _, alive = psutil.wait_procs(children, timeout=grace)
    for c in alive:
        with contextlib.suppress(psutil.Error):
            c.kill()


async def _main(
    fd: int,
    entrypoint: Any,
    setup_fnc: Any,
    init_timeout: float,
    log_level: int,
    dump_path: str,
) -> int:
    sock = trio.socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM)
    os.close(fd)
    stream = _ipc.FramedStream(trio.SocketStream(sock))
    pid = os.getpid()
    token = trio.lowlevel.current_trio_token()
    trio_thread = threading.get_ident()
    log_send, log_recv = trio.open_memory_channel[dict[str, Any]](10_000)

    def submit(fields: dict[str, Any]) -> None:
        def put() -> None:
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                log_send.send_nowait(fields)

        if threading.get_ident() == trio_thread:
            put()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(put)

    root = logging.getLogger()
    root.handlers[:] = [_IPCLogHandler(submit)]
    root.setLevel(log_level)

    control = JobControl()
    start: list[_ipc.StartJob] = []
    got_start = trio.Event()

    async def reader() -> None:
        try:
            while True:
                msg = await stream.receive()
                if isinstance(msg, _ipc.Ping):
                    await stream.send(_ipc.Pong(msg.timestamp))
                elif isinstance(msg, _ipc.StartJob):
                    apply_log_levels(msg.log_levels)
                    start.append(msg)
                    await stream.send(_ipc.Started())
                    got_start.set()
                elif isinstance(msg, _ipc.Shutdown):
                    control.request_shutdown(msg.reason)
                elif isinstance(msg, _ipc.Drain):
                    control.notify_draining()
                elif isinstance(msg, _ipc.Delivered):
                    control.mark_delivered()
        except (EOFError, _ipc.FrameError, trio.BrokenResourceError, trio.ClosedResourceError):
            got_start.set()
            control.request_shutdown("the worker went away")

    log_pump_done = trio.Event()

    async def log_pump() -> None:
        try:
            async for fields in log_recv:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    try:
                        frame = _ipc.LogRecord(fields)
                        await stream.send(frame)
                    except ValueError:  # over the frame limit even so (many big fields)
                        await stream.send(_ipc.LogRecord(_too_big(fields)))
        finally:
            log_pump_done.set()

    proc = JobProcess(executor_type=JobExecutorType.PROCESS, pid=pid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(log_pump)
        try:
            await run_setup(setup_fnc, proc, init_timeout)
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled):
                raise
            reason = (
                "timed out"
                if isinstance(exc, trio.TooSlowError)
                else f"{type(exc).__name__}: {exc}"
            )
            logger.error("setup_fnc failed in process %d: %s", pid, reason)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send(_ipc.InitFailed(pid, reason))
            nursery.cancel_scope.cancel()
            return 1
        try:
            await stream.send(_ipc.Ready(pid, dump_path))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()  # the worker went away while we set up
            return 0
        await got_start.wait()  # set by StartJob, or when the worker goes away
        if not start:
            nursery.cancel_scope.cancel()
            return 0
        msg = start[0]

        def tell(news: object) -> None:
            # at once, from the job's own call (its next code may block this
            # thread): the worker's kill clock and its status must not wait
            # for a free event loop
            if stream.send_nowait(news):
                nursery.start_soon(_flush_quietly, stream)
            else:
                nursery.start_soon(_send_quietly, stream, news)

        control.on_shutdown_started(lambda reason, at: tell(_ipc.ShuttingDown(reason, at)))
        # the worker forwards it to the server and answers Delivered: only
        # then does the job leave its room
        control.on_report(lambda outcome: tell(_ipc.Reported(_fit(outcome))))
        try:
            outcome = await run_job(
                msg.info,
                entrypoint,
                control,
                proc=proc,
                shutdown_process_timeout=msg.shutdown_process_timeout,
                delete_room_on_close=msg.delete_room_on_close,
            )
        except BaseException as exc:
            # SystemExit/KeyboardInterrupt of job code: the job ended by it
            # (hooks ran, outcome computed); report that, not an exit code
            if isinstance(exc, trio.Cancelled) or control.outcome is None:
                raise
            logger.error("job code raised %s; the job process ends", type(exc).__name__)
            outcome = control.outcome
        _end_subprocesses(control, msg.shutdown_process_timeout)
        await _send_quietly(stream, _ipc.Done(_fit(outcome)))
        # let queued log records out, briefly
        log_send.close()
        with trio.move_on_after(0.5):
            await log_pump_done.wait()
        nursery.cancel_scope.cancel()
    return 0


def apply_log_levels(levels: dict[str, int]) -> None:
    """Take on the worker's logger levels (``""`` is the root logger).

    The zygote knew the levels of when it started; the worker may have
    changed them since (``run_app`` quiets noisy libraries, an application
    reconfigures).  What the worker would drop is better not sent at all.
    """
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def _cut(text: str) -> str:
    if len(text) <= MAX_LOG_TEXT:
        return text
    return f"{text[:MAX_LOG_TEXT]} ... [truncated {len(text) - MAX_LOG_TEXT} characters]"


def _fit(outcome: JobOutcome) -> JobOutcome:
    """The outcome with its texts cut to fit one IPC frame (an error can be huge)."""
    return attrs.evolve(
        outcome,
        reason=_cut(outcome.reason),
        error=_cut(outcome.error),
        teardown_errors=tuple(_cut(e) for e in outcome.teardown_errors[:16]),
    )


async def _send_quietly(stream: _ipc.FramedStream, msg: object) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send(msg)


async def _flush_quietly(stream: _ipc.FramedStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.flush()


def job_process_main(
    fd: int,
    entrypoint: Any,
    setup_fnc: Any,
    init_timeout: float,
    log_level: int,
    dump_dir: str = "",
) -> None:
    """Run in a freshly forked job process; never returns."""
    code = 1
    try:
        set_parent_death_signal()
        os.setpgid(0, 0)  # its own group: the worker can end its subprocesses too
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker handles Ctrl-C
        # SIGTERM sent to every process of the worker (systemd stops a service
        # so) is for the worker, which drains; the job ends when the worker says
        signal.signal(signal.SIGTERM, ignore_signal)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if dump_dir:
            dump_path = dump_path_for(dump_dir, os.getpid())
            dump_file = open(dump_path, "w")  # noqa: SIM115 - open for the life of the process
        else:
            fd_dump, dump_path = tempfile.mkstemp(
                prefix=f"trio-agents-stack-{os.getpid()}-", suffix=".txt"
            )
            dump_file = os.fdopen(fd_dump, "w")
        faulthandler.register(signal.SIGUSR1, file=dump_file, all_threads=True)
        code = trio.run(_main, fd, entrypoint, setup_fnc, init_timeout, log_level, dump_path)
        with contextlib.suppress(OSError):
            os.unlink(dump_path)
    except BaseException:  # pragma: no cover - report anything, then exit
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)
