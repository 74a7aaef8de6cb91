"""The job's promise on its edges: the outcome is reported before the room is
left, a step that ends after the deadline is a deadline hit by the clock,
hooks added late run or are refused, and user BaseExceptions surface as
themselves."""

from __future__ import annotations

import pytest
import trio

from tests.job.helpers import Clock, Trace, job_info, wait_until
from trio_agents import JobContext, rtc
from trio_agents._job._context import run_job
from trio_agents._job._control import JobControl
from trio_agents._types import JobOutcome, OutcomeKind
from trio_agents.testing import open_local_server, simulate_job


async def test_the_outcome_is_reported_while_the_agent_is_still_in_the_room(
    autojump_clock: Clock,
) -> None:
    """Row 6: decided once the work unwound, reported before the room is left.

    The runner acknowledges the report 2 s after it came: the job leaves its
    room only after that (a LiveKit server fails a job whose agent leaves first).
    """
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: trace.add("hook"))
        await ctx.connect()
        try:
            await trio.sleep(1)
            ctx.shutdown("done")
            await trio.sleep_forever()
        finally:
            trace.add("work_unwound")

    async with open_local_server() as srv, trio.open_nursery() as nursery:
        info = job_info(srv, "report-room")
        identity = info.accept_arguments.identity
        control = JobControl()

        def agent_in_room() -> bool:
            room = srv.rooms.get("report-room")
            return room is not None and identity in room.participants

        async def deliver_later() -> None:
            await trio.sleep(2)
            trace.add("delivered", agent_in_room())
            control.mark_delivered()

        def on_report(outcome: JobOutcome) -> None:
            trace.add("reported", outcome.kind, agent_in_room())
            nursery.start_soon(deliver_later)

        control.on_report(on_report)
        outcome = await run_job(info, entrypoint, control, shutdown_process_timeout=5)
        trace.add("ended", agent_in_room())
    assert trace.labels() == ["work_unwound", "reported", "delivered", "hook", "ended"]
    assert trace.args("reported") == [(OutcomeKind.CLEAN, True)]
    assert trace.args("delivered") == [(True,)]  # the job waited for the delivery
    assert trace.args("ended") == [(False,)]
    assert outcome == control.reported
    assert outcome.kind is OutcomeKind.CLEAN


async def test_an_undelivered_report_holds_the_room_only_until_the_deadline(
    autojump_clock: Clock,
) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        ctx.shutdown("done")

    async with open_local_server() as srv:
        info = job_info(srv, "undelivered")
        control = JobControl()
        reports: list[JobOutcome] = []
        control.on_report(reports.append)  # and never marks it delivered
        start = trio.current_time()
        outcome = await run_job(info, entrypoint, control, shutdown_process_timeout=3)
        assert trio.current_time() - start == pytest.approx(3)

        def agent_gone() -> bool:
            room = srv.rooms.get("undelivered")
            return room is None or info.accept_arguments.identity not in room.participants

        # (cut at the deadline, the link is closed without a goodbye: the
        # stand-in notices the closed connection a moment later)
        await wait_until(agent_gone)
    assert len(reports) == 1
    assert reports[0].kind is OutcomeKind.CLEAN
    assert outcome.teardown_errors[0].startswith("report: was cut off at the deadline")


async def test_an_entrypoint_cleanup_blocking_past_the_deadline_is_a_deadline_hit(
    autojump_clock: Clock,
) -> None:
    """Row 5: sync code (a jump of the clock here) ends the step after the deadline:
    it was never cancelled, yet the job is late, and says so."""

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        try:
            ctx.shutdown("done")
            await trio.sleep_forever()
        finally:
            autojump_clock.jump(5)  # a time.sleep(5) of the trio thread

    result = await simulate_job(entrypoint, shutdown_process_timeout=2)
    assert result.outcome.kind is OutcomeKind.DEADLINE
    assert "cancel_work" in result.outcome.error
    assert [e.args[0] for e in result.of_kind("reported")] == ["deadline"]


