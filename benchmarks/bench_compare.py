"""trio-agents and the official livekit-agents worker, side by side.

    python benchmarks/bench_compare.py [--jobs 30] [--idle 2] [--cold-runs 3]

Both workers run the same agent (``compare_agent.py``: the entrypoint records
``time.time()`` in the file its job metadata names, then shuts the job down),
each through its framework's own ``start`` command, in its own subprocess (and
session), with the PROCESS executor and the same number of prewarmed idle
processes, against the same stand-in server (``trio_agents.testing``), which
runs in this process on 127.0.0.1.  Nothing leaves the loopback interface.

Measured, for each framework:

* cold start: process launched -> registered at the server, and -> as many
  job processes as ``--idle`` exist (``--cold-runs`` launches, alternating
  which framework goes first, one worker at a time);
* idle memory, once both pools are up and the workers quiet: PSS, USS and RSS
  of each idle job process (psutil ``memory_full_info``), of the helper
  processes (zygote; forkserver and resource tracker) and of the worker, and
  the PSS of the whole process tree;
* idle background CPU: CPU of the whole tree per second while nothing happens;
* dispatch -> entrypoint: a room is created at the server with an explicit
  dispatch to the worker's agent name -> the entrypoint's first line runs;
* dispatch -> terminal: the same start -> the server records JS_SUCCESS;
* CPU per job: CPU seconds (user + system) of the worker and all its
  descendants, live or reaped, over the jobs (the refills of the pool
  included), divided by the number of jobs.

Both workers are up while the jobs run, and the jobs alternate between them
(trio, livekit, livekit, trio, ...) one at a time, so that load from anything
else on the machine falls on both alike.  Before each job the harness waits
until the worker's pool is full again and the worker's process tree has been
quiet for 100 ms.  A job that fails is counted and left out of the latencies.
The markdown table is printed and everything is written as JSON to
``benchmarks/results/compare-<timestamp>.json``.

Both workers run with their production defaults otherwise (INFO logs as JSON
to a file, memory monitoring on).  ``--livekit-preload 0`` sets
``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0`` for the official worker, whose
forkserver otherwise loads the local VAD and turn-detector models that every
job process then shares.  ``--trio-keep-threads`` is a diagnostic: see
``compare_agent.py``.  ``--log-dir DIR`` keeps the workers' logs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
AGENT_SCRIPT = HERE / "compare_agent.py"
FRAMEWORKS = ("trio-agents", "livekit-agents")
#: compare_agent.py's name for each framework, and the agent name each registers
ARGV_NAME = {"trio-agents": "trio", "livekit-agents": "livekit"}
#: Bound on each wait for a worker (registration, its pool, one job).
TIMEOUT = 60.0
#: How long a worker gets to drain and exit after SIGTERM before its session is killed.
STOP_GRACE = 20.0
#: "Quiet": the process tree used at most this much CPU over QUIET_WINDOW seconds.
QUIET_CPU = 0.011
QUIET_WINDOW = 0.1
#: Give up waiting for quiet after this long (counted in the results, not an error).
QUIET_LIMIT = 10.0
#: Environment either worker reads that must not leak in from the caller's shell.
FOREIGN_ENV = (
    "LIVEKIT_AGENT_NAME",
    "LIVEKIT_AGENT_NAME_OVERRIDE",
    "LIVEKIT_WORKER_TOKEN",
    "LIVEKIT_AGENT_DEPLOYMENT",
    "LIVEKIT_LOG_LEVEL",
    "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE",
    "BENCH_TRIO_KEEP_THREADS",
)
LIVEKIT_PRELOAD_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
#: compare_agent.py's switch for --trio-keep-threads.
KEEP_THREADS_ENV = "BENCH_TRIO_KEEP_THREADS"

# livekit-server --dev's secret is 6 bytes; PyJWT warns about it on every token
warnings.filterwarnings("ignore", message="The HMAC key is .* below the minimum")


# --- numbers -----------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p90": nan, "min": nan, "max": nan, "mean": nan}

    def pct(p: float) -> float:
        # nearest rank
        k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[k]

    return {
        "n": len(ordered),
        "p50": pct(50),
        "p90": pct(90),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def memory_mb(proc: psutil.Process) -> dict[str, float]:
    info = proc.memory_full_info()
    return {"pss_mb": info.pss / 2**20, "uss_mb": info.uss / 2**20, "rss_mb": info.rss / 2**20}


def describe(proc: psutil.Process) -> str:
    """A short name for a helper process (zygote, forkserver, resource tracker...)."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    for needle, name in (
        ("_zygote_main", "zygote"),
        ("multiprocessing.forkserver", "forkserver"),
        ("multiprocessing.resource_tracker", "resource_tracker"),
    ):
        if needle in cmd:
            return name
    return cmd[:80]


