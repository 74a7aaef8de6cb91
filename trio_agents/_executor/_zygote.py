"""The zygote: a fork server for job processes.

Started once per worker (``python -m trio_agents._executor._zygote_main FD``), it
imports trio, the library and the user's agent module (without running its
command line), then forks a job process for each request it gets.  Forking a
process that already imported everything takes milliseconds, and the pages
stay shared copy-on-write.  The zygote never starts a trio run or any thread:
a forked child starts its own ``trio.run`` from a clean slate.

Protocol (SOCK_SEQPACKET, one pickled message per packet):
  worker -> zygote: ``LoadSpec`` once, then ``Fork`` with the job socket's fd
  zygote -> worker: ``ZygoteReady``/``ZygoteError``, ``Forked(pid)``, ``Exited(pid, status)``

Signals: the worker decides when jobs end.  SIGTERM and SIGINT sent to the
whole process group or cgroup (Ctrl-C, ``kill -TERM -PGID``, systemd's
``KillMode=control-group``, init shims that forward to the group) must reach
the worker only: the zygote ignores them (its death would take every job
process with it), and so do job processes.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import os
import pickle
import runpy
import selectors
import signal
import socket
import sys
from typing import Any

import attrs

#: True while the zygote imports the user's module: ``run_app`` then does nothing.
LOADING = False
MAIN_NAME = "__trio_agents_main__"


@attrs.frozen
class Ref:
    """Where to find a function: a module name, or a file for ``__main__``."""

    module: str
    qualname: str
    path: str | None = None


@attrs.frozen
class LoadSpec:
    sys_path: list[str]
    cwd: str
    entrypoint: Ref
    setup_fnc: Ref | None
    init_timeout: float
    log_level: int
    preload: tuple[str, ...] = ()
    #: Where job processes put their stack-dump files (the worker removes it at close).
    dump_dir: str = ""


@attrs.frozen
class Fork:
    pass


@attrs.frozen
class ZygoteReady:
    pid: int


@attrs.frozen
class ZygoteError:
    error: str  # one line
    traceback: str = ""


@attrs.frozen
class Forked:
    pid: int


@attrs.frozen
class Exited:
    pid: int
    status: int  # as from os.waitpid: use os.waitstatus_to_exitcode


def ref_for(fn: Any) -> Ref:
    """A ``Ref`` that a fresh process can resolve back to ``fn``.

    Raises:
        ValueError: ``fn`` is not reachable by name (a lambda, a nested function).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"{fn!r} must be a module-level function to run in a job process "
            "(or use JobExecutorType.INLINE/THREAD)"
        )
    path = None
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            # run as ``python -m pkg.agent``: import it by that name, in its
            # package (relative imports work; its ``__main__`` guard stays shut)
            return Ref(module=spec.name, qualname=qualname)
        path = getattr(main, "__file__", None)
        if path is None:
            raise ValueError("the agent's __main__ module has no file; run it as `python agent.py`")
        path = os.path.abspath(path)
    return Ref(module=module, qualname=qualname, path=path)


class NotDefinedError(AttributeError):
    """The agent file, imported as a module, does not define what the worker runs."""


def resolve(ref: Ref) -> Any:
    """Import ``ref``'s module (running a ``__main__`` file under another name)."""
    global LOADING
    LOADING = True
    try:
        if ref.module == "__main__":
            mod = sys.modules.get(MAIN_NAME)
            if mod is None:
                assert ref.path is not None
                namespace = runpy.run_path(ref.path, run_name=MAIN_NAME)
                mod = type(sys)(MAIN_NAME)
                mod.__dict__.update(namespace)
                sys.modules[MAIN_NAME] = mod
        else:
            mod = importlib.import_module(ref.module)
    finally:
        LOADING = False
    obj: Any = mod
    for part in ref.qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if ref.module != "__main__":
                raise
            raise NotDefinedError(
                f"{ref.qualname!r} is not defined when {ref.path} is imported "
                "(job processes import the agent file as a module: define it at module "
                "level, not under `if __name__ == '__main__':`)"
            ) from None
    # unwrap what a decorator may have returned
    return obj


def _send(sock: socket.socket, msg: object) -> None:
    sock.send(pickle.dumps(msg))


def dump_path_for(dump_dir: str, pid: int) -> str:
    """The stack-dump file of job process ``pid`` (the worker knows it without asking)."""
    return os.path.join(dump_dir, f"stack-{pid}.txt")


def ignore_signal(signum: int, frame: object) -> None:
    """A handler that does nothing: unlike SIG_IGN, programs exec'd later get the default back."""


