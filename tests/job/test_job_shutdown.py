"""Shutdown controls: callbacks, shutdown(), aclose(), shutting_down, drain, room deletion."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest
import trio
from livekit.protocol import room as room_pb

from tests.job.helpers import Clock, Trace, capture_logs, wait_for_agent
from trio_agents import JobContext, rtc
from trio_agents.testing import LocalServer, Simulation, open_local_server, simulate_job

# --- add_shutdown_callback -----------------------------------------------------------------


async def test_callbacks_of_every_shape_run_once_with_the_reason(autojump_clock: Clock) -> None:
    trace = Trace()

    def sync_none() -> None:
        trace.add("sync_none")

    def sync_reason(reason: str) -> None:
        trace.add("sync_reason", reason)

    async def async_none() -> None:
        await trio.sleep(1)
        trace.add("async_none")

    async def async_reason(reason: str) -> None:
        await trio.sleep(2)
        trace.add("async_reason", reason)

    class Flusher:
        def __call__(self, reason: str) -> None:
            trace.add("callable_object", reason)

        async def method(self, reason: str) -> None:
            trace.add("bound_method", reason)

    def with_prefix(prefix: str, reason: str) -> None:
        trace.add("partial", prefix + reason)

    async def with_default(reason: str = "no reason given") -> None:
        trace.add("with_default", reason)

    def star_args(*args: str) -> None:
        trace.add("star_args", *args)

    async def entrypoint(ctx: JobContext) -> None:
        flusher = Flusher()
        for cb in (
            sync_none,
            sync_reason,
            async_none,
            async_reason,
            flusher,
            flusher.method,
            functools.partial(with_prefix, "why: "),
            lambda: trace.add("lambda"),
            with_default,
            star_args,
        ):
            ctx.add_shutdown_callback(cb)
        await trio.sleep(3)
        ctx.shutdown("all done")

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome
    assert sorted(trace.labels()) == sorted(
        [
            "sync_none",
            "sync_reason",
            "async_none",
            "async_reason",
            "callable_object",
            "bound_method",
            "partial",
            "lambda",
            "with_default",
            "star_args",
        ]
    )
    assert trace.args("sync_reason") == [("all done",)]
    assert trace.args("async_reason") == [("all done",)]
    assert trace.args("callable_object") == [("all done",)]
    assert trace.args("bound_method") == [("all done",)]
    assert trace.args("partial") == [("why: all done",)]
    assert trace.args("with_default") == [("all done",)]
    assert trace.args("star_args") == [("all done",)]
    # concurrently: the 1 s and 2 s callbacks end 1 s and 2 s after shutdown
    assert trace.times("async_none") == [4.0]
    assert trace.times("async_reason") == [5.0]
    assert len(result.of_kind("callback_done")) == 10


async def test_callbacks_run_after_the_work_is_cancelled(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: trace.add("callback", ctx.room.isconnected()))
        await ctx.connect()
        try:
            await trio.sleep(2)
            ctx.shutdown()
            await trio.sleep_forever()
        finally:
            trace.add("entrypoint_finally")

    result = await simulate_job(entrypoint)
    assert trace.labels() == ["entrypoint_finally", "callback"]
    # the room is disconnected before the callbacks run (SPEC section 3, steps 3-5)
    assert trace.args("callback") == [(False,)]
    assert result.outcome.ok


async def test_add_shutdown_callback_rejects_bad_callbacks(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        with pytest.raises(TypeError, match="callable"):
            ctx.add_shutdown_callback("not callable")
        with pytest.raises(TypeError, match="no argument or one"):
            ctx.add_shutdown_callback(lambda a, b: None)
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome


# --- shutdown() ------------------------------------------------------------------------------


async def test_shutdown_is_non_blocking_idempotent_and_first_reason_wins(
    autojump_clock: Clock,
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        await trio.sleep(1)
        trace.add("before", ctx.shutting_down.is_set(), ctx.shutdown_reason)
        ctx.shutdown("first")
        # no checkpoint yet: shutdown() returned without blocking
        trace.add("after", ctx.shutting_down.is_set(), ctx.shutdown_reason)
        ctx.shutdown("second")
        ctx.shutdown("third", drain=True)
        trace.add("still", ctx.shutdown_reason)
        await trio.lowlevel.checkpoint()
        trace.add("never")  # cancelled at the first checkpoint after shutdown

    result = await simulate_job(entrypoint)
    assert trace.labels() == ["before", "after", "still", "callback"]
    assert trace.args("before") == [(False, None)]
    assert trace.args("after") == [(True, "first")]
    assert trace.args("still") == [("first",)]
    assert trace.args("callback") == [("first",)]
    assert result.outcome.reason == "first"
    assert result.outcome.ok
    assert result.kinds().count("shutdown") == 1
    assert "drain" not in [e.args[0] for e in result.of_kind("phase_done")]


async def test_shutdown_rejects_a_non_str_reason(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        with pytest.raises(TypeError, match="reason"):
            ctx.shutdown(42)  # type: ignore[arg-type]
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.reason == "user requested"


async def test_shutdown_from_a_participant_task(autojump_clock: Clock) -> None:
    trace = Trace()

    async def tool(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await trio.sleep(2)
        ctx.shutdown(f"{p.identity} said goodbye")
        trace.add("tool_after_shutdown")  # runs: shutdown() does not block
        await trio.lowlevel.checkpoint()
        trace.add("never")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(tool)
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["tool_after_shutdown", "callback"]
    assert trace.args("callback") == [("alice said goodbye",)]
    assert result.outcome.ok


async def drain_case(drain: bool) -> tuple[int, list[str], Any]:
    """The agent queues 50 frames (0.5 s) of audio then shuts down; alice counts what arrives."""
    received: list[int] = []
    phases: list[str] = []

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("voice", source)
        await ctx.room.local_participant.publish_track(track)
        await ctx.wait_for_participant(identity="alice")
        await trio.sleep(1)  # alice subscribed by now
        for _ in range(50):
            await source.capture_frame(rtc.AudioFrame.create(48000, 1, 480))
        ctx.shutdown("goodbye said", drain=drain)

    async def alice_listens(srv: LocalServer, task_status: trio.TaskStatus[None]) -> None:
        async with srv.simulated_participant("alice", room="drain-room") as alice:
            task_status.started()
            async with alice.room.events(rtc.TrackSubscribed) as events:
                async for ev in events:
                    received.append(0)
                    async with rtc.AudioStream(ev.track) as stream:
                        async for _ in stream:
                            received[0] += 1

    async with open_local_server() as srv, trio.open_nursery() as nursery:
        await nursery.start(alice_listens, srv)
        result = await simulate_job(entrypoint, server=srv, room="drain-room")
        await trio.sleep(2)  # let everything the agent wrote reach alice
        phases = [e.args[0] for e in result.of_kind("phase_done")]
        nursery.cancel_scope.cancel()
    return (received[0] if received else -1), phases, result


async def test_drain_waits_for_queued_audio_before_cancelling(autojump_clock: Clock) -> None:
    frames, phases, result = await drain_case(drain=True)
    assert frames == 50
    assert phases[0] == "drain"
    drained_at = result.of_kind("phase_done")[0].time
    assert drained_at - result.of_kind("shutdown")[0].time == pytest.approx(0.5, abs=0.02)
    assert result.outcome.ok, result.outcome


async def test_without_drain_queued_audio_is_dropped(autojump_clock: Clock) -> None:
    frames, phases, result = await drain_case(drain=False)
    assert 0 <= frames < 10  # at most what played out before the cut
    assert "drain" not in phases
    assert result.outcome.ok, result.outcome


async def test_drain_waits_for_outbound_text(autojump_clock: Clock) -> None:
    big = "lorem ipsum " * 20_000  # many chunks

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await ctx.wait_for_participant(identity="alice")

        async def say() -> None:
            await ctx.room.local_participant.send_text(big, topic="final")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(say)
            await trio.lowlevel.checkpoint()
            ctx.shutdown("bye", drain=True)

    got: list[str] = []

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            got.append((await alice.wait_for_text(topic="final")).text)

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert got == [big]


async def test_drain_is_bounded_by_the_deadline(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        source = rtc.AudioSource(48000, 1, queue_size_ms=60_000)
        track = rtc.LocalAudioTrack.create_audio_track("voice", source)
        await ctx.room.local_participant.publish_track(track)
        for _ in range(3000):  # 30 s of audio
            await source.capture_frame(rtc.AudioFrame.create(48000, 1, 480))
        ctx.shutdown("bye", drain=True)

    result = await simulate_job(entrypoint, shutdown_process_timeout=4)
    assert result.outcome.kind.value == "deadline"
    assert "drain" in result.outcome.error
    assert result.events[-1].time - result.of_kind("shutdown")[0].time == pytest.approx(4)


# --- aclose() ----------------------------------------------------------------------------


async def test_aclose_from_the_entrypoint_does_not_return(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        try:
            await ctx.aclose("closing now")
            trace.add("returned")
        except trio.Cancelled:
            trace.add("cancelled", ctx.shutting_down.is_set())
            raise

    result = await simulate_job(entrypoint)
    assert trace.labels() == ["cancelled", "callback"]
    assert trace.args("cancelled") == [(True,)]
    assert trace.args("callback") == [("closing now",)]
    assert result.outcome.reason == "closing now"
    assert result.outcome.ok


async def test_aclose_from_a_participant_task_does_not_return(autojump_clock: Clock) -> None:
    trace = Trace()

    async def tool(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        try:
            await ctx.aclose("tool ended the call")
        finally:
            trace.add("tool_finally")
        trace.add("returned")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(tool)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["tool_finally"]
    assert result.outcome.reason == "tool ended the call"


async def test_aclose_from_a_shutdown_callback_returns(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def callback() -> None:
            await ctx.aclose("from the callback")
            trace.add("callback_continued")

        ctx.add_shutdown_callback(callback)
        await trio.sleep(1)
        ctx.shutdown("first")

    result = await simulate_job(entrypoint, shutdown_process_timeout=5)
    assert trace.labels() == ["callback_continued"]
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "first"
    assert result.events[-1].time == 1.0


async def test_aclose_from_outside_waits_for_the_teardown(autojump_clock: Clock) -> None:
    trace = Trace()
    holder: list[JobContext] = []

    async def entrypoint(ctx: JobContext) -> None:
        holder.append(ctx)

        async def slow_callback() -> None:
            await trio.sleep(3)
            trace.add("callback_done")

        ctx.add_shutdown_callback(slow_callback)

    async def script(sim: Simulation) -> None:
        await trio.sleep(1)
        await holder[0].aclose("closed from outside")
        trace.add("aclose_returned", sim.control.outcome is not None)

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["callback_done", "aclose_returned"]
    assert trace.args("aclose_returned") == [(True,)]
    assert trace.times("aclose_returned") == [4.0]
    assert result.outcome.reason == "closed from outside"


# --- shutting_down ------------------------------------------------------------------------


async def test_shutting_down_is_set_when_shutdown_starts(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def watcher() -> None:
            await ctx.shutting_down.wait()
            trace.add("saw", ctx.shutdown_reason)

        ctx.add_shutdown_callback(lambda: trace.add("callback", ctx.shutting_down.is_set()))
        trace.add("initially", ctx.shutting_down.is_set())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await trio.sleep(3)
            ctx.shutdown("now")
            await trio.sleep_forever()

    await simulate_job(entrypoint)
    assert trace.labels() == ["initially", "saw", "callback"]
    assert trace.args("initially") == [(False,)]
    assert trace.args("saw") == [("now",)]
    assert trace.times("saw") == [3.0]
    assert trace.args("callback") == [(True,)]


async def test_worker_drain_sets_shutting_down_without_ending_the_job(
    autojump_clock: Clock,
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await ctx.shutting_down.wait()
        trace.add("draining", ctx.shutdown_reason)
        await ctx.room.local_participant.send_text("we are wrapping up")
        await trio.sleep(10)  # finish the conversation
        trace.add("wrapped_up")
        ctx.shutdown("finished after drain")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            await trio.sleep(5)
            sim.drain()
            await alice.wait_for_text()
            trace.add("alice_told")
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["draining", "alice_told", "wrapped_up"]
    assert trace.args("draining") == [(None,)]  # not shutting down: only the flag
    assert trace.times("draining") == [5.0]
    assert result.outcome.reason == "finished after drain"
    assert result.of_kind("shutdown")[0].time == 15.0
    assert result.outcome.ok


# --- delete_room / delete_room_on_close ---------------------------------------------------


async def test_delete_room_from_a_tool(autojump_clock: Clock) -> None:
    """Pain point 12: delete_room from a tool -> room gone, callbacks ran, no error logged."""
    trace = Trace()
    servers: list[LocalServer] = []

    async def tool(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await trio.sleep(1)
        await ctx.delete_room()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(tool)
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        servers.append(sim.server)
        async with sim.participant("alice") as alice:
            await alice.room.wait_disconnected()
            trace.add("alice_out", alice.room.disconnect_reason)
            await trio.sleep_forever()

    with capture_logs("trio_agents") as logs:
        result = await simulate_job(entrypoint, script=script, room="doomed")
        assert servers[0].rooms.get("doomed") is None
    assert trace.args("alice_out") == [(rtc.DisconnectReason.ROOM_DELETED,)]
    assert trace.args("callback") == [("room disconnected",)]
    assert result.outcome.ok, result.outcome
    assert result.outcome.teardown_errors == ()
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []


async def test_delete_room_not_found_counts_as_success(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def delete_again() -> None:
            await ctx.delete_room()  # the server already deleted it
            trace.add("deleted_again")

        ctx.add_shutdown_callback(delete_again)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        await trio.sleep(2)
        assert sim.server.rooms.delete(sim.room)

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["deleted_again"]
    assert result.outcome.ok, result.outcome
    assert result.outcome.teardown_errors == ()


async def test_delete_room_before_connect_and_twice(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        name = ctx.job.room.name
        listed = await ctx.api.room.list_rooms(room_pb.ListRoomsRequest(names=[name]))
        trace.add("before", [r.name for r in listed.rooms])
        await ctx.delete_room()
        await ctx.delete_room()
        listed = await ctx.api.room.list_rooms(room_pb.ListRoomsRequest(names=[name]))
        trace.add("after", [r.name for r in listed.rooms])
        ctx.shutdown()

    result = await simulate_job(entrypoint, room="gone")
    assert trace.args("before") == [(["gone"],)]
    assert trace.args("after") == [([],)]
    assert result.outcome.ok, result.outcome


@pytest.mark.parametrize("set_at", ["simulate_job", "run_time", "off"])
async def test_delete_room_on_close(set_at: str, autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        trace.add("default", ctx.delete_room_on_close)
        if set_at == "run_time":
            ctx.delete_room_on_close = True
        await ctx.connect()
        await ctx.wait_for_participant()
        await trio.sleep(1)
        ctx.shutdown("call over")

    async with open_local_server() as srv, trio.open_nursery() as nursery:

        async def alice(task_status: trio.TaskStatus[None]) -> None:
            async with srv.simulated_participant("alice", room="r") as p:
                task_status.started()
                reason = await p.room.wait_disconnected()
                trace.add("alice_out", reason)

        await nursery.start(alice)
        result = await simulate_job(
            entrypoint, server=srv, room="r", delete_room_on_close=set_at == "simulate_job"
        )
        room_left = srv.rooms.get("r")
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert result.outcome.ok, result.outcome
    assert trace.args("default") == [(set_at == "simulate_job",)]
    if set_at == "off":
        assert room_left is not None
        assert "delete_room" not in phases
        assert trace.args("alice_out") == []
    else:
        assert room_left is None
        assert phases.index("delete_room") < phases.index("disconnect")
        assert trace.args("alice_out") == [(rtc.DisconnectReason.ROOM_DELETED,)]


async def test_a_failing_room_deletion_does_not_skip_later_steps(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def broken_delete() -> None:
            raise RuntimeError("the API is down")

        ctx.delete_room = broken_delete  # type: ignore[method-assign]
        ctx.delete_room_on_close = True
        ctx.add_shutdown_callback(lambda: trace.add("callback", ctx.room.isconnected()))
        await ctx.connect()
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            await wait_for_agent(sim, alice)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert phases == ["cancel_work", "report", "delete_room", "disconnect", "callbacks"]
    assert trace.args("callback") == [(False,)]
    assert result.outcome.teardown_errors == ("RuntimeError: the API is down",)
    assert result.outcome.ok  # a teardown error is reported, the job itself ended cleanly
