"""A job's asyncio bridge: ``ctx.aio`` and connect errors of the livekit backend (no server)."""

from __future__ import annotations

import asyncio
import socket
import threading

import attrs
import trio

from tests.job.helpers import job_info
from trio_agents import rtc
from trio_agents._job._context import JobContext, run_job
from trio_agents._job._control import JobControl
from trio_agents._types import OutcomeKind
from trio_agents.rtc._bridge import THREAD_NAME
from trio_agents.testing import open_local_server


class AioError(Exception):
    pass


async def test_ctx_aio_runs_asyncio_code_and_carries_errors_and_cancellation() -> None:
    seen: list[object] = []

    async def entrypoint(ctx: JobContext) -> None:
        async def double(x: int) -> tuple[int, str]:
            await asyncio.sleep(0)
            return x * 2, threading.current_thread().name

        seen.append(await ctx.aio(double, 21))

        async def fail() -> None:
            raise AioError("from asyncio")

        try:
            await ctx.aio(fail)
        except AioError as exc:
            seen.append(str(exc))

        async def slow() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                seen.append("asyncio finally")

        with trio.move_on_after(0.2):
            await ctx.aio(slow)
        seen.append("trio resumed")
        ctx.shutdown("done")

    async with open_local_server() as srv:
        info = job_info(srv, "aio-room")
        outcome = await run_job(info, entrypoint, JobControl(), shutdown_process_timeout=5)
    assert outcome.kind is OutcomeKind.CLEAN, outcome
    assert seen == [(42, THREAD_NAME), "from asyncio", "asyncio finally", "trio resumed"]
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


async def test_a_ws_connect_error_reaches_the_entrypoint_as_itself() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caught: list[BaseException] = []

    async def entrypoint(ctx: JobContext) -> None:
        try:
            await ctx.connect()
        except rtc.ConnectError as exc:  # not inside an ExceptionGroup
            caught.append(exc)
            raise

    async with open_local_server() as srv:
        info = job_info(srv, "dead-room")
        info = attrs.evolve(info, url=f"ws://127.0.0.1:{port}")
        with trio.fail_after(60):
            outcome = await run_job(info, entrypoint, JobControl(), shutdown_process_timeout=5)
    assert len(caught) == 1
    assert "refused" in str(caught[0]).lower()
    assert outcome.kind is OutcomeKind.ERROR
    assert "ConnectError" in (outcome.error or "")
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
