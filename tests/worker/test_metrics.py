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
    m.offer_to_launch.observe(0.004)
    m.deadline_hits.labels(step="callbacks").inc(2)
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
    assert 'trio_agents_deadline_hits_total{step="callbacks"} 2.0' in text
    assert _value(text, "trio_agents_offer_to_launch_seconds_count") == 1
    assert 'lk_agents_worker_load{nodename="node-1"} 0.25' in text
    assert 'lk_agents_active_job_count{nodename="node-1"} 3.0' in text
    assert _value(text, "trio_agents_idle_processes") == 2


def test_two_workers_do_not_share_a_registry() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.jobs_started.inc()
    assert b"trio_agents_jobs_started_total 0.0" in b.exposition()
    assert b"trio_agents_jobs_started_total 1.0" in a.exposition()


async def test_a_scrape_during_a_job_and_after_it() -> None:
    import math

    import trio
    from livekit.protocol import agent

    from trio_agents import AgentServer, JobContext, JobExecutorType
    from trio_agents.testing import open_local_server

    release = trio.Event()

    async def entry(ctx: JobContext) -> None:
        async def hook() -> None:
            await trio.sleep_forever()  # cut at the deadline

        ctx.add_shutdown_callback(hook)
        await release.wait()
        ctx.shutdown("done")

    async with open_local_server(port=0) as server:
        worker = AgentServer(
            server.url,
            server.api_key,
            server.api_secret,
            job_executor_type=JobExecutorType.INLINE,
            load_fnc=lambda: 0.125,
            load_threshold=math.inf,
            port=0,
            prometheus_port=0,
            shutdown_process_timeout=0.5,
        )
        worker.rtc_session(entry, agent_name="metered")
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            await nursery.start(worker.run)
            base = f"http://127.0.0.1:{worker.health_port}"
            server.create_room("m1", agents=[api_dispatch("metered")])
            record = await server.wait_for_job(room="m1")
            with trio.fail_after(10):
                while record.status != agent.JS_RUNNING:  # noqa: ASYNC110 - stand-in state
                    await trio.sleep(0.01)
                await trio.sleep(0.6)  # a load sample (every 0.5 s)
            during = (await http.get(f"{base}/metrics")).text
            assert 'lk_agents_active_job_count{nodename="' in during
            assert _value(during, "lk_agents_active_job_count") == 1
            assert _value(during, "trio_agents_jobs_started_total") == 1
            assert _value(during, "trio_agents_offer_to_launch_seconds_count") == 1
            assert _value(during, "lk_agents_worker_load") == 0.125

            release.set()
            await server.wait_for_job_status(record.job.id, agent.JS_SUCCESS, agent.JS_FAILED)
            with trio.fail_after(10):
                while worker.worker_info()["active_jobs"]:  # noqa: ASYNC110 - teardown ends
                    await trio.sleep(0.01)
            after = (await http.get(f"{base}/metrics")).text
            alone = await http.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")
            assert (await http.get(f"http://127.0.0.1:{worker.metrics_port}/")).status_code == 404
            await worker.aclose()
            nursery.cancel_scope.cancel()
    assert _value(after, "lk_agents_active_job_count") == 0
    assert 'trio_agents_jobs_ended_total{outcome="clean"} 1.0' in after
    assert _value(after, "trio_agents_teardown_seconds_count") == 1
    assert 'trio_agents_deadline_hits_total{step="callbacks"} 1.0' in after
    assert alone.status_code == 200
    assert "trio_agents_jobs_ended_total" in alone.text


def api_dispatch(name: str) -> object:
    from livekit.protocol.agent_dispatch import RoomAgentDispatch

    return RoomAgentDispatch(agent_name=name)
