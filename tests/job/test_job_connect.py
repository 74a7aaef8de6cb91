"""ctx.connect(): idempotence, auto_subscribe modes, slow and failing connects."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio

from tests.job.helpers import Clock, Trace, capture_logs, job_info, wait_until
from trio_agents import AutoSubscribe, JobContext, rtc
from trio_agents._job._context import CONNECT_WARNING_DELAY, JobShutdownError, run_job
from trio_agents._job._control import JobControl
from trio_agents._types import OutcomeKind
from trio_agents.testing import LocalServer, Simulation, open_local_server, simulate_job
from trio_agents.testing._asgi import WebSocket
from trio_agents.testing._signal import SignalHub


async def test_connect_is_idempotent_sequential_and_concurrent(autojump_clock: Clock) -> None:
    rooms: list[rtc.Room] = []

    async def entrypoint(ctx: JobContext) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ctx.connect)
        await ctx.connect()
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
        rooms.append(ctx.room)
        assert ctx.room.isconnected()
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome
    assert result.kinds().count("connecting") == 1
    assert result.kinds().count("connected") == 1
    # only one agent ever joined the room
    assert len(rooms) == 1


async def test_connect_rejects_a_wrong_auto_subscribe(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        with pytest.raises(TypeError, match="auto_subscribe"):
            await ctx.connect(auto_subscribe=True)  # type: ignore[arg-type]
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome


# (mode, subscribed to audio tracks)
MODES = [
    (AutoSubscribe.SUBSCRIBE_ALL, True),
    (AutoSubscribe.AUDIO_ONLY, True),
    (AutoSubscribe.SUBSCRIBE_NONE, False),
    (AutoSubscribe.VIDEO_ONLY, False),
]


@pytest.mark.parametrize(("mode", "subscribes"), MODES, ids=[m.name for m, _ in MODES])
@pytest.mark.parametrize("published", ["before_connect", "after_connect"])
async def test_auto_subscribe_modes_for_existing_and_future_tracks(
    mode: AutoSubscribe, subscribes: bool, published: str, autojump_clock: Clock
) -> None:
    alice_published = trio.Event()
    agent_connected = trio.Event()
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async with ctx.room.events(rtc.TrackSubscribed) as events:
            if published == "before_connect":
                await alice_published.wait()
            await ctx.connect(auto_subscribe=mode)
            agent_connected.set()
            alice = await ctx.wait_for_participant(identity="alice")
            with trio.move_on_after(5):
                async for ev in events:
                    trace.add("subscribed", ev.participant.identity, ev.publication.kind)
                    frames = 0
                    async with rtc.AudioStream(ev.track) as stream:
                        async for _ in stream:
                            frames += 1
                            if frames == 10:
                                trace.add("frames")
                                break
            await wait_until(lambda: len(alice.track_publications) == 1)
            pub = next(iter(alice.track_publications.values()))
            trace.add("state", pub.subscribed, pub.track is not None)
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            if published == "after_connect":
                await agent_connected.wait()
            await alice.publish_audio(frames=1)
            alice_published.set()
            await agent_connected.wait()
            await trio.sleep(0.5)
            await alice.publish_audio(frames=50)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    if subscribes:
        assert trace.args("subscribed") == [("alice", rtc.TrackKind.KIND_AUDIO)]
        assert trace.count("frames") == 1
        assert trace.args("state") == [(True, True)]
    else:
        assert trace.args("subscribed") == []
        assert trace.args("state") == [(False, False)]


async def test_subscribe_none_lets_the_entrypoint_subscribe_by_hand(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
        async with ctx.room.events(rtc.TrackPublished, rtc.TrackSubscribed) as events:
            async for ev in events:
                if isinstance(ev, rtc.TrackPublished):
                    trace.add("published", ev.publication.subscribed)
                    ev.publication.set_subscribed(True)
                else:
                    trace.add("subscribed", ev.participant.identity)
                    ctx.shutdown()

    async def script(sim: Simulation) -> None:
        await trio.sleep(1)
        async with sim.participant("alice") as alice:
            await alice.publish_audio(frames=5)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.labels() == ["published", "subscribed"]
    assert trace.args("published") == [(False,)]


# --- a slow signal endpoint: shutdown while connect() is waiting -----------------------


class SlowSignalHub(SignalHub):
    """The stand-in's /rtc/sim endpoint, answering only after ``delay`` seconds."""

    delay = 30.0

    async def serve(self, ws: WebSocket) -> None:
        await trio.sleep(self.delay)
        await super().serve(ws)


