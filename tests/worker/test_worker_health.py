"""The worker's health server (``port=0``: a free loopback port), over real HTTP.

These tests use trio's real clock: the health server is a TCP socket, and an
autojumping clock would skip time while the test waits on it.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from livekit.protocol import agent
from worker_helpers import make_worker, open_tap

from trio_agents import AgentServer, JobContext, WorkerError
from trio_agents._version import __version__
from trio_agents.testing import LocalServer, open_local_server

TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    with trio.fail_after(30):
        async with open_local_server() as s:
            yield s


def health_url(ws: AgentServer, path: str) -> str:
    assert ws.health_port
    return f"http://127.0.0.1:{ws.health_port}{path}"


async def test_health_and_worker_status_endpoints(server: LocalServer) -> None:
    ws = make_worker(server.url, port=0, load_fnc=lambda: 0.25)
    started = trio.Event()

    @ws.rtc_session(agent_name="health-agent")
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        started.set()
        await ctx.shutting_down.wait()
        await trio.sleep(0.2)
        ctx.shutdown("drained")

    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as http:
        await nursery.start(ws.run)
        assert ws.health_port
        assert ws.health_port != 8081

        # reachable before registration too; load is sampled right away
        resp = await http.get(health_url(ws, "/"))
        assert (resp.status_code, resp.text) == (200, "OK")

        await ws.wait_registered()
        info = (await http.get(health_url(ws, "/worker"))).json()
        assert info == {
            "agent_name": "health-agent",
            "worker_id": ws.worker_id,
            "worker_type": "ROOM",
            "active_jobs": 0,
            "job_ids": [],
            "worker_load": 0.25,
            "status": "WS_AVAILABLE",
            "draining": False,
            "sdk_version": __version__,
            "protocol_version": 1,
        }

        server.rooms.create("health-room", agents=[agent_dispatch_for("health-agent")])
        record = await server.wait_for_job(room="health-room")
        await started.wait()
        info = (await http.get(health_url(ws, "/worker"))).json()
        assert (info["active_jobs"], info["job_ids"]) == (1, [record.job.id])

        nursery.start_soon(ws.drain)
        await trio.sleep(0.05)
        info = (await http.get(health_url(ws, "/worker"))).json()
        assert (info["draining"], info["status"]) == (True, "WS_FULL")
        assert (await http.get(health_url(ws, "/"))).status_code == 200  # draining is healthy

        assert (await http.get(health_url(ws, "/nope"))).status_code == 404
        assert (await http.post(health_url(ws, "/"))).status_code == 405
    # run() returned after the drain: the port is closed
    assert record.history[-1] == agent.JS_SUCCESS
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(health_url(ws, "/"))


def agent_dispatch_for(name: str) -> Any:
    from livekit.protocol.agent_dispatch import RoomAgentDispatch

    return RoomAgentDispatch(agent_name=name)


async def test_503_with_the_reason_once_the_connection_failed_for_good(
    server: LocalServer,
) -> None:
    """When the server stays unreachable, running jobs wind down with their normal
    teardown, and meanwhile the health check says why the worker is going away."""
    async with open_tap(server) as tap:
        ws = make_worker(tap.url, port=0, max_retry=1, shutdown_process_timeout=10)
        checked = trio.Event()
        reasons: list[str] = []
        shutting_down = trio.Event()
        started = trio.Event()

        @ws.rtc_session()
        async def entry(ctx: JobContext) -> None:
            async def wait_for_the_test(reason: str) -> None:
                reasons.append(reason)
                shutting_down.set()
                await checked.wait()

            ctx.add_shutdown_callback(wait_for_the_test)
            await ctx.connect()
            started.set()
            await trio.sleep_forever()

        failure: list[WorkerError] = []

        async def run() -> None:
            try:
                await ws.run()
            except WorkerError as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=5) as http:
            nursery.start_soon(run)
            await ws.wait_registered()
            server.create_room("doomed")
            await server.wait_for_job(room="doomed")
            await started.wait()
            assert (await http.get(health_url(ws, "/"))).status_code == 200

            tap.refuse = True
            tap.connections[0].drop()
            await shutting_down.wait()  # the job is being shut down
            resp = await http.get(health_url(ws, "/"))
            assert resp.status_code == 503
            assert resp.text == (
                "failed to connect to livekit: HTTP 503: service unavailable"
            )
            assert failure == []  # run() has not returned yet: jobs are winding down
            checked.set()
        assert reasons == ["worker shutting down"]
        (error,) = failure
        assert str(error).startswith(f"failed to connect to livekit at {tap.url} after 2 attempts")


# hypercorn's Config.create_sockets leaks the socket whose bind() failed; collect
# it here, where the warning is expected, rather than at the end of the session
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_busy_health_port_is_a_worker_error(server: LocalServer) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        ws = make_worker(server.url, port=port)
        ws.rtc_session(_never_runs)
        with pytest.raises(WorkerError, match=f"cannot serve the health check on 127.0.0.1:{port}"):
            await ws.run()
    finally:
        for listener in listeners:
            await listener.aclose()
        gc.collect()


async def _never_runs(ctx: JobContext) -> None:
    raise AssertionError("no job expected")
