"""Prometheus metrics of one worker (``GET /metrics`` on its health server).

Each ``AgentServer`` has a registry of its own, so several servers in one
process (tests, an application running two agents) do not collide, and the
application's default registry is left alone.  Names shared with
livekit-agents' metrics keep upstream's names (``lk_agents_*``), so existing
dashboards work; the rest are ``trio_agents_*``.

| metric | type | what |
|---|---|---|
| `lk_agents_active_job_count` | gauge | jobs running now |
| `lk_agents_worker_load` | gauge | the load last sampled (0-1) |
| `lk_agents_child_process_count` | gauge | processes under the worker (zygote, job processes) |
| `lk_agents_proc_initialize_duration_seconds` | histogram | prewarm time of a job process |
| `trio_agents_jobs_started_total` | counter | jobs launched |
| `trio_agents_jobs_ended_total{outcome}` | counter | jobs ended, by outcome |
| `trio_agents_offer_to_launch_seconds` | histogram | the server's offer to the job's launch |
| `trio_agents_teardown_seconds` | histogram | shutdown start to the outcome reported |
| `trio_agents_deadline_hits_total{step}` | counter | teardown steps (callbacks, ...) late or cut |
| `trio_agents_teardown_errors_total` | counter | errors of teardown steps and hooks |
| `trio_agents_reconnects_total` | counter | connections to the server after the first |
| `trio_agents_idle_processes` | gauge | prewarmed job processes waiting for a job |
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: The content type of ``/metrics`` answers.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TEARDOWN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    """The metrics of one worker, in a registry of their own."""

    def __init__(self, *, nodename: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        node = nodename or platform.node()
        r = self.registry
        self.active_jobs = Gauge(
            "lk_agents_active_job_count", "Active jobs", ["nodename"], registry=r
        ).labels(nodename=node)
        self.worker_load = Gauge(
            "lk_agents_worker_load", "Worker load (0-1)", ["nodename"], registry=r
        ).labels(nodename=node)
        self.child_processes = Gauge(
            "lk_agents_child_process_count",
            "Processes under the worker",
            ["nodename"],
            registry=r,
        ).labels(nodename=node)
        self.proc_initialize = Histogram(
            "lk_agents_proc_initialize_duration_seconds",
            "Time taken to initialize a process",
            ["nodename"],
            buckets=(0.1, 0.5, 1, 2, 5, 10),
            registry=r,
        ).labels(nodename=node)
        self.jobs_started = Counter("trio_agents_jobs_started", "Jobs launched", registry=r)
        self.jobs_ended = Counter(
            "trio_agents_jobs_ended", "Jobs ended, by outcome", ["outcome"], registry=r
        )
        self.offer_to_launch = Histogram(
            "trio_agents_offer_to_launch_seconds",
            "From the server's availability request to the job handed to its executor",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.teardown = Histogram(
            "trio_agents_teardown_seconds",
            "From shutdown start to the outcome reported",
            buckets=_TEARDOWN_BUCKETS,
            registry=r,
        )
        self.deadline_hits = Counter(
            "trio_agents_deadline_hits",
            "Teardown steps that ended after or were cut at the deadline",
            ["step"],
            registry=r,
        )
        self.teardown_errors = Counter(
            "trio_agents_teardown_errors", "Errors of teardown steps and hooks", registry=r
        )
        self.reconnects = Counter(
            "trio_agents_reconnects", "Connections to the server after the first", registry=r
        )
        self.idle_processes = Gauge(
            "trio_agents_idle_processes", "Prewarmed job processes waiting", registry=r
        )
        self._pid = os.getpid()

    def refresh(self, *, load: float, active_jobs: int, idle_processes: int | None) -> None:
        """Update the gauges that are read, not counted (called before each scrape)."""
        self.worker_load.set(load)
        self.active_jobs.set(active_jobs)
        if idle_processes is not None:
            self.idle_processes.set(idle_processes)
        with contextlib.suppress(psutil.Error):  # (our own process: not expected)
            self.child_processes.set(len(psutil.Process(self._pid).children(recursive=True)))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_body(metrics: WorkerMetrics, refresh: Callable[[], None]) -> bytes:
    """Refresh the read gauges, then render."""
    refresh()
    return metrics.exposition()
