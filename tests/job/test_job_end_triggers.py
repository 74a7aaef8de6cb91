"""What ends a job (SPEC section 2), and what does not (the entrypoint returning)."""

from __future__ import annotations

import logging
import sys

import pytest
import trio
from livekit.protocol import agent

from tests.job.helpers import Clock, Trace, capture_logs, job_info
from trio_agents import JobContext, rtc
from trio_agents._job._context import run_job
from trio_agents._job._control import JobControl
from trio_agents._types import OutcomeKind
from trio_agents.testing import Simulation, open_local_server, simulate_job


@pytest.mark.parametrize("connects", [True, False])
async def test_the_entrypoint_returning_does_not_end_the_job(
    connects: bool, autojump_clock: Clock
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        if connects:
            await ctx.connect()
        trace.add("returned")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(100)
            sim.terminate()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert trace.times("returned") == [0.0]
    assert trace.times("callback") == [100.0]
    assert "entrypoint_returned" in result.kinds()
    assert result.of_kind("shutdown")[0].time == 100.0
    assert result.outcome.reason == "job terminated by the server"
    assert result.outcome.ok


async def test_ctx_shutdown_ends_the_job_cleanly(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await trio.sleep(4)
        ctx.shutdown("conversation over")

    result = await simulate_job(entrypoint)
    assert result.outcome.kind is OutcomeKind.CLEAN
    assert result.outcome.reason == "conversation over"
    assert result.outcome.job_status == agent.JS_SUCCESS
    assert result.of_kind("shutdown")[0].time == 4.0
    assert result.events[-1].time == 4.0


@pytest.mark.parametrize("stayers", [(), ("agent",), ("egress",), ("agent", "egress")])
async def test_room_closes_after_the_last_non_agent_participant_leaves(
    stayers: tuple[str, ...], autojump_clock: Clock
) -> None:
    """LiveKit closes a room departure_timeout after the last STANDARD/SIP/... left;
    agents and egress do not keep it open."""

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with trio.open_nursery() as nursery:
            for i, kind in enumerate(stayers):

                async def stay(kind: str = kind, i: int = i) -> None:
                    async with sim.participant(f"stayer-{i}", kind=kind):
                        await trio.sleep_forever()

                nursery.start_soon(stay)
            async with sim.participant("alice"), sim.participant("bob", kind="sip"):
                await trio.sleep(3)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script, departure_timeout=7)
    assert result.outcome.reason == "room disconnected"
    assert result.outcome.ok
    assert result.of_kind("shutdown")[0].time == pytest.approx(10.0)


async def test_a_rejoin_within_the_departure_timeout_keeps_the_job(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(3)
        await trio.sleep(5)  # < departure_timeout
        async with sim.participant("alice"):
            await trio.sleep(3)
        await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script, departure_timeout=7)
    assert result.outcome.reason == "room disconnected"
    assert result.of_kind("shutdown")[0].time == pytest.approx(11.0 + 7.0)


async def test_room_deleted_ends_the_job(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(6)
            sim.server.rooms.delete(sim.room)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "room disconnected"
    assert result.outcome.ok
    assert result.of_kind("shutdown")[0].time == 6.0


async def test_server_termination_ends_the_job(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await trio.sleep_forever()

    async def script(sim: Simulation) -> None:
        await trio.sleep(2)
        sim.terminate()
        sim.terminate()  # idempotent

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "job terminated by the server"
    assert result.outcome.ok
    assert result.kinds().count("shutdown") == 1


async def test_termination_requested_before_the_job_runs(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        trace.add("started", ctx.shutting_down.is_set())
        await ctx.connect()
        trace.add("connected")

    async with open_local_server() as srv:
        control = JobControl()
        control.request_shutdown("terminated early")
        outcome = await run_job(job_info(srv, "early"), entrypoint, control)
    assert outcome.reason == "terminated early"
    assert trace.labels() == ["started"]
    assert trace.args("started") == [(True,)]


@pytest.mark.parametrize("where", ["before_connect", "after_connect", "in_a_child_task"])
async def test_the_entrypoint_raising_fails_the_job(where: str, autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        if where != "before_connect":
            await ctx.connect()
        await trio.sleep(2)
        if where == "in_a_child_task":

            async def child() -> None:
                raise ValueError("boom")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                await trio.sleep_forever()
        raise ValueError("boom")

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint)
    outcome = result.outcome
    assert outcome.kind is OutcomeKind.ERROR
    assert not outcome.ok
    assert outcome.job_status == agent.JS_FAILED
    assert "ValueError: boom" in outcome.error
    assert outcome.error.startswith("entrypoint raised ")
    group = where == "in_a_child_task"
    reason = "entrypoint raised " + ("ExceptionGroup" if group else "ValueError")
    assert outcome.reason == reason
    assert trace.args("callback") == [(reason,)]
    assert trace.times("callback") == [2.0]
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert result.job.id in errors[0].getMessage()
    assert errors[0].exc_info is not None


async def test_an_error_while_being_cancelled_is_in_the_outcome(
    autojump_clock: Clock,
) -> None:
    """A cleanup error mixed with Cancelled in a group must not escape run_job.

    It is part of how the job ended: logged as an error and kept in the
    outcome's ``teardown_errors`` (it was a warning, and lost, before).
    """
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: trace.add("callback"))

        async def child() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            await trio.sleep(1)
            ctx.shutdown("done")
            await trio.sleep_forever()

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint)
    assert trace.labels() == ["callback"]
    assert result.outcome.reason == "done"
    assert result.outcome.ok  # shutdown had started: not the entrypoint's failure
    errors = [r.getMessage() for r in logs.records if r.levelno == logging.ERROR]
    assert any("RuntimeError: cleanup failed" in m for m in errors), errors
    assert len(result.outcome.teardown_errors) == 1
    assert "RuntimeError: cleanup failed" in result.outcome.teardown_errors[0]
    # decided before the room was left, and reported with the error in it
    reported = result.of_kind("reported")
    assert [e.args[0] for e in reported] == ["clean"]


@pytest.mark.parametrize("hook_time", [1.0, 30.0])
async def test_cancelling_run_job_from_outside_still_runs_the_hooks(
    hook_time: float, autojump_clock: Clock
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def hook(reason: str) -> None:
            trace.add("hook_started", reason)
            await trio.sleep(hook_time)
            trace.add("hook_done")

        ctx.add_shutdown_callback(hook)
        ctx.add_shutdown_callback(lambda: trace.add("sync_hook"))
        await ctx.connect()
        try:
            await trio.sleep_forever()
        finally:
            trace.add("entrypoint_finally")

    async with open_local_server() as srv:
        control = JobControl()
        with trio.move_on_after(5) as scope:
            await run_job(
                job_info(srv, "cancelled"), entrypoint, control, shutdown_process_timeout=3
            )
        trace.add("run_job_ended")
        room = srv.rooms.get("cancelled")
        assert room is not None
        assert room.participants == {}  # the agent left
    assert scope.cancelled_caught
    assert trace.args("hook_started") == [("job cancelled by its runner",)]
    assert trace.count("sync_hook") == 1
    assert trace.count("entrypoint_finally") == 1
    assert control.outcome is not None
    assert control.outcome.reason == "job cancelled by its runner"
    if hook_time < 3:
        assert trace.times("hook_done") == [6.0]
        assert trace.times("run_job_ended") == [6.0]
        assert control.outcome.kind is OutcomeKind.CLEAN
    else:
        assert trace.count("hook_done") == 0
        assert trace.times("run_job_ended") == [8.0]  # cut at the budget
        assert control.outcome.kind is OutcomeKind.CLEAN  # reported before the hooks
        assert "callbacks: was cut off at the deadline" in control.outcome.teardown_errors[-1]


@pytest.mark.parametrize("where", ["entrypoint", "participant_task"])
async def test_sys_exit_in_job_code_fails_the_job_and_goes_on_up(
    where: str, autojump_clock: Clock
) -> None:
    """SystemExit is not swallowed (it propagates out of run_job, as anywhere in
    trio), but the job ends by it: hooks run with its reason, and the outcome
    reported to the control line says the entrypoint failed, not that the
    runner cancelled the job."""
    trace = Trace()

    async def exits(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await trio.sleep(1)
        sys.exit(3)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        ctx.add_participant_entrypoint(exits if where == "participant_task" else noop)
        await ctx.connect()
        await trio.sleep(1)
        if where == "entrypoint":
            sys.exit(3)
        await trio.sleep_forever()

    async with open_local_server() as srv, trio.open_nursery() as nursery:
        info = job_info(srv, "exit-room")

        async def alice() -> None:
            async with srv.simulated_participant("alice", room="exit-room"):
                await trio.sleep_forever()

        nursery.start_soon(alice)
        control = JobControl()
        with pytest.raises(SystemExit) as raised:
            await run_job(info, entrypoint, control, shutdown_process_timeout=3)
        nursery.cancel_scope.cancel()
    assert raised.value.code == 3  # as itself, not in groups as deep as the nurseries
    assert trace.args("callback") == [("entrypoint raised SystemExit",)]
    assert control.outcome is not None
    assert control.outcome.kind is OutcomeKind.ERROR
    assert control.outcome.reason == "entrypoint raised SystemExit"
    assert "SystemExit: 3" in control.outcome.error


async def noop(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
    pass
