"""Benchmark of the PROCESS executor against a loopback stand-in server.

    python benchmarks/bench_process.py [--jobs 30] [--idle 2] [--cold-runs 3]

The stand-in runs in this process (TCP on 127.0.0.1); the worker runs in a
subprocess (this file, ``worker`` mode), as it would in production, so its CPU
and memory can be measured apart from the server's.  Measured:

* cold start: worker process launched -> registered at the server, and ->
  the prewarmed pool forked;
* dispatch -> entrypoint: the room (with an automatic dispatch) is created at
  the server -> the entrypoint's first line runs (it writes ``time.time()``);
* dispatch -> terminal: the same start -> the server sees JS_SUCCESS (the
  entrypoint shuts the job down at once, so this is the whole job lifecycle);
* idle job process memory: PSS/USS/RSS of each prewarmed process, and of the
  zygote and the worker;
* CPU per job: CPU time of the worker, the zygote and every job process (the
  refill of the pool included) over the run, divided by the number of jobs.

Jobs run one at a time.  With ``--idle N`` (N > 0) each dispatch waits until the
pool is full again, so the numbers are those of a prewarmed process; the
``on demand`` scenario (no idle process) forks one per job.  The table is
printed and the numbers are written as JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import trio

RESULTS = Path(__file__).resolve().parent / "results"
POLL_LIMIT = 30.0

# livekit-server --dev's secret is 6 bytes; PyJWT warns about it on every token
warnings.filterwarnings("ignore", message="The HMAC key is .* below the minimum")


# --- the agent (runs in the job processes) ----------------------------------------------


async def bench_entrypoint(ctx: Any) -> None:
    """Record when the job started and in which process, then end the job."""
    started = time.time()
    path = json.loads(ctx.job.metadata)["file"]
    with open(path, "w") as f:  # noqa: ASYNC230 - one tiny write; the time is taken before
        f.write(f"{started!r} {os.getpid()}\n")
    ctx.shutdown("benchmark job done")


def bench_setup(proc: Any) -> None:
    proc.userdata["ready"] = True


# --- worker mode (a subprocess) ------------------------------------------------------------


def worker_main(url: str, idle: int) -> None:
    import logging

    from trio_agents import AgentServer, JobExecutorType
    from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET

    logging.basicConfig(level=logging.WARNING)
    server = AgentServer(
        url,
        DEV_API_KEY,
        DEV_API_SECRET,
        job_executor_type=JobExecutorType.PROCESS,
        num_idle_processes=idle,
        setup_fnc=bench_setup,
        shutdown_process_timeout=5.0,
        load_fnc=lambda: 0.0,  # never report full: this is about latency, not load
        port=None,
    )
    server.rtc_session(bench_entrypoint)
    trio.run(server.run)


# --- measuring -------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

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


def cpu_of(proc: psutil.Process, *, children: bool = False) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    if children:
        total += t.children_user + t.children_system
    return total


def memory_mb(proc: psutil.Process) -> dict[str, float]:
    info = proc.memory_full_info()
    return {"pss_mb": info.pss / 2**20, "uss_mb": info.uss / 2**20, "rss_mb": info.rss / 2**20}


class Worker:
    """The worker subprocess and what psutil can see of it."""

    def __init__(self, url: str, idle: int) -> None:
        self.idle = idle
        self.launched = time.time()
        self.popen = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker", url, str(idle)],
            stdin=subprocess.DEVNULL,
        )
        self.proc = psutil.Process(self.popen.pid)

    def zygote(self) -> psutil.Process | None:
        for child in self.proc.children():
            with_cmd = " ".join(child.cmdline())
            if "_zygote_main" in with_cmd:
                return child
        return None

    def job_processes(self) -> list[psutil.Process]:
        zygote = self.zygote()
        if zygote is None:
            return []
        alive = []
        for p in zygote.children():
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    def cpu_total(self) -> float:
        """CPU seconds of the worker, the zygote, its reaped children and its live ones."""
        total = cpu_of(self.proc)
        zygote = self.zygote()
        if zygote is not None:
            total += cpu_of(zygote, children=True)
            for p in self.job_processes():
                # one that exits between the listing and now is in the children times
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += cpu_of(p)
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # drains: no jobs, so it exits at once
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


async def poll(predicate: Any, *, interval: float = 0.002) -> Any:
    """Poll ``predicate`` until it is truthy (at most ``POLL_LIMIT`` seconds); its value."""
    with trio.fail_after(POLL_LIMIT):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(interval)


async def cold_start(server: Any, url: str, idle: int) -> dict[str, float]:
    before = {w for w in server.agents.workers}
    worker = Worker(url, idle)
    try:
        await poll(lambda: set(server.agents.workers) - before)
        registered = time.time() - worker.launched
        await poll(lambda: len(worker.job_processes()) >= idle)
        pool = time.time() - worker.launched
    finally:
        worker.stop()
    return {"to_registered_s": registered, "to_pool_forked_s": pool}


async def run_jobs(
    server: Any, url: str, idle: int, jobs: int, tmp: Path, tag: str
) -> dict[str, Any]:
    from livekit.protocol import agent
    from livekit.protocol.agent_dispatch import RoomAgentDispatch

    worker = Worker(url, idle)
    result: dict[str, Any] = {"num_idle_processes": idle, "jobs": jobs}
    try:
        before_ids = set(server.agents.workers)
        await poll(lambda: set(server.agents.workers) - before_ids)
        if idle:
            await poll(lambda: len(worker.job_processes()) >= idle)
            await trio.sleep(0.5)  # let the prewarm finish and the pool settle
            zygote = worker.zygote()
            assert zygote is not None
            mem = [memory_mb(p) for p in worker.job_processes()]
            result["memory"] = {
                "idle_processes": mem,
                "idle_pss_mb": stats([m["pss_mb"] for m in mem]),
                "idle_uss_mb": stats([m["uss_mb"] for m in mem]),
                "idle_rss_mb": stats([m["rss_mb"] for m in mem]),
                "zygote": memory_mb(zygote),
                "worker": memory_mb(worker.proc),
            }
        cpu_before = worker.cpu_total()
        worker_cpu_before = cpu_of(worker.proc)
        to_entry: list[float] = []
        to_terminal: list[float] = []
        pids: set[int] = set()
        for i in range(jobs):
            if idle:
                await poll(lambda: len(worker.job_processes()) >= idle)
            note = tmp / f"{tag}-{i}.txt"
            meta = json.dumps({"file": str(note)})
            room = f"{tag}-{i}"
            t0 = time.time()
            server.rooms.create(room, agents=[RoomAgentDispatch(agent_name="", metadata=meta)])
            record = await server.wait_for_job(room=room)
            record = await server.wait_for_job_status(
                record.job.id, agent.JS_SUCCESS, agent.JS_FAILED
            )
            t_end = time.time()
            if record.status != agent.JS_SUCCESS:
                raise RuntimeError(f"job {i} failed: {record.error}")
            started, pid = note.read_text().split()
            to_entry.append(float(started) - t0)
            to_terminal.append(t_end - t0)
            pids.add(int(pid))
        if idle:
            await poll(lambda: len(worker.job_processes()) >= idle)  # the last refill counts too
            await trio.sleep(0.3)
        cpu = worker.cpu_total() - cpu_before
        worker_cpu = cpu_of(worker.proc) - worker_cpu_before
        result.update(
            dispatch_to_entrypoint_ms=stats([x * 1000 for x in to_entry]),
            dispatch_to_terminal_ms=stats([x * 1000 for x in to_terminal]),
            distinct_job_processes=len(pids),
            cpu_per_job_ms={
                "total": cpu / jobs * 1000,
                "worker_process": worker_cpu / jobs * 1000,
                "zygote_and_job_processes": (cpu - worker_cpu) / jobs * 1000,
            },
        )
    finally:
        worker.stop()
    return result


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
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from trio_agents.testing import open_local_server

    out: dict[str, Any] = {
        "benchmark": "process_executor",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"jobs": args.jobs, "idle": args.idle, "cold_runs": args.cold_runs},
    }
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        async with open_local_server(port=0) as server:
            url = server.url
            cold = [await cold_start(server, url, args.idle) for _ in range(args.cold_runs)]
            out["cold_start_s"] = {
                "to_registered": stats([c["to_registered_s"] for c in cold]),
                "to_pool_forked": stats([c["to_pool_forked_s"] for c in cold]),
            }
            out["prewarmed"] = await run_jobs(server, url, args.idle, args.jobs, Path(tmp), "warm")
            out["on_demand"] = await run_jobs(server, url, 0, args.jobs, Path(tmp), "cold")
    return out


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"PROCESS executor, loopback stand-in; {m['cpu_count']} CPUs ({m['cpu_model'] or '?'}), "
        f"Python {m['python']}, {m['platform']}",
        "",
        f"{'measure':<46}{'p50':>10}{'p90':>10}{'max':>10}",
    ]

    def row(name: str, s: dict[str, float], unit: str, scale: float = 1.0) -> None:
        cells = "".join(f"{s[k] * scale:>8.1f}{unit:<2}" for k in ("p50", "p90", "max"))
        lines.append(f"{name:<46}{cells}")

    cold = r["cold_start_s"]
    runs = cold["to_registered"]["n"]
    row(f"cold start -> registered ({runs} runs)", cold["to_registered"], "ms", 1000)
    row(f"cold start -> pool forked ({runs} runs)", cold["to_pool_forked"], "ms", 1000)
    scenarios = (
        ("prewarmed", f"prewarmed (idle={r['settings']['idle']})"),
        ("on_demand", "on demand (idle=0)"),
    )
    for key, label in scenarios:
        sc = r[key]
        n = sc["jobs"]
        row(f"{label}: dispatch -> entrypoint ({n})", sc["dispatch_to_entrypoint_ms"], "ms")
        row(f"{label}: dispatch -> terminal ({n})", sc["dispatch_to_terminal_ms"], "ms")
    lines.append("")
    for key, label in (("prewarmed", "prewarmed"), ("on_demand", "on demand")):
        c = r[key]["cpu_per_job_ms"]
        lines.append(
            f"CPU per job, {label:<10} {c['total']:6.1f} ms  (worker {c['worker_process']:.1f} ms, "
            f"zygote + job processes {c['zygote_and_job_processes']:.1f} ms)"
        )
    mem = r["prewarmed"].get("memory")
    if mem:
        pss, uss, rss = mem["idle_pss_mb"], mem["idle_uss_mb"], mem["idle_rss_mb"]
        lines.append(
            f"idle job process: PSS {pss['mean']:.1f} MB, USS {uss['mean']:.1f} MB, "
            f"RSS {rss['mean']:.1f} MB (mean of {pss['n']})"
        )
        z, w = mem["zygote"], mem["worker"]
        lines.append(
            f"zygote: PSS {z['pss_mb']:.1f} MB, RSS {z['rss_mb']:.1f} MB; "
            f"worker: PSS {w['pss_mb']:.1f} MB, RSS {w['rss_mb']:.1f} MB"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs per scenario (default 30)")
    parser.add_argument(
        "--idle", type=int, default=2, help="num_idle_processes when prewarmed (default 2)"
    )
    parser.add_argument(
        "--cold-runs", type=int, default=3, help="worker cold starts to time (default 3)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = parser.parse_args()
    if args.idle < 1 or args.jobs < 1 or args.cold_runs < 1:
        parser.error("--idle, --jobs and --cold-runs must be >= 1")
    result = trio.run(bench, args)
    print(table(result))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"process-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten: {path.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
