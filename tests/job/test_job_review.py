"""Regressions found in review: races between shutdown and the join, teardown
steps cut at the deadline, rooms to delete that were never joined, the control
line of a finished job."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio

from tests.job.helpers import Clock, Trace, job_info, wait_for_agent, wait_until
from trio_agents import JobContext, rtc
from trio_agents._job._context import run_job
from trio_agents._job._control import JobControl
from trio_agents._types import OutcomeKind
from trio_agents.testing import Simulation, open_local_server, simulate_job
from trio_agents.testing._asgi import WebSocket
from trio_agents.testing._signal import SignalHub

# --- a shutdown at the moment the room joins ------------------------------------------------


async def test_a_shutdown_at_the_moment_of_the_join_still_leaves_the_room_in_teardown(
    autojump_clock: Clock,
) -> None:
    """trio's ``nursery.start`` checkpoints once the room task has started: a
    shutdown landing there made ``connect()`` raise Cancelled with the room
    joined but not known as connected, so teardown skipped the disconnect step
    and the callbacks ran with the agent still in the room."""
    trace = Trace()

    async def greet(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("participant_task", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        joined = ctx.room.on_join

        def on_join(*args: object) -> None:
            joined(*args)  # type: ignore[arg-type]
            ctx.shutdown("hung up as we joined")

        ctx.room.on_join = on_join  # type: ignore[method-assign]
        ctx.add_participant_entrypoint(greet)
        ctx.add_shutdown_callback(lambda: trace.add("callback", ctx.room.isconnected()))
        await ctx.connect()
        trace.add("after_connect")

    async with open_local_server() as srv, trio.open_nursery() as nursery:

        async def alice(task_status: trio.TaskStatus[None]) -> None:
            async with srv.simulated_participant("alice", room="r"):
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(alice)
        result = await simulate_job(entrypoint, server=srv, room="r")
        room = srv.rooms.get("r")
        assert room is not None
        agents = [i for i in room.participants if i.startswith("agent-")]
        nursery.cancel_scope.cancel()
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert phases == ["cancel_work", "report", "disconnect", "callbacks"]
    assert "connected" in result.kinds()
    assert trace.labels() == ["callback"]  # no code after connect, no participant task
    assert trace.args("callback") == [(False,)]
    assert agents == []
    assert result.outcome.ok, result.outcome


@pytest.mark.parametrize("first", ["delete", "shutdown", "terminate"])
async def test_three_triggers_at_the_same_instant(first: str, autojump_clock: Clock) -> None:
    trace = Trace()
    holder: list[JobContext] = []

    async def entrypoint(ctx: JobContext) -> None:
        holder.append(ctx)
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        await trio.sleep_forever()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            await wait_for_agent(sim, alice)
            # the job's side of the join too (connect() itself may not have returned)
            await wait_until(lambda: holder[0].room.isconnected())
            triggers = {
                "delete": lambda: sim.server.rooms.delete(sim.room),
                "shutdown": lambda: holder[0].shutdown("hung up"),
                "terminate": sim.terminate,
            }
            for name in [first, *(k for k in triggers if k != first)]:
                triggers[name]()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    # the room deletion reaches the job through the room link, later than the others
    expected = "job terminated by the server" if first == "terminate" else "hung up"
    assert result.outcome.reason == expected
    assert result.outcome.ok, result.outcome
    assert trace.args("callback") == [(expected,)]
    assert result.kinds().count("shutdown") == 1
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert phases == ["cancel_work", "report", "disconnect", "callbacks"]


async def test_a_participant_joining_as_the_job_shuts_down_gets_no_task(
    autojump_clock: Clock,
) -> None:
    trace = Trace()

    async def per_participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("participant_task", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(per_participant)
        # a user handler runs before the job's own (registered at connect)
        ctx.room.on("participant_connected", lambda ev: ctx.shutdown("someone came"))
        await ctx.connect()
        await trio.sleep_forever()

    async def script(sim: Simulation) -> None:
        await trio.sleep(1)
        async with sim.participant("alice"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "someone came"
    assert trace.labels() == []


# --- delete_room_on_close -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["never_connects", "shutdown_while_connecting"])
async def test_delete_room_on_close_deletes_a_room_the_job_never_joined(
    how: str, autojump_clock: Clock
) -> None:
    """SPEC 3.4: "delete the room if configured".  The job's room exists whether
    or not the agent joined it (an unanswered call): it was not deleted."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.delete_room_on_close = True
        ctx.add_shutdown_callback(lambda: trace.add("callback"))
        if how == "never_connects":
            await trio.sleep(1)
            ctx.shutdown("nobody answered")
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ctx.connect)
                await trio.sleep(1)
                ctx.shutdown("nobody answered")
                await trio.sleep_forever()

    async with open_local_server() as srv:
        if how == "shutdown_while_connecting":
            srv.signal = _SlowSignalHub(srv.rooms, api_key=srv.api_key, api_secret=srv.api_secret)
        async with trio.open_nursery() as nursery:

            async def caller(task_status: trio.TaskStatus[None]) -> None:
                async with srv.simulated_participant("caller", room="r") as p:
                    task_status.started()
                    trace.add("caller_out", await p.room.wait_disconnected())

            if how == "never_connects":
                await nursery.start(caller)
            result = await simulate_job(entrypoint, server=srv, room="r")
            room_left = srv.rooms.get("r")
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert result.outcome.ok, result.outcome
    assert phases == ["cancel_work", "report", "delete_room", "callbacks", "close_api"]
    assert room_left is None
    assert "connected" not in result.kinds()
    if how == "never_connects":
        assert trace.args("caller_out") == [(rtc.DisconnectReason.ROOM_DELETED,)]


