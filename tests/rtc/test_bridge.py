"""The asyncio bridge: calls, cancellation, exceptions, events, close (no server needed)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading

import pytest
import trio
import trio.lowlevel

from trio_agents.rtc._bridge import (
    THREAD_NAME,
    BridgeClosedError,
    current_bridge,
    new_pipe,
    open_asyncio_bridge,
)


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


class CustomError(Exception):
    pass


async def test_run_returns_the_result_on_the_loop_thread() -> None:
    async with open_asyncio_bridge() as bridge:

        async def where(x: int) -> tuple[str, int, bool]:
            await asyncio.sleep(0)
            asyncio.get_running_loop()  # raises outside a running loop
            return threading.current_thread().name, x * 2, bridge.in_loop_thread()

        assert await bridge.run(where, 21) == (THREAD_NAME, 42, True)
        assert await bridge.run_sync(lambda: threading.current_thread().name) == THREAD_NAME
    assert bridge_threads() == []


async def test_exceptions_keep_their_type() -> None:
    async with open_asyncio_bridge() as bridge:

        async def fail() -> None:
            await asyncio.sleep(0)
            raise CustomError("boom")

        def fail_sync() -> None:
            raise KeyError("k")

        with pytest.raises(CustomError, match="boom"):
            await bridge.run(fail)
        with pytest.raises(KeyError):
            await bridge.run_sync(fail_sync)
        # a coroutine function that raises before its first await, and a non-coroutine
        with pytest.raises(TypeError):
            await bridge.run(lambda: 1)  # type: ignore[arg-type,return-value]


async def test_cancellation_runs_the_asyncio_finally_before_trio_resumes() -> None:
    order: list[str] = []
    started = threading.Event()
    async with open_asyncio_bridge() as bridge:

        async def slow() -> None:
            try:
                started.set()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                order.append("asyncio cancelled")
                raise
            finally:
                await asyncio.sleep(0.05)  # async cleanup still runs
                order.append("asyncio finally")

        with trio.CancelScope() as scope:

            async def cancel_when_started() -> None:
                await trio.to_thread.run_sync(started.wait)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_started)
                try:
                    await bridge.run(slow)
                finally:
                    order.append("trio resumed")
        assert scope.cancelled_caught
        assert order == ["asyncio cancelled", "asyncio finally", "trio resumed"]


async def test_asyncio_side_can_swallow_the_cancel_and_trio_still_sees_cancelled() -> None:
    async with open_asyncio_bridge() as bridge:

        async def stubborn() -> str:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return "kept"
            return "slept"

        with trio.move_on_after(0.1) as scope:
            await bridge.run(stubborn)
            # the result came back; the next checkpoint is cancelled
            await trio.lowlevel.checkpoint()
            raise AssertionError("not cancelled")
        assert scope.cancelled_caught


async def test_reentrant_and_current() -> None:
    with pytest.raises(RuntimeError, match="no asyncio bridge"):
        current_bridge()
    async with open_asyncio_bridge() as outer:
        assert current_bridge() is outer
        async with open_asyncio_bridge() as inner:
            assert inner is outer
        # the inner block did not close it
        assert await outer.run_sync(lambda: 5) == 5
    with pytest.raises(BridgeClosedError):
        await outer.run_sync(lambda: 5)
    with pytest.raises(RuntimeError, match="no asyncio bridge"):
        current_bridge()


async def test_an_unused_bridge_starts_no_thread() -> None:
    async with open_asyncio_bridge() as bridge:
        assert not bridge.started
        assert bridge_threads() == []


async def test_closers_run_lifo_and_orphans_are_awaited_at_close() -> None:
    order: list[str] = []
    async with open_asyncio_bridge() as bridge:

        def setup() -> None:
            async def closer(name: str) -> None:
                await asyncio.sleep(0)
                order.append(name)

            bridge.add_closer(lambda: closer("first"))
            bridge.add_closer(lambda: closer("second"))

            async def orphan() -> None:
                await asyncio.sleep(0.2)
                order.append("orphan done")

            bridge.spawn(orphan(), orphan=True)

        await bridge.run_sync(setup)
        assert bridge.orphan_count == 1
    assert order == ["second", "first", "orphan done"]
    assert bridge_threads() == []


async def test_close_is_bounded_by_close_timeout_and_leaves_no_thread() -> None:
    cancelled = threading.Event()
    async with open_asyncio_bridge(close_timeout=0.2) as bridge:

        async def never() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await bridge.run_sync(lambda: bridge.spawn(never(), orphan=True))
    assert cancelled.is_set()
    assert bridge_threads() == []


async def test_an_owners_close_deadline_bounds_the_close_before_close_timeout() -> None:
    """A job sets its teardown deadline on the bridge: closing never waits past it."""
    cancelled = threading.Event()
    start = trio.current_time()
    async with open_asyncio_bridge(close_timeout=600) as bridge:

        async def never() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await bridge.run_sync(lambda: bridge.spawn(never(), orphan=True))
        bridge.close_deadline = trio.current_time() + 0.2
    # (a generous bound: the point is the owner's 0.2 s, not the 600 s close_timeout)
    assert trio.current_time() - start < 60
    assert cancelled.is_set()
    assert bridge_threads() == []


async def test_events_arrive_in_order_in_batches() -> None:
    async with open_asyncio_bridge() as bridge:
        pipe = new_pipe(1000, "test events")

        def produce() -> None:
            for i in range(500):
                pipe.put(i)
            pipe.close()

        await bridge.run_sync(produce)
        got = [item async for item in pipe]
        assert got == list(range(500))
        assert pipe.dropped == 0
        assert pipe.delivered == 500


async def test_overflow_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_agents.rtc.bridge")
    async with open_asyncio_bridge() as bridge:
        pipe = new_pipe(10, "slow consumer")

        def produce() -> None:
            for i in range(100):
                pipe.put(i)

        # a foreign thread, as the SDK's native callbacks are
        thread = threading.Thread(target=produce)
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        await bridge.run_sync(pipe.close)
        got = [item async for item in pipe]
        assert got == list(range(90, 100))  # the newest are kept
        assert pipe.dropped == 90
    assert any("slow consumer" in r.getMessage() for r in caplog.records)


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, trio
    from trio_agents.rtc._bridge import open_asyncio_bridge, ForkedAfterUseError

    async def use():
        async with open_asyncio_bridge() as b:
            return await b.run_sync(lambda: 1)

    assert trio.run(use) == 1
    pid = os.fork()
    if pid == 0:
        try:
            trio.run(use)
        except ForkedAfterUseError as exc:
            print("child error:", exc, flush=True)
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_process_forked_after_using_the_bridge_gets_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "forked" in proc.stdout
    assert "spawn" in proc.stdout
