"""Teardown (SPEC section 3) against the pain points of user_pain_points.md, sections A-C.

One budget (``shutdown_process_timeout``) from the moment shutdown starts;
hooks run exactly once on every path; nothing outlives the deadline except
user code that shields itself from cancellation (INLINE cannot kill it: the
outcome still says so, and reaches the control line by the deadline).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio

from tests.job.helpers import Clock, Trace, capture_logs, job_info, wait_for_agent
from trio_agents import JobContext, rtc
from trio_agents._job._context import run_job
from trio_agents._job._control import JobControl
from trio_agents._types import JobOutcome, OutcomeKind
from trio_agents.testing import Simulation, open_local_server, simulate_job

BUDGET = 4.0

# How each termination path is provoked, and the reason it gives.
TRIGGERS = {
    "ctx_shutdown": "scripted end",
    "aclose": "scripted end",
    "participant_task_shutdown": "tool hung up",
    "room_closed": "room disconnected",
    "room_deleted": "room disconnected",
    "terminate": "job terminated by the server",
    "entrypoint_raises": "entrypoint raised ValueError",
    "caller_cancelled": "job cancelled by its runner",
    "drain_then_shutdown": "scripted end",
}


async def run_path(trigger: str, entrypoint_body: Callable[[JobContext], Awaitable[None]]) -> Trace:
    """Run a job that ends by ``trigger`` at t=3; return the trace of its hooks."""
    trace = Trace()

    async def tool(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        if trigger == "participant_task_shutdown":
            await trio.sleep(3)
            ctx.shutdown("tool hung up")
        await trio.sleep_forever()

    async def entrypoint(ctx: JobContext) -> None:
        def sync_hook(reason: str) -> None:
            trace.add("sync_hook", reason)

        async def async_hook(reason: str) -> None:
            trace.add("async_hook_started", reason)
            await trio.sleep(1)
            trace.add("async_hook", reason)

        ctx.add_shutdown_callback(sync_hook)
        ctx.add_shutdown_callback(async_hook)
        ctx.add_participant_entrypoint(tool)
        await entrypoint_body(ctx)
        await ctx.connect()
        await trio.sleep(3)
        if trigger == "ctx_shutdown":
            ctx.shutdown("scripted end")
        elif trigger == "aclose":
            await ctx.aclose("scripted end")
        elif trigger == "drain_then_shutdown":
            ctx.shutdown("scripted end", drain=True)
        elif trigger == "entrypoint_raises":
            raise ValueError("boom")
        await trio.sleep_forever()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            if trigger == "room_closed":
                await trio.sleep(1)
                return  # alice leaves at 1; departure_timeout 2 -> closed at 3
            await trio.sleep(3)
            if trigger == "room_deleted":
                sim.server.rooms.delete(sim.room)
            elif trigger == "terminate":
                sim.terminate()
            await trio.sleep_forever()

    async def outcome_watch(control: JobControl) -> None:
        outcome = await control.wait_done()
        trace.add("outcome", outcome.kind, outcome.reason)

    if trigger == "caller_cancelled":
        async with open_local_server() as srv, trio.open_nursery() as nursery:
            control = JobControl()
            nursery.start_soon(outcome_watch, control)

            async def alice() -> None:
                async with srv.simulated_participant("alice", room="path"):
                    await trio.sleep_forever()

            nursery.start_soon(alice)
            with trio.move_on_after(3):
                await run_job(
                    job_info(srv, "path"), entrypoint, control, shutdown_process_timeout=BUDGET
                )
            trace.add("run_job_returned")
            nursery.cancel_scope.cancel()
        return trace

    holder: list[JobControl] = []

    async def watching_script(sim: Simulation) -> None:
        holder.append(sim.control)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outcome_watch, sim.control)
            await script(sim)
            await trio.sleep_forever()

    await simulate_job(
        entrypoint, script=watching_script, departure_timeout=2, shutdown_process_timeout=BUDGET
    )
    trace.add("run_job_returned")
    return trace


async def nothing(ctx: JobContext) -> None:
    pass


@pytest.mark.parametrize("trigger", list(TRIGGERS))
async def test_every_hook_runs_exactly_once_on_every_path(
    trigger: str, autojump_clock: Clock
) -> None:
    trace = await run_path(trigger, nothing)
    reason = TRIGGERS[trigger]
    assert trace.args("sync_hook") == [(reason,)]
    assert trace.args("async_hook_started") == [(reason,)]
    assert trace.args("async_hook") == [(reason,)]
    assert trace.times("async_hook") == [4.0]  # shutdown at 3, the hook takes 1 s
    kind = OutcomeKind.ERROR if trigger == "entrypoint_raises" else OutcomeKind.CLEAN
    assert trace.args("outcome") == [(kind, reason)]
    assert trace.times("outcome") == [4.0]
    assert trace.times("run_job_returned") == [4.0]


@pytest.mark.parametrize("trigger", ["ctx_shutdown", "room_deleted", "terminate", "aclose"])
async def test_a_hanging_hook_is_cut_at_the_deadline_and_the_others_finish(
    trigger: str, autojump_clock: Clock
) -> None:
    async def add_hanging_hook(ctx: JobContext) -> None:
        async def hangs_forever() -> None:
            await trio.sleep_forever()

        ctx.add_shutdown_callback(hangs_forever)

    with capture_logs("trio_agents.job") as logs:
        trace = await run_path(trigger, add_hanging_hook)
    reason = TRIGGERS[trigger]
    assert trace.args("sync_hook") == [(reason,)]
    assert trace.times("async_hook") == [4.0]  # the 1 s hook finished
    # the status was reported before the room was left, and stands; the cut
    # hook is in the outcome's teardown errors
    assert trace.args("outcome") == [(OutcomeKind.CLEAN, reason)]
    assert trace.times("outcome") == [3.0 + BUDGET]
    assert trace.times("run_job_returned") == [3.0 + BUDGET]
    messages = [r.getMessage() for r in logs.records if r.levelno >= logging.ERROR]
    assert any("callbacks was cut off at the deadline" in m for m in messages), messages


async def test_teardown_duration_never_exceeds_the_budget(autojump_clock: Clock) -> None:
    """Pain point 5: a callback sleeping past T is cut; teardown <= T, reason logged."""

    async def entrypoint(ctx: JobContext) -> None:
        async def slow_upload() -> None:
            await trio.sleep(BUDGET * 10)

        ctx.add_shutdown_callback(slow_upload)
        await ctx.connect()
        await trio.sleep(1)
        ctx.shutdown()

    result = await simulate_job(entrypoint, shutdown_process_timeout=BUDGET)
    started = result.of_kind("shutdown")[0].time
    assert result.events[-1].kind == "outcome"
    assert result.events[-1].time - started == BUDGET
    # the callbacks run after the report: the status sent (clean) stands, and
    # the cut is in the outcome
    assert result.outcome.kind is OutcomeKind.CLEAN
    assert result.outcome.teardown_errors == (
        "callbacks: was cut off at the deadline (shutdown_process_timeout=4s)",
    )
    assert [e.args[0] for e in result.of_kind("callback_cut")] == [
        "test_teardown_duration_never_exceeds_the_budget.<locals>.entrypoint.<locals>.slow_upload"
    ]


async def test_zero_grace_cancels_the_entrypoint_at_once(autojump_clock: Clock) -> None:
    """Pain point 6: the entrypoint is cancelled immediately, not after a fixed grace."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await trio.sleep(1)
        ctx.shutdown("end the call now")
        try:
            await trio.sleep(15)  # "continued speech"
        except trio.Cancelled:
            trace.add("cancelled")
            raise

    result = await simulate_job(entrypoint, shutdown_process_timeout=BUDGET)
    assert trace.times("cancelled") == [1.0]
    assert result.events[-1].time == 1.0
    assert result.outcome.ok