class _SlowSignalHub(SignalHub):
    """The stand-in's /rtc/sim endpoint, answering a join only after a minute."""

    async def serve(self, ws: WebSocket) -> None:
        await trio.sleep(60)
        await super().serve(ws)


# --- teardown steps cut at the deadline -----------------------------------------------------


async def test_a_callback_whose_cleanup_fails_when_cut_at_the_deadline(
    autojump_clock: Clock,
) -> None:
    """Cut at the deadline, a callback with a nursery of its own raises its
    cleanup's error mixed with Cancelled.  That group escaped the callback
    step and crashed the job runner (simulate_job raised); it is a callback
    error like the others: reported, the teardown goes on."""
    trace = Trace()

    async def flush() -> None:
        async def upload() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("upload cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            await trio.sleep_forever()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(flush)
        ctx.add_shutdown_callback(lambda: trace.add("sync_callback"))

        async def slow_callback() -> None:
            await trio.sleep(1)
            trace.add("slow_callback")

        ctx.add_shutdown_callback(slow_callback)
        await ctx.connect()
        await trio.sleep(1)
        ctx.shutdown("done")

    start = trio.current_time()
    result = await simulate_job(entrypoint, shutdown_process_timeout=2)
    outcome = result.outcome
    assert trio.current_time() - start == pytest.approx(3)
    assert outcome.kind is OutcomeKind.CLEAN  # reported before the callbacks ran
    assert outcome.reason == "done"
    assert len(outcome.teardown_errors) == 2
    assert "RuntimeError: upload cleanup failed" in outcome.teardown_errors[0]
    assert outcome.teardown_errors[1].startswith("callbacks: was cut off at the deadline")
    assert trace.labels() == ["sync_callback", "slow_callback"]
    (failed,) = result.of_kind("callback_failed")
    assert failed.args[0].endswith("<locals>.flush")
    phases = [e.args[0] for e in result.of_kind("phase_done")]
    assert phases == ["cancel_work", "report", "disconnect", "callbacks"]


# --- the control line ---------------------------------------------------------------------


async def test_a_finished_job_is_no_longer_a_listener_of_its_control(
    autojump_clock: Clock,
) -> None:
    """JobControl kept the listener of a finished job: later requests still
    called into it, and the control (which its runner keeps) kept the whole
    context alive."""
    refs: list[weakref.ref[JobContext]] = []

    async def entrypoint(ctx: JobContext) -> None:
        refs.append(weakref.ref(ctx))
        ctx.shutdown("done")

    async with open_local_server() as srv:
        control = JobControl()
        outcome = await run_job(job_info(srv, "r"), entrypoint, control)
        assert outcome.ok, outcome
        control.request_shutdown("late termination")
        control.notify_draining()
        gc.collect()
        assert refs[0]() is None
        assert control.outcome is outcome


async def test_unsubscribe_stops_the_calls_and_tolerates_unknown_listeners() -> None:
    control = JobControl()
    calls: list[str] = []

    def listener() -> None:
        calls.append("called")

    control.subscribe(listener)
    control.notify_draining()
    control.unsubscribe(listener)
    control.unsubscribe(listener)  # not subscribed any more: no error
    control.request_shutdown("x")
    assert calls == ["called"]


# --- connect retried ----------------------------------------------------------------------


async def test_a_retried_connect_installs_the_room_handlers_once(autojump_clock: Clock) -> None:
    """Each connect attempt registered the job's room handlers again; after a
    cancelled attempt every join and leave was handled twice."""
    trace = Trace()

    async def per_participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("participant_task", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(per_participant)
        with trio.move_on_after(1):
            await ctx.connect()
        trace.add("first_attempt", ctx.room.isconnected())
        await ctx.connect()
        trace.add("second_attempt", ctx.room.isconnected())
        for name in ("participant_connected", "participant_disconnected", "track_published"):
            trace.add(name, len(ctx.room._handlers.get(name, [])))
        await trio.sleep(10)
        ctx.shutdown()

    async with open_local_server() as srv:
        srv.signal = _SecondTimeLuckyHub(srv.rooms, api_key=srv.api_key, api_secret=srv.api_secret)

        async def script(sim: Simulation) -> None:
            await trio.sleep(5)
            async with sim.participant("alice"):
                await trio.sleep_forever()

        result = await simulate_job(entrypoint, server=srv, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.args("first_attempt") == [(False,)]
    assert trace.args("second_attempt") == [(True,)]
    assert trace.args("participant_connected") == [(1,)]
    assert trace.args("participant_disconnected") == [(1,)]
    assert trace.args("track_published") == [(1,)]
    assert trace.args("participant_task") == [("alice",)]


class _SecondTimeLuckyHub(SignalHub):
    """Answers the first join a minute late, the next ones at once."""

    served = 0

    async def serve(self, ws: WebSocket) -> None:
        type(self).served += 1
        if type(self).served == 1:
            await trio.sleep(60)
        await super().serve(ws)
