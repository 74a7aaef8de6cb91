"""The real ``livekit-server`` as a test peer, isolated in a network namespace.

WebRTC media does not flow over loopback, and test traffic must never touch the
host's own interfaces.  So each test session makes its own network namespace
with a veth pair on a private /24 that it picks (and checks is unused), runs the
real server inside it, and removes it all afterwards:

```
root namespace (pytest, workers that only signal)      namespace trio-agents-<pid>-<n>
  veth ta<n>h  10.A.B.1/24  <------------------------>  veth ta<n>n  10.A.B.2/24
                                                        lo up
                                                        livekit-server :7880 (signal, Twirp),
                                                        :7881/tcp and UDP 50000-50199 (media)
```

Processes that join rooms over WebRTC (SDK participants, job processes) run
inside the namespace through :meth:`Netns.cmd`; they reach the server at the
same URL.  The namespace has no default route: nothing inside can reach
anything but the test's own veth peer.

Everything here is synchronous (subprocess + sockets) so that it can serve
pytest fixtures of any scope, trio tests included.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "livekit-server.sh"
NS_PREFIX = "trio-agents-"
API_KEY = "devkey"
#: livekit-server refuses secrets shorter than 32 characters outside --dev.
API_SECRET = "trio-agents-test-secret-0123456789abcdef"
SIGNAL_PORT = 7880


class Unavailable(Exception):
    """The real server cannot run here; the message says why (one line)."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """Why real-server tests cannot run on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "real-server tests need root to create a network namespace (ip netns add)"
    if shutil.which("ip") is None:
        return "real-server tests need iproute2 ('ip') for a network namespace"
    cached = list((ROOT / ".cache" / "livekit-server").glob("*/livekit-server"))
    if shutil.which("go") is None and not cached:
        return (
            "real-server tests need Go >= 1.26 to build livekit-server (scripts/livekit-server.sh)"
        )
    return None


def server_binary() -> Path:
    """Build (first time) or reuse the pinned livekit-server; its path."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise Unavailable(f"building livekit-server failed: {proc.stderr.strip()[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    """This project's test namespaces that exist now."""
    out = _run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(NS_PREFIX)]


def sweep_stale() -> list[str]:
    """Delete namespaces left by test runs whose process is gone (killed with SIGKILL)."""
    removed = []
    for name in namespaces():
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\d+", name)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


def _ns_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _delete_namespace(name: str) -> None:
    # Every process still inside dies first; a namespace with live processes
    # would outlive `ip netns del` (only its name goes away).
    for _ in range(50):
        pids = _ns_pids(name)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _run(["ip", "netns", "del", name], check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    nets = []
    for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out):
        nets.append(ipaddress.ip_interface(m.group(1)).network)
    routes = _run(["ip", "-4", "route", "show"], check=False).stdout
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(first, strict=False))
    return nets


_counter = 0