# --- one worker --------------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    """A worker subprocess (in its own session) and what psutil sees of its tree."""

    framework: str
    idle: int
    agent_name: str
    process: trio.Process
    proc: psutil.Process
    launched: float  # time.time() just before the launch
    log_path: Path
    used_pids: set[int] = field(default_factory=set)  # job processes that ran a job
    helpers_seen: set[str] = field(default_factory=set)  # helper processes ever seen
    unquiet: int = 0  # waits for quiet that gave up

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.framework} worker exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def job_processes(self) -> list[psutil.Process]:
        """The worker's grandchildren: the job processes (of the zygote or forkserver)."""
        found = []
        with contextlib.suppress(psutil.NoSuchProcess):
            for helper in self.proc.children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    for p in helper.children():
                        with contextlib.suppress(psutil.NoSuchProcess):
                            if p.status() != psutil.STATUS_ZOMBIE:
                                found.append(p)
        return found

    def idle_processes(self) -> list[psutil.Process]:
        return [p for p in self.job_processes() if p.pid not in self.used_pids]

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of each live process of the tree, plus those of the children it reaped."""
        found = {}
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                name = "worker" if p.pid == self.proc.pid else describe(p)
                if p.pid != self.proc.pid and p.ppid() != self.proc.pid:
                    name = "job process"
                found[f"{name} {p.pid}"] = t.user + t.system + t.children_user + t.children_system
        return found

    def cpu_total(self) -> float:
        """CPU seconds of the tree: each live process, plus the children it reaped."""
        return sum(self.cpu_by_process().values())

    async def registered(self, server: Any) -> str:
        with trio.fail_after(TIMEOUT):
            while True:
                for w in server.agents.workers.values():
                    if w.agent_name == self.agent_name:
                        return str(w.id)
                self.check_alive()
                await trio.sleep(0.002)

    async def pool_full(self) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.idle_processes()) < self.idle:
                self.check_alive()
                await trio.sleep(0.005)

    async def settle(self) -> None:
        """The pool is full and the tree has been quiet for QUIET_WINDOW."""
        self.helpers()
        await self.pool_full()
        with trio.move_on_after(QUIET_LIMIT) as scope:
            before = self.cpu_total()
            while True:
                await trio.sleep(QUIET_WINDOW)
                now = self.cpu_total()
                if now - before <= QUIET_CPU:
                    break
                before = now
        if scope.cancelled_caught:
            self.unquiet += 1
        await self.pool_full()

    def helpers(self) -> dict[str, int]:
        """The worker's children (zygote; forkserver and resource tracker) by pid."""
        try:
            found = {f"{describe(p)} {p.pid}": p.pid for p in self.proc.children()}
        except psutil.NoSuchProcess:
            return {}
        self.helpers_seen.update(found)
        return found

    def memory(self) -> dict[str, Any]:
        idle = [memory_mb(p) for p in self.idle_processes()]
        helpers = {}
        for p in self.proc.children():
            name = describe(p)
            helpers[name if name not in helpers else f"{name}-{p.pid}"] = memory_mb(p)
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_full_info().pss / 2**20
        return {
            "idle_processes": idle,
            "idle_pss_mb": stats([m["pss_mb"] for m in idle]),
            "idle_uss_mb": stats([m["uss_mb"] for m in idle]),
            "idle_rss_mb": stats([m["rss_mb"] for m in idle]),
            "helpers": helpers,
            "worker": memory_mb(self.proc),
            "tree_pss_mb": total,
            "tree_processes": len(self.tree()),
        }