@pytest.mark.parametrize("shield_for", [1.0, 10.0])
async def test_user_code_shielding_itself_from_cancellation(
    shield_for: float, autojump_clock: Clock
) -> None:
    """INLINE cannot kill a task that ignores cancellation inside a shield.

    Expected: the outcome is DEADLINE (cancel_work cut) and reaches the control
    line at the deadline; run_job itself returns when the shield ends; hooks
    that need time get none once the deadline passed (sync hooks still run).
    """
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def async_hook() -> None:
            trace.add("async_hook_started")
            await trio.sleep(0.5)
            trace.add("async_hook")

        ctx.add_shutdown_callback(lambda: trace.add("sync_hook"))
        ctx.add_shutdown_callback(async_hook)
        await ctx.connect()
        await trio.sleep(2)
        ctx.shutdown("stop")
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(shield_for)
            trace.add("shield_over")

    async with open_local_server() as srv, trio.open_nursery() as nursery:
        control = JobControl()

        async def watch() -> None:
            outcome = await control.wait_done()
            trace.add("outcome", outcome.kind, outcome.error)

        nursery.start_soon(watch)
        outcome = await run_job(
            job_info(srv, "shielded"), entrypoint, control, shutdown_process_timeout=BUDGET
        )
        trace.add("run_job_returned")
    assert trace.times("shield_over") == [2.0 + shield_for]
    assert trace.count("sync_hook") == 1
    assert trace.count("async_hook_started") == 1
    if shield_for < BUDGET:
        assert outcome.kind is OutcomeKind.CLEAN
        assert trace.times("async_hook") == [2.0 + shield_for + 0.5]
        assert trace.times("outcome") == [2.0 + shield_for + 0.5]
        assert trace.times("run_job_returned") == [2.0 + shield_for + 0.5]
    else:
        assert outcome.kind is OutcomeKind.DEADLINE
        assert "cancel_work" in outcome.error
        assert trace.count("async_hook") == 0
        assert trace.times("outcome") == [2.0 + BUDGET]  # delivered by the deadline
        assert trace.times("run_job_returned") == [2.0 + shield_for]