async def slow_server() -> AsyncIterator[LocalServer]:
    async with open_local_server() as srv:
        srv.signal = SlowSignalHub(srv.rooms, api_key=srv.api_key, api_secret=srv.api_secret)
        yield srv


@pytest.fixture
async def slow() -> AsyncIterator[LocalServer]:
    # (tests using it take autojump_clock themselves: pytest-trio only honours
    # a clock that is an argument of the test)
    async for srv in slow_server():
        yield srv


async def test_slow_server_really_makes_connect_slow(
    slow: LocalServer, autojump_clock: Clock
) -> None:
    times: list[float] = []

    async def entrypoint(ctx: JobContext) -> None:
        start = trio.current_time()
        await ctx.connect()
        times.append(trio.current_time() - start)
        ctx.shutdown()

    result = await simulate_job(entrypoint, server=slow)
    assert result.outcome.ok, result.outcome
    assert times == [SlowSignalHub.delay]


@pytest.mark.parametrize("trigger", ["child_task", "terminate", "participant_script"])
async def test_shutdown_during_a_slow_connect_never_runs_the_code_after_it(
    trigger: str, slow: LocalServer, autojump_clock: Clock
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))

        async def killer() -> None:
            await trio.sleep(2)
            ctx.shutdown("hung up while connecting")

        try:
            async with trio.open_nursery() as nursery:
                if trigger == "child_task":
                    nursery.start_soon(killer)
                trace.add("connecting")
                await ctx.connect()
                trace.add("after_connect")  # "session.start()" must never happen
                nursery.cancel_scope.cancel()
        finally:
            trace.add("finally", ctx.room.isconnected())

    async def script(sim: Simulation) -> None:
        await trio.sleep(2)
        if trigger == "terminate":
            sim.terminate()
        elif trigger == "participant_script":
            # what a tool or webhook holding the context would do
            holder[0].shutdown("hung up while connecting")

    holder: list[JobContext] = []

    async def capturing(ctx: JobContext) -> None:
        holder.append(ctx)
        await entrypoint(ctx)

    result = await simulate_job(capturing, script=script, server=slow, shutdown_process_timeout=5)
    assert "after_connect" not in trace.labels()
    assert trace.args("finally") == [(False,)]
    assert trace.times("finally") == [2.0]
    assert "connected" not in result.kinds()
    expected = (
        "job terminated by the server" if trigger == "terminate" else "hung up while connecting"
    )
    assert result.outcome.reason == expected
    assert result.outcome.ok, result.outcome
    assert trace.args("callback") == [(expected,)]
    # teardown did not wait for the slow server
    assert result.events[-1].time == 2.0


async def test_connect_after_shutdown_started_never_connects(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def late_connect() -> None:
            # a shutdown callback is not cancelled: it gets a clear error
            try:
                await ctx.connect()
            except JobShutdownError as exc:
                trace.add("refused", str(exc))

        ctx.add_shutdown_callback(late_connect)
        ctx.shutdown("early")
        try:
            await ctx.connect()
        except trio.Cancelled:
            trace.add("cancelled")  # the entrypoint itself is already cancelled
            raise
        trace.add("connected")

    result = await simulate_job(entrypoint)
    assert trace.labels() == ["cancelled", "refused"]
    assert "early" in trace.args("refused")[0][0]
    assert "connecting" not in result.kinds()
    assert result.outcome.ok
    assert result.outcome.reason == "early"


async def test_a_failing_connect_raises_connect_error_and_fails_the_job(
    autojump_clock: Clock,
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        try:
            await ctx.connect()
        except rtc.ConnectError as exc:
            trace.add("connect_error", str(exc))
            raise

    async with open_local_server() as srv:
        info = job_info(srv, "bad-token-room", token="not-a-jwt")
        control = JobControl()
        outcome = await run_job(info, entrypoint, control, shutdown_process_timeout=3)
    assert outcome.kind is OutcomeKind.ERROR
    assert not outcome.ok
    assert "ConnectError" in outcome.error
    assert "401" in trace.args("connect_error")[0][0]
    assert trace.args("callback") == [("entrypoint raised ConnectError",)]
    assert control.outcome == outcome


async def test_a_job_that_never_connects_is_warned_about_but_not_ended(
    autojump_clock: Clock,
) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await trio.sleep(CONNECT_WARNING_DELAY * 3)
        ctx.shutdown("gave up")

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint)
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ctx.connect()" in warnings[0].getMessage()
    assert warnings[0].__dict__["job_id"] == result.job.id  # emitted inside the job
    assert result.outcome.reason == "gave up"
    assert result.of_kind("shutdown")[0].time == CONNECT_WARNING_DELAY * 3