def python_for(framework: str) -> str:
    """Our python, or the official worker's own venv (it pins an older livekit SDK)."""
    if framework != "livekit-agents":
        return sys.executable
    script = Path(__file__).resolve().parents[1] / "scripts" / "reference-venv.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def worker_env(
    framework: str, url: str, *, livekit_preload: str | None, trio_keep_threads: bool
) -> dict[str, str]:
    from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET

    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(LIVEKIT_URL=url, LIVEKIT_API_KEY=DEV_API_KEY, LIVEKIT_API_SECRET=DEV_API_SECRET)
    if framework == "livekit-agents" and livekit_preload is not None:
        env[LIVEKIT_PRELOAD_ENV] = livekit_preload
    if framework == "trio-agents" and trio_keep_threads:
        env[KEEP_THREADS_ENV] = "1"
    return env


@contextlib.asynccontextmanager
async def run_worker(
    framework: str, url: str, idle: int, log_dir: Path, tag: str, env: dict[str, str]
) -> Any:
    agent_name = f"bench-{ARGV_NAME[framework]}"
    log_path = log_dir / f"{tag}.log"
    with log_path.open("wb") as log:
        launched = time.time()
        process = await trio.lowlevel.open_process(
            [python_for(framework), str(AGENT_SCRIPT), ARGV_NAME[framework], str(idle), agent_name],
            env=env,
            cwd=log_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Worker(
                framework=framework,
                idle=idle,
                agent_name=agent_name,
                process=process,
                proc=psutil.Process(process.pid),
                launched=launched,
                log_path=log_path,
            )
        finally:
            with trio.CancelScope(shield=True):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)  # no job runs: both exit at once
                    with trio.move_on_after(STOP_GRACE):
                        await process.wait()
                # its own session: this reaches its helpers and job processes, nothing else
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


# --- the phases --------------------------------------------------------------------------


async def cold_start(
    server: Any, framework: str, url: str, idle: int, log_dir: Path, tag: str, env: dict[str, str]
) -> dict[str, float]:
    async with run_worker(framework, url, idle, log_dir, tag, env) as w:
        await w.registered(server)
        registered = time.time() - w.launched
        await w.pool_full()
        pool = time.time() - w.launched
    return {"to_registered_s": registered, "to_pool_s": max(registered, pool)}


@dataclass
class JobResult:
    to_entrypoint: float | None  # None: the entrypoint never wrote its file
    to_terminal: float
    error: str | None  # None: JS_SUCCESS


async def one_job(server: Any, w: Worker, room: str, tmp: Path) -> JobResult:
    from livekit.protocol import agent
    from livekit.protocol.agent_dispatch import RoomAgentDispatch

    note = tmp / f"{room}.txt"
    meta = json.dumps({"file": str(note)})
    with trio.fail_after(TIMEOUT):
        t0 = time.time()
        dispatch = RoomAgentDispatch(agent_name=w.agent_name, metadata=meta)
        server.rooms.create(room, agents=[dispatch])
        record = await server.wait_for_job(room=room)
        record = await server.wait_for_job_status(record.job.id, agent.JS_SUCCESS, agent.JS_FAILED)
        t_end = time.time()
    to_entrypoint = None
    if note.exists():
        started, pid = note.read_text().split()
        w.used_pids.add(int(pid))
        to_entrypoint = float(started) - t0
    error = None
    if record.status != agent.JS_SUCCESS:
        error = f"{room}: JS_FAILED {record.error!r}"
    elif to_entrypoint is None:
        error = f"{room}: JS_SUCCESS but the entrypoint left no file"
    return JobResult(to_entrypoint, t_end - t0, error)