async def test_a_sync_hook_past_the_deadline_is_kept_in_the_outcome(
    autojump_clock: Clock,
) -> None:
    """Row 5, after the report: the status sent stands, the late hook is in the outcome."""

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: autojump_clock.jump(5))
        await ctx.connect()
        ctx.shutdown("done")

    result = await simulate_job(entrypoint, shutdown_process_timeout=2)
    assert result.outcome.kind is OutcomeKind.CLEAN
    assert result.outcome.teardown_errors == (
        "callbacks: ended after the deadline (shutdown_process_timeout=2s)",
    )


async def test_a_hook_added_by_a_hook_runs(autojump_clock: Clock) -> None:
    """Row 10: it ran nowhere before (silently cut)."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def second() -> None:
            await trio.sleep(1)
            trace.add("second")

        def first() -> None:
            trace.add("first")
            ctx.add_shutdown_callback(second)

        ctx.add_shutdown_callback(first)
        await ctx.connect()
        ctx.shutdown("done")

    result = await simulate_job(entrypoint, shutdown_process_timeout=5)
    assert trace.labels() == ["first", "second"]
    assert result.outcome.ok
    assert result.of_kind("callback_cut") == []


async def test_a_hook_added_after_the_hooks_ran_is_refused(autojump_clock: Clock) -> None:
    errors: list[BaseException] = []
    contexts: list[JobContext] = []

    async def entrypoint(ctx: JobContext) -> None:
        contexts.append(ctx)
        ctx.add_shutdown_callback(lambda: None)
        await ctx.connect()
        ctx.shutdown("done")

    await simulate_job(entrypoint)
    try:
        contexts[0].add_shutdown_callback(lambda: None)
    except RuntimeError as exc:
        errors.append(exc)
    assert len(errors) == 1
    assert "already run" in str(errors[0])


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_a_base_exception_of_a_participant_task_surfaces_as_itself(
    exc_type: type[BaseException], autojump_clock: Clock
) -> None:
    """Row 10: it reached simulate_job's caller four groups deep."""
    trace = Trace()

    async def task(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await trio.sleep(1)
        raise exc_type()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("hook", reason))
        ctx.add_participant_entrypoint(task)
        await ctx.connect()

    async def script(sim: object) -> None:
        from trio_agents.testing import Simulation

        assert isinstance(sim, Simulation)
        async with sim.participant("alice"):
            await trio.sleep_forever()

    with pytest.raises(exc_type) as raised:
        await simulate_job(entrypoint, script=script)
    assert type(raised.value) is exc_type
    assert trace.args("hook") == [(f"entrypoint raised {exc_type.__name__}",)]



async def test_leaving_the_room_reads_the_job_deadline_not_a_clock_of_its_own() -> None:
    """Row 3: cut at the deadline, the room link's shielded close used its own 2 s
    (the websocket close waited for a reader cancelled with it): a 0.5 s budget
    ended 2.5 s after shutdown.  Real TCP and the real clock (the close is real
    socket I/O); the job's own shielded cleanup takes 0.6 s."""
    import attrs

    budget = 0.5
    marks: dict[str, float] = {}

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        try:
            marks["shutdown"] = trio.current_time()
            ctx.shutdown("done")
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(budget + 0.1)

    async with open_local_server(port=0) as srv:
        info = job_info(srv, "over-tcp")
        info = attrs.evolve(info, url=srv.url.replace("ws://", "sim+ws://", 1))
        with trio.fail_after(30):
            outcome = await run_job(info, entrypoint, JobControl(), shutdown_process_timeout=budget)
        elapsed = trio.current_time() - marks["shutdown"]

        def agent_gone() -> bool:
            room = srv.rooms.get("over-tcp")
            return room is None or info.accept_arguments.identity not in room.participants

        await wait_until(agent_gone)  # (closed without a goodbye: noticed a moment later)
    assert outcome.kind is OutcomeKind.DEADLINE
    assert elapsed < budget + 1.0, f"run_job returned {elapsed:.2f} s after shutdown"
