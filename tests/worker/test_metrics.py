"""Prometheus metrics: the registry of one worker, and the health server's /metrics."""

from __future__ import annotations

import httpx

from trio_agents._health import health_app
from trio_agents._metrics import CONTENT_TYPE, WorkerMetrics


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in:\n{text}")


async def test_metrics_endpoint_renders_one_workers_registry() -> None:
    m = WorkerMetrics(nodename="node-1")
    m.jobs_started.inc()
    m.jobs_ended.labels(outcome="clean").inc()
    m.dispatch_to_entrypoint.observe(0.004)
    m.hooks_cut.inc(2)
    app = health_app(
        None, None, lambda: m.refresh(load=0.25, active_jobs=3, idle_processes=2) or m.exposition()
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        resp = await c.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == CONTENT_TYPE
        text = resp.text
        assert (await c.get("/")).status_code == 404  # a metrics-only server
        assert (await c.get("/worker")).status_code == 404
    assert _value(text, "trio_agents_jobs_started_total") == 1
    assert 'trio_agents_jobs_ended_total{outcome="clean"} 1.0' in text
    assert _value(text, "trio_agents_hooks_cut_total") == 2
    assert _value(text, "trio_agents_dispatch_to_entrypoint_seconds_count") == 1
    assert 'lk_agents_worker_load{nodename="node-1"} 0.25' in text
    assert 'lk_agents_active_job_count{nodename="node-1"} 3.0' in text
    assert _value(text, "trio_agents_idle_processes") == 2


def test_two_workers_do_not_share_a_registry() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.jobs_started.inc()
    assert b"trio_agents_jobs_started_total 0.0" in b.exposition()
    assert b"trio_agents_jobs_started_total 1.0" in a.exposition()