@attrs.define
class Netns:
    """A network namespace with a veth pair to the root namespace."""

    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    @classmethod
    def create(cls) -> Netns:
        global _counter
        _counter += 1
        tag = f"{os.getpid() % 100000}{_counter}"[-9:]
        name = f"{NS_PREFIX}{os.getpid()}-{_counter}"
        used = _used_networks()
        rng = random.Random()
        for _ in range(200):
            net = ipaddress.ip_network(f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}.0/24")
            if not any(net.overlaps(u) for u in used):
                break
        else:  # pragma: no cover - a host using all of 10.200/13
            raise Unavailable("no free private /24 for the test namespace")
        hosts = list(net.hosts())
        ns = cls(
            name=name,
            host_if=f"ta{tag}h",
            ns_if=f"ta{tag}n",
            host_addr=str(hosts[0]),
            ns_addr=str(hosts[1]),
        )
        try:
            ns._setup()
        except (subprocess.CalledProcessError, OSError) as exc:
            ns.delete()
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
            raise Unavailable(f"cannot create a network namespace: {detail}") from None
        return ns

    def _setup(self) -> None:
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        _run(["ip", "link", "set", self.ns_if, "netns", self.name])
        _run(["ip", "addr", "add", f"{self.host_addr}/24", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        _run(["ip", "-n", self.name, "addr", "add", f"{self.ns_addr}/24", "dev", self.ns_if])
        _run(["ip", "-n", self.name, "link", "set", self.ns_if, "up"])

    def cmd(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        return _ns_pids(self.name)

    def delete(self) -> None:
        """Kill what runs inside, delete the namespace (its veth end goes with it)."""
        _delete_namespace(self.name)
        # The root end of a veth pair dies with its peer; remove it if setup stopped halfway.
        _run(["ip", "link", "del", self.host_if], check=False)


@attrs.define
class ServerProcess:
    """One ``livekit-server`` running in a namespace."""

    netns: Netns
    binary: Path
    workdir: Path
    departure_timeout: int = 1
    empty_timeout: int = 5
    extra_config: str = ""
    port: int = SIGNAL_PORT
    _proc: subprocess.Popen[bytes] | None = None
    _log: object = None
    starts: int = 0

    @property
    def url(self) -> str:
        """The signalling URL (ws://), reachable from the root namespace and from inside."""
        return f"ws://{self.netns.ns_addr}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.netns.ns_addr}:{self.port}"

    @property
    def api_key(self) -> str:
        return API_KEY

    @property
    def api_secret(self) -> str:
        return API_SECRET

    @property
    def log_path(self) -> Path:
        return self.workdir / f"livekit-server-{self.port}.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"livekit-{self.port}.yaml"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def config(self) -> str:
        # several nodes may share a namespace: each gets its own media ports
        udp = 50000 + (self.port - SIGNAL_PORT) * 20
        return (
            f"port: {self.port}\n"
            "bind_addresses:\n"
            f"  - {self.netns.ns_addr}\n"
            "rtc:\n"
            f"  tcp_port: {self.port + 1}\n"
            f"  port_range_start: {udp}\n"
            f"  port_range_end: {udp + 199}\n"
            "  use_external_ip: false\n"
            f"  node_ip: {self.netns.ns_addr}\n"
            "keys:\n"
            f"  {API_KEY}: {API_SECRET}\n"
            "room:\n"
            f"  departure_timeout: {self.departure_timeout}\n"
            f"  empty_timeout: {self.empty_timeout}\n"
            "logging:\n"
            "  level: debug\n" + self.extra_config
        )

    def start(self, *, timeout: float = 60.0) -> None:
        assert self._proc is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        log.write(f"---- start {self.starts + 1} ----\n".encode())
        log.flush()
        self._log = log
        self._proc = subprocess.Popen(
            self.netns.cmd([str(self.binary), "--config", str(self.config_path)]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise Unavailable(
                    f"livekit-server exited with {self._proc.returncode} at start: "
                    f"{self.log_tail(20)}"
                )
            try:
                with urllib.request.urlopen(self.http_url + "/", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise Unavailable(f"livekit-server not ready after {timeout} s: {self.log_tail(20)}")

    def stop(self, *, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaped.

        (livekit-server drains on SIGTERM and rarely exits within 10 s; a test
        peer has nothing to drain for.)
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log, self._log = self._log, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def kill(self) -> None:
        """SIGKILL (a crash), reaped."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)
        log, self._log = self._log, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, *, timeout: float = 20.0, since: int = 0) -> re.Match[str]:
        """Wait until the server log (from byte ``since``) matches ``pattern``."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text()[since:])
            if m:
                return m
            if time.monotonic() > end:
                raise AssertionError(f"{pattern!r} not in the server log after {timeout} s")
            time.sleep(0.05)


@contextlib.contextmanager
def open_real_server(workdir: Path, **options: object) -> Iterator[ServerProcess]:
    """A namespace and a started server in it; both gone on exit, whatever happened."""
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    sweep_stale()
    binary = server_binary()
    ns = Netns.create()
    server = ServerProcess(netns=ns, binary=binary, workdir=workdir, **options)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
        ns.delete()


@attrs.define
class RedisProcess:
    """Debian's ``redis-server`` in a namespace: the shared state of a LiveKit cluster."""

    netns: Netns
    workdir: Path
    port: int = 6379
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.netns.ns_addr}:{self.port}"

    def start(self, *, timeout: float = 30.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unavailable("the cluster tests need redis-server (Debian package redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        argv = [binary, "--bind", self.netns.ns_addr, "--port", str(self.port)]
        argv += ["--protected-mode", "no", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.workdir)]
        argv += ["--logfile", str(log)]
        self._proc = subprocess.Popen(self.netns.cmd(argv), stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise Unavailable(f"redis-server exited with {self._proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.netns.ns_addr, self.port), timeout=1) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise Unavailable(f"redis-server not ready after {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@attrs.define
class Cluster:
    """Several ``livekit-server`` nodes sharing one Redis, in one namespace."""

    netns: Netns
    redis: RedisProcess
    nodes: list[ServerProcess]


@contextlib.contextmanager
def open_cluster(workdir: Path, *, nodes: int = 2, **options: object) -> Iterator[Cluster]:
    """A namespace with Redis and ``nodes`` servers (ports 7880, 7890, ...); all gone on exit."""
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    if shutil.which("redis-server") is None:
        raise Unavailable("the cluster tests need redis-server (Debian package redis-server)")
    sweep_stale()
    binary = server_binary()
    ns = Netns.create()
    redis = RedisProcess(netns=ns, workdir=workdir)
    servers: list[ServerProcess] = []
    try:
        redis.start()
        for i in range(nodes):
            server = ServerProcess(
                netns=ns,
                binary=binary,
                workdir=workdir,
                port=SIGNAL_PORT + 10 * i,
                extra_config=f"redis:\n  address: {redis.address}\n",
                **options,  # type: ignore[arg-type]
            )
            servers.append(server)
            server.start()
        yield Cluster(netns=ns, redis=redis, nodes=servers)
    finally:
        for server in servers:
            server.stop()
        redis.stop()
        ns.delete()