def system_busy(before: Any, after: Any) -> float:
    """Fraction of all CPUs busy between two psutil.cpu_times() samples."""
    busy = (after.user + after.system + after.nice + after.irq + after.softirq) - (
        before.user + before.system + before.nice + before.irq + before.softirq
    )
    total = sum(after) - sum(before)
    return busy / total if total > 0 else 0.0


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from trio_agents.testing import open_local_server

    out: dict[str, Any] = {
        "benchmark": "compare_process_executor",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "jobs": args.jobs,
            "idle": args.idle,
            "cold_runs": args.cold_runs,
            "idle_window_s": args.idle_window,
            LIVEKIT_PRELOAD_ENV: args.livekit_preload,
            "trio_keep_threads": args.trio_keep_threads,
        },
        "loadavg_before": list(os.getloadavg()),
    }
    cold: dict[str, list[dict[str, float]]] = {fw: [] for fw in FRAMEWORKS}
    results: dict[str, dict[str, Any]] = {fw: {} for fw in FRAMEWORKS}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp_name:
        tmp = Path(tmp_name)
        logs = Path(args.log_dir) if args.log_dir else tmp
        logs.mkdir(parents=True, exist_ok=True)
        async with open_local_server(port=0) as server:
            url = server.url
            env = {
                fw: worker_env(
                    fw,
                    url,
                    livekit_preload=args.livekit_preload,
                    trio_keep_threads=args.trio_keep_threads,
                )
                for fw in FRAMEWORKS
            }

            for run in range(args.cold_runs):
                order = FRAMEWORKS if run % 2 == 0 else FRAMEWORKS[::-1]
                for fw in order:
                    tag = f"cold-{ARGV_NAME[fw]}-{run}"
                    cold[fw].append(
                        await cold_start(server, fw, url, args.idle, logs, tag, env[fw])
                    )
                    await trio.sleep(0.5)  # let the machine calm down between launches

            async with contextlib.AsyncExitStack() as stack:
                workers = {}
                for fw in FRAMEWORKS:
                    w = await stack.enter_async_context(
                        run_worker(fw, url, args.idle, logs, f"jobs-{ARGV_NAME[fw]}", env[fw])
                    )
                    await w.registered(server)
                    await w.pool_full()
                    workers[fw] = w
                await trio.sleep(1.0)  # the prewarm finishes and the pools settle
                for w in workers.values():
                    await w.settle()
                for fw, w in workers.items():
                    results[fw]["memory"] = w.memory()
                    results[fw]["helpers_at_start"] = sorted(w.helpers())

                # background CPU while nothing happens
                idle_before = {fw: w.cpu_total() for fw, w in workers.items()}
                t_idle = time.monotonic()
                await trio.sleep(args.idle_window)
                idle_s = time.monotonic() - t_idle
                for fw, w in workers.items():
                    rate = (w.cpu_total() - idle_before[fw]) / idle_s
                    results[fw]["idle_cpu_ms_per_s"] = rate * 1000

                to_entry: dict[str, list[float]] = {fw: [] for fw in FRAMEWORKS}
                to_terminal: dict[str, list[float]] = {fw: [] for fw in FRAMEWORKS}
                failed: dict[str, list[str]] = {fw: [] for fw in FRAMEWORKS}
                for w in workers.values():
                    await w.settle()
                cpu_before = {fw: w.cpu_total() for fw, w in workers.items()}
                for fw, w in workers.items():
                    results[fw]["cpu_s_by_process_before"] = w.cpu_by_process()
                sys_before = psutil.cpu_times()
                t_jobs = time.monotonic()
                for i in range(args.jobs):
                    # trio, livekit | livekit, trio | ...: neither always goes first
                    order = FRAMEWORKS if i % 2 == 0 else FRAMEWORKS[::-1]
                    for fw in order:
                        w = workers[fw]
                        await w.settle()
                        job = await one_job(server, w, f"{ARGV_NAME[fw]}-{i}", tmp)
                        if job.error is not None:
                            # counted and reported; its times are left out
                            failed[fw].append(job.error)
                            w.check_alive()
                            continue
                        assert job.to_entrypoint is not None
                        to_entry[fw].append(job.to_entrypoint)
                        to_terminal[fw].append(job.to_terminal)
                for w in workers.values():
                    await w.settle()  # the last refill counts too
                jobs_s = time.monotonic() - t_jobs
                out["system_cpu_busy_during_jobs"] = system_busy(sys_before, psutil.cpu_times())
                out["jobs_phase_s"] = jobs_s
                for fw, w in workers.items():
                    results[fw]["helpers_at_end"] = sorted(w.helpers())
                    results[fw]["helpers_seen"] = sorted(w.helpers_seen)
                    results[fw]["cpu_s_by_process_after"] = w.cpu_by_process()
                    cpu = w.cpu_total() - cpu_before[fw]
                    background = results[fw]["idle_cpu_ms_per_s"] / 1000 * jobs_s
                    results[fw].update(
                        dispatch_to_entrypoint_ms=stats([x * 1000 for x in to_entry[fw]]),
                        dispatch_to_terminal_ms=stats([x * 1000 for x in to_terminal[fw]]),
                        failed_jobs=failed[fw],
                        distinct_job_processes=len(w.used_pids),
                        cpu_per_job_ms=cpu / args.jobs * 1000,
                        cpu_per_job_less_background_ms=(cpu - background) / args.jobs * 1000,
                        waits_for_quiet_given_up=w.unquiet,
                    )
            for fw, w in workers.items():
                results[fw]["exit_code_after_sigterm"] = w.process.returncode

    for fw in FRAMEWORKS:
        results[fw]["cold_start_s"] = {
            "to_registered": stats([c["to_registered_s"] for c in cold[fw]]),
            "to_pool": stats([c["to_pool_s"] for c in cold[fw]]),
        }
    out["results"] = results
    out["loadavg_after"] = list(os.getloadavg())
    return out