def _reap_one() -> tuple[int, int] | None:
    """Reap one exited child: ``(pid, status)``, or None if none has exited.

    The child's process group is killed first, while the child is still a
    zombie: its pid, which is the group's id, cannot be reused until it is
    reaped, so the signal can only reach what the job left behind.
    """
    if not hasattr(os, "waitid"):  # pragma: no cover - not Linux
        pid, status = os.waitpid(-1, os.WNOHANG)
        return (pid, status) if pid else None
    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or not info.si_pid:
        return None
    with contextlib.suppress(OSError):  # ESRCH: it never made its group, or left nothing
        os.killpg(info.si_pid, signal.SIGKILL)
    return os.waitpid(info.si_pid, 0)


class ForkUnsafeError(RuntimeError):
    """The zygote cannot fork job processes safely (LiveKit's native client runs in it)."""


def livekit_native_threads() -> list[str]:
    """Names of the threads of LiveKit's native client in this process (Linux; else [])."""
    names: list[str] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith(("tokio-rt", "livekit")):
            names.append(name)
    return sorted(set(names))


def main() -> None:  # pragma: no cover - runs in its own process; tested end to end
    from ._child import job_process_main

    fd = int(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, ignore_signal)
    # No PR_SET_PDEATHSIG here: it fires when the parent *thread* exits, and
    # trio starts us from one of its worker threads, which it retires after
    # 10 idle seconds. The worker's death shows as end-of-file on our socket
    # instead (the select loop below exits on it), and job processes, whose
    # parent is our only thread, do use the death signal.
    if os.getppid() == 1:
        sys.exit(1)
    sock = socket.socket(fileno=fd)
    spec = pickle.loads(sock.recv(1 << 20))
    assert isinstance(spec, LoadSpec)
    sys.path[:] = spec.sys_path
    os.chdir(spec.cwd)
    try:
        # the heavy imports every job needs, done once here
        importlib.import_module("trio_agents._job._context")
        importlib.import_module("trio_agents.api")
        # the SDK's Python side (about 0.1 s); importing it starts nothing
        # native (checked below): its native client starts in the job process
        importlib.import_module("livekit.rtc")
        for name in spec.preload:
            importlib.import_module(name)
        entrypoint = resolve(spec.entrypoint)
        setup_fnc = resolve(spec.setup_fnc) if spec.setup_fnc else None
        native = livekit_native_threads()
        if native:
            raise ForkUnsafeError(
                "the agent module started LiveKit's native client (livekit.rtc) when it "
                f"was imported (threads: {', '.join(native)}); job processes are forked "
                "from the imported module and could not use it: create livekit.rtc objects "
                "in the entrypoint or in setup_fnc (prewarm), which run in the job process"
            )
    except (NotDefinedError, ForkUnsafeError) as exc:
        _send(sock, ZygoteError(str(exc)))  # the message says it all
        sys.exit(1)
    except BaseException as exc:  # from the agent's module: its traceback helps
        import traceback

        summary = " ".join(f"{type(exc).__name__}: {exc}".split())
        _send(sock, ZygoteError(summary, traceback.format_exc()))
        sys.exit(1)
    _send(sock, ZygoteReady(os.getpid()))

    # SIGCHLD -> self-pipe, so one select loop sees both requests and exits
    rpipe, wpipe = os.pipe()
    os.set_blocking(wpipe, False)
    os.set_blocking(rpipe, False)
    signal.set_wakeup_fd(wpipe)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(rpipe, selectors.EVENT_READ)

    def reap() -> None:
        while True:
            try:
                reaped = _reap_one()
            except ChildProcessError:
                return
            if reaped is None:
                return
            pid, status = reaped
            try:
                _send(sock, Exited(pid, status))
            except OSError:
                sys.exit(0)  # the worker went away

    while True:
        for key, _ in sel.select():
            if key.fd == rpipe:
                try:
                    while os.read(rpipe, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
                continue
            fds = array.array("i")
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(fds.itemsize)
                )
            except OSError:  # ECONNRESET: the worker closed with our reports unread
                data = b""
            if not data:
                sys.exit(0)  # the worker went away; job processes die with us (PDEATHSIG)
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            msg = pickle.loads(data)
            if not isinstance(msg, Fork) or not fds:
                continue
            job_fd = fds[0]
            pid = os.fork()
            if pid == 0:
                # the job process
                signal.set_wakeup_fd(-1)
                sel.close()
                os.close(rpipe)
                os.close(wpipe)
                sock.close()
                job_process_main(
                    job_fd, entrypoint, setup_fnc, spec.init_timeout, spec.log_level, spec.dump_dir
                )
            os.close(job_fd)
            try:
                _send(sock, Forked(pid))
            except OSError:
                sys.exit(0)
            reap()