async def test_two_failing_hooks_are_reported_together(autojump_clock: Clock) -> None:
    """Pain point 8: two raising callbacks + a 1 s one: the slow one finishes; one group."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        def fails_sync() -> None:
            raise ValueError("db write failed")

        async def fails_async(reason: str) -> None:
            await trio.sleep(0.5)
            raise KeyError("transcript")

        async def slow() -> None:
            await trio.sleep(1)
            trace.add("slow_done")

        for cb in (fails_sync, fails_async, slow):
            ctx.add_shutdown_callback(cb)
        ctx.shutdown()

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint)
    assert trace.times("slow_done") == [1.0]
    assert sorted(result.outcome.teardown_errors) == [
        "KeyError: 'transcript'",
        "ValueError: db write failed",
    ]
    assert result.outcome.ok  # the job ended cleanly; its hooks' errors are reported
    groups = [
        r
        for r in logs.records
        if r.exc_info is not None and isinstance(r.exc_info[1], BaseExceptionGroup)
    ]
    assert len(groups) == 1
    exc = groups[0].exc_info[1] if groups[0].exc_info else None
    assert isinstance(exc, BaseExceptionGroup)
    assert sorted(type(e).__name__ for e in exc.exceptions) == ["KeyError", "ValueError"]
    assert groups[0].__dict__["job_id"] == result.job.id
    assert len(result.of_kind("callback_failed")) == 2


async def test_room_already_disconnected_before_teardown(autojump_clock: Clock) -> None:
    """Pain point 3: the room is gone before teardown: callbacks still run."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        await ctx.room.wait_disconnected()
        trace.add("room_gone", ctx.room.disconnect_reason)

    async def script(sim: Simulation) -> None:
        await trio.sleep(2)
        sim.server.rooms.delete(sim.room)

    result = await simulate_job(entrypoint, script=script)
    assert trace.labels() == ["room_gone", "callback"]
    assert trace.args("room_gone") == [(rtc.DisconnectReason.ROOM_DELETED,)]
    assert result.outcome.ok, result.outcome
    assert result.outcome.teardown_errors == ()


async def test_a_failing_disconnect_does_not_skip_the_callbacks(autojump_clock: Clock) -> None:
    """Pain point 3: "handle not found" from disconnect: callbacks run, error reported."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def broken_disconnect() -> None:
            raise RuntimeError("handle not found")

        ctx.room.disconnect = broken_disconnect  # type: ignore[method-assign]
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        ctx.shutdown("hang up")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            await wait_for_agent(sim, alice)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert trace.args("callback") == [("hang up",)]
    assert result.outcome.teardown_errors == ("RuntimeError: handle not found",)
    # and the room link still ended with the job (no task outlives it)
    assert result.events[-1].kind == "outcome"


async def test_say_with_nobody_listening_then_the_room_closes(autojump_clock: Clock) -> None:
    """Pain point 1: greeting audio plays, nobody ever joins, the room closes:
    the callback runs once, with its reason, within the budget."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        source = rtc.AudioSource(16000, 1)
        await ctx.room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("greeting", source)
        )
        while True:  # "say()" forever: a TTS that never stops
            await source.capture_frame(rtc.AudioFrame.create(16000, 1, 160))

    result = await simulate_job(entrypoint, empty_timeout=20, shutdown_process_timeout=BUDGET)
    assert trace.args("callback") == [("room disconnected",)]
    started = result.of_kind("shutdown")[0].time
    assert started == pytest.approx(20.0)
    assert result.events[-1].time - started < 0.1
    assert result.outcome.ok


async def test_disconnect_while_a_fake_tts_blocks(autojump_clock: Clock) -> None:
    """Pain point 9: the participant leaves mid-speech: close within 1 s, streams cancelled."""
    trace = Trace()

    async def speak(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        source = rtc.AudioSource(16000, 1, queue_size_ms=200)
        await ctx.room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("tts", source)
        )
        try:
            while True:
                await source.capture_frame(rtc.AudioFrame.create(16000, 1, 160))
        finally:
            trace.add("tts_cancelled")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(speak)
        ctx.add_shutdown_callback(lambda: trace.add("close"))
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(5)
            sim.server.rooms.delete(sim.room)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script, shutdown_process_timeout=BUDGET)
    assert trace.labels() == ["tts_cancelled", "close"]
    assert trace.times("close")[0] - 5.0 < 1.0
    assert result.outcome.ok


async def test_teardown_order(autojump_clock: Clock) -> None:
    """SPEC section 3: drain, cancel the work, delete the room, disconnect, callbacks."""

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: None)
        await ctx.connect()
        ctx.shutdown("done", drain=True)

    result = await simulate_job(entrypoint, delete_room_on_close=True)
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert phases == [
        "drain", "cancel_work", "report", "delete_room", "disconnect", "callbacks", "close_api"
    ]
    assert result.kinds()[-1] == "outcome"
    assert result.outcome == JobOutcome(kind=OutcomeKind.CLEAN, reason="done")