# --- the report --------------------------------------------------------------------------


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_version() -> dict[str, Any]:
    """The commit of this checkout, and whether trio_agents/ differs from it."""

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=HERE.parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "trio_agents")
    return {"commit": git("rev-parse", "HEAD"), "trio_agents_modified": bool(status)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "source": source_version(),
        "packages": {
            d: version(d)
            for d in (
                "trio-agents",
                "livekit-agents",
                "livekit",
                "livekit-protocol",
                "livekit-api",
                "trio",
                "aiohttp",
                "psutil",
            )
        },
    }


def rows(r: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(metric, trio-agents value, livekit-agents value, unit) for the table."""
    t, lk = r["results"]["trio-agents"], r["results"]["livekit-agents"]
    n_cold, n_jobs = r["settings"]["cold_runs"], r["settings"]["jobs"]
    out: list[tuple[str, float, float, str]] = []

    def add(name: str, get: Any, unit: str) -> None:
        out.append((name, get(t), get(lk), unit))

    add(
        f"cold start -> registered, p50 of {n_cold}",
        lambda x: x["cold_start_s"]["to_registered"]["p50"] * 1000,
        "ms",
    )
    add(
        f"cold start -> idle pool up, p50 of {n_cold}",
        lambda x: x["cold_start_s"]["to_pool"]["p50"] * 1000,
        "ms",
    )
    for key, label in (
        ("dispatch_to_entrypoint_ms", "dispatch -> entrypoint"),
        ("dispatch_to_terminal_ms", "dispatch -> terminal (JS_SUCCESS)"),
    ):
        for p in ("p50", "p90"):
            add(f"{label}, {p} of {n_jobs}", lambda x, k=key, q=p: x[k][q], "ms")
    add("CPU per job (worker + descendants)", lambda x: x["cpu_per_job_ms"], "ms")
    add("idle job process PSS (mean)", lambda x: x["memory"]["idle_pss_mb"]["mean"], "MB")
    add("idle job process USS (mean)", lambda x: x["memory"]["idle_uss_mb"]["mean"], "MB")
    add("idle job process RSS (mean)", lambda x: x["memory"]["idle_rss_mb"]["mean"], "MB")
    add("whole idle worker tree PSS", lambda x: x["memory"]["tree_pss_mb"], "MB")
    add("idle background CPU", lambda x: x["idle_cpu_ms_per_s"], "ms/s")
    return out


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    pk = m["packages"]
    preload = r["settings"][LIVEKIT_PRELOAD_ENV]
    lines = [
        f"PROCESS executor, {r['settings']['idle']} idle processes, loopback stand-in server; "
        f"{m['cpu_count']} CPUs ({m['cpu_model'] or '?'}), Python {m['python']}; "
        f"trio-agents {pk['trio-agents']}, livekit-agents {pk['livekit-agents']} "
        f"({LIVEKIT_PRELOAD_ENV} {preload if preload is not None else 'unset'})",
        "",
        "| metric | trio-agents | livekit-agents | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b, unit in rows(r):
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"| {name} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio} |")
    lines.append("")
    for fw in FRAMEWORKS:
        x = r["results"][fw]
        replaced = len(x["helpers_seen"]) - len(x["helpers_at_start"])
        if replaced:
            lines.append(
                f"{fw}: {replaced} helper process(es) were replaced after the pool was first up "
                f"(seen: {', '.join(x['helpers_seen'])}); their restarts are in its figures."
            )
        if x["failed_jobs"]:
            lines.append(
                f"{fw}: {len(x['failed_jobs'])} job(s) failed, left out of the latencies "
                f"(not of the CPU per job): {'; '.join(x['failed_jobs'])}"
            )
        if x["waits_for_quiet_given_up"]:
            lines.append(
                f"{fw}: {x['waits_for_quiet_given_up']} wait(s) for a quiet process tree "
                f"gave up after {QUIET_LIMIT:.0f} s."
            )
    if r["settings"]["trio_keep_threads"]:
        lines.append(
            "--trio-keep-threads: trio's idle threads never retired in the trio-agents worker "
            "(a diagnostic, not its behaviour as shipped)."
        )
    lines += [
        f"ratio = trio-agents / livekit-agents (lower is better for all). Other load on the "
        f"machine during the jobs: {r['system_cpu_busy_during_jobs'] * 100:.0f}% of all CPUs "
        f"busy (this harness and both workers included); load average "
        f"{r['loadavg_before'][0]:.2f} before, {r['loadavg_after'][0]:.2f} after.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per framework (default 30)")
    parser.add_argument(
        "--idle", type=int, default=2, help="num_idle_processes of both workers (default 2)"
    )
    parser.add_argument(
        "--cold-runs", type=int, default=3, help="cold starts per framework (default 3)"
    )
    parser.add_argument(
        "--idle-window",
        type=float,
        default=10.0,
        help="seconds over which the idle background CPU is measured (default 10)",
    )
    parser.add_argument(
        "--livekit-preload",
        default=None,
        metavar="VALUE",
        help=f"set {LIVEKIT_PRELOAD_ENV} for the official worker (default: unset, its "
        "default; '0' keeps its forkserver from loading the local VAD and turn-detector models)",
    )
    parser.add_argument(
        "--trio-keep-threads",
        action="store_true",
        help="diagnostic: keep trio's idle threads in the trio-agents worker from retiring "
        "(its zygote, started from one of them, dies with that thread otherwise)",
    )
    parser.add_argument(
        "--log-dir", default=None, help="keep the workers' logs here (default: discarded)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = parser.parse_args()
    if args.idle < 1 or args.jobs < 1 or args.cold_runs < 1 or args.idle_window <= 0:
        parser.error("--idle, --jobs, --cold-runs and --idle-window must be positive")
    result = trio.run(bench, args)
    print(table(result))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"compare-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten: {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
