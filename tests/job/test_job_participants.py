"""add_participant_entrypoint and wait_for_participant."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.job.helpers import Clock, Trace, capture_logs
from trio_agents import DEFAULT_PARTICIPANT_KINDS, JobContext, rtc
from trio_agents._job._context import JobShutdownError
from trio_agents.testing import Simulation, simulate_job

# --- add_participant_entrypoint ----------------------------------------------------------


async def test_runs_for_present_at_connect_and_later_joiners(autojump_clock: Clock) -> None:
    trace = Trace()
    alice_in = trio.Event()

    async def greet(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("greet", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(greet)
        await alice_in.wait()
        await ctx.connect()
        trace.add("connected", sorted(ctx.room.remote_participants))

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            alice_in.set()
            await trio.sleep(1)
            async with sim.participant("bob"):
                await trio.sleep(1)
        sim.terminate()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.args("connected") == [(["alice"],)]
    assert sorted(trace.args("greet")) == [("alice",), ("bob",)]
    assert trace.times("greet") == [0.0, 1.0]


async def test_registered_after_connect_runs_only_for_later_joiners(autojump_clock: Clock) -> None:
    trace = Trace()
    alice_in = trio.Event()

    async def early(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("early", p.identity)

    async def late(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("late", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(early)
        await alice_in.wait()
        await ctx.connect()
        ctx.add_participant_entrypoint(late)

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            alice_in.set()
            await trio.sleep(1)
            async with sim.participant("bob"):
                await trio.sleep(1)
        sim.terminate()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert sorted(trace.args("early")) == [("alice",), ("bob",)]
    assert trace.args("late") == [("bob",)]


@pytest.mark.parametrize(
    ("kind", "triggers"),
    [
        ("standard", True),
        ("sip", True),
        ("connector", True),
        ("agent", False),
        ("egress", False),
        ("ingress", False),
    ],
)
async def test_default_kinds_filter(kind: str, triggers: bool, autojump_clock: Clock) -> None:
    trace = Trace()

    async def on_participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("ran", p.identity, p.kind)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(on_participant)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("someone", kind=kind):
            await trio.sleep(1)
            sim.terminate()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    if triggers:
        assert trace.args("ran") == [("someone", rtc.ParticipantKind[kind.upper()])]
    else:
        assert trace.args("ran") == []


async def test_explicit_kinds(autojump_clock: Clock) -> None:
    trace = Trace()

    async def agents_only(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("agent", p.identity)

    async def sip_or_egress(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("sip_or_egress", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(agents_only, kind=rtc.ParticipantKind.AGENT)
        ctx.add_participant_entrypoint(
            sip_or_egress, kind=[rtc.ParticipantKind.SIP, rtc.ParticipantKind.EGRESS]
        )
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with (
            sim.participant("helper-agent", kind="agent"),
            sim.participant("phone", kind="sip"),
            sim.participant("recorder", kind="egress"),
            sim.participant("alice"),
        ):
            await trio.sleep(1)
            sim.terminate()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.args("agent") == [("helper-agent",)]
    assert sorted(trace.args("sip_or_egress")) == [("phone",), ("recorder",)]


async def test_registration_errors(autojump_clock: Clock) -> None:
    errors: list[str] = []

    async def on_participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        pass

    def not_async(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        pass

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(on_participant)
        with pytest.raises(ValueError, match="already registered") as dup:
            ctx.add_participant_entrypoint(on_participant)
        errors.append(str(dup.value))
        with pytest.raises(ValueError, match="already registered"):
            ctx.add_participant_entrypoint(on_participant, kind=rtc.ParticipantKind.AGENT)
        with pytest.raises(TypeError, match="async function"):
            ctx.add_participant_entrypoint(not_async)  # type: ignore[arg-type]

        async def other(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
            pass

        with pytest.raises(ValueError, match="kind"):
            ctx.add_participant_entrypoint(other, kind=[])
        for bad in ("sip", None, 1.0, True, [rtc.ParticipantKind.SIP, "agent"]):
            with pytest.raises(TypeError, match="kind must be a ParticipantKind"):
                ctx.add_participant_entrypoint(other, kind=bad)  # type: ignore[arg-type]
        # a generator of kinds is fine (read once)
        ctx.add_participant_entrypoint(other, kind=(k for k in DEFAULT_PARTICIPANT_KINDS))
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome
    assert "on_participant" in errors[0]


async def test_entrypoints_run_concurrently(autojump_clock: Clock) -> None:
    """Two entrypoints per participant, two participants: all four run at once."""
    trace = Trace()
    running = 0
    all_in = trio.Event()

    async def one(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        nonlocal running
        running += 1
        if running == 4:
            all_in.set()
        await all_in.wait()  # deadlocks unless every task runs concurrently
        trace.add("one", p.identity)

    async def two(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await one(ctx, p)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(one)
        ctx.add_participant_entrypoint(two)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"), sim.participant("bob"):
            await trio.sleep(5)
        sim.terminate()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert sorted(trace.args("one")) == [("alice",), ("alice",), ("bob",), ("bob",)]
    assert set(trace.times("one")) == {0.0}


async def test_leaving_cancels_the_task_and_its_finally_runs(autojump_clock: Clock) -> None:
    trace = Trace()

    async def serve(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("start", p.identity)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            trace.add("cancelled", p.identity, ctx.shutting_down.is_set())
            raise
        finally:
            trace.add("finally", p.identity)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(serve)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("bob"):
            async with sim.participant("alice"):
                await trio.sleep(2)
            await trio.sleep(3)  # the job goes on with bob
            sim.terminate()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "job terminated by the server"
    finals = dict(zip([a[0] for a in trace.args("finally")], trace.times("finally"), strict=True))
    assert finals == {"alice": 2.0, "bob": 5.0}
    # alice's task was cancelled by her leaving (the job was not shutting down)
    assert ("alice", False) in trace.args("cancelled")
    assert ("bob", True) in trace.args("cancelled")


async def test_a_rejoin_is_a_new_participant(autojump_clock: Clock) -> None:
    trace = Trace()

    async def serve(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("start", p.identity, p.sid)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(serve)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("keep"):
            for _ in range(2):
                async with sim.participant("alice"):
                    await trio.sleep(1)
            sim.terminate()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    alice_sids = [sid for identity, sid in trace.args("start") if identity == "alice"]
    assert len(alice_sids) == 2
    assert alice_sids[0] != alice_sids[1]


@pytest.mark.parametrize("how", ["plain", "nursery_group", "cleanup_after_leave"])
async def test_an_error_in_one_is_logged_with_identity_and_job_and_others_go_on(
    how: str, autojump_clock: Clock
) -> None:
    trace = Trace()

    async def failing(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        if p.identity != "alice":
            return
        if how == "plain":
            await trio.sleep(1)
            raise ValueError("alice broke it")
        if how == "nursery_group":

            async def child() -> None:
                await trio.sleep(1)
                raise ValueError("alice broke it")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                await trio.sleep_forever()
        else:
            # an error in the cleanup of a task cancelled by the participant leaving,
            # raised while a sibling is cancelled too: Cancelled + error in one group

            async def child() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise ValueError("alice broke it")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                await trio.sleep_forever()

    async def steady(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        for i in range(4):
            await trio.sleep(1)
            trace.add("tick", p.identity, i)
        await ctx.room.local_participant.send_text(f"done {p.identity}")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(failing)
        ctx.add_participant_entrypoint(steady)
        await ctx.connect()
        await trio.sleep(1)
        trace.add("entrypoint_alive")

    async def script(sim: Simulation) -> None:
        async with sim.participant("bob") as bob:
            async with sim.participant("alice") as alice:
                if how == "cleanup_after_leave":
                    await trio.sleep(1)
                else:
                    await alice.wait_for_text(predicate=lambda t: t.text == "done alice")
            await bob.wait_for_text(predicate=lambda t: t.text == "done bob")
            sim.terminate()
            await trio.sleep_forever()

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome  # a participant task's error does not fail the job
    assert result.outcome.reason == "job terminated by the server"
    assert "entrypoint_alive" in trace.labels()
    assert ("bob", 3) in trace.args("tick")
    if how != "cleanup_after_leave":
        assert ("alice", 3) in trace.args("tick")
    failures = result.of_kind("participant_entrypoint_failed")
    assert len(failures) == 1
    assert failures[0].args[0] == "alice"
    assert "ValueError: alice broke it" in failures[0].args[1]
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "alice" in message
    assert result.job.id in message
    assert errors[0].__dict__["job_id"] == result.job.id
    assert errors[0].__dict__["participant_identity"] == "alice"
    assert errors[0].exc_info is not None


async def test_participant_tasks_outlive_a_returned_entrypoint(autojump_clock: Clock) -> None:
    trace = Trace()

    async def serve(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        await trio.sleep(10)
        trace.add("served", p.identity)
        ctx.shutdown("served")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(serve)
        await ctx.connect()
        trace.add("returned")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "served"
    assert trace.times("returned") == [0.0]
    assert trace.times("served") == [10.0]


async def test_no_participant_task_starts_once_shutdown_began(autojump_clock: Clock) -> None:
    trace = Trace()

    async def serve(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        trace.add("served", p.identity)

    async def slow_callback() -> None:
        await trio.sleep(3)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(serve)
        ctx.add_shutdown_callback(slow_callback)
        await ctx.connect()
        await trio.sleep(1)
        ctx.shutdown("early")

    async def script(sim: Simulation) -> None:
        await trio.sleep(2)  # during teardown (the callback is still running)
        async with sim.participant("late"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.args("served") == []


# --- wait_for_participant ----------------------------------------------------------------


async def test_wait_for_participant_returns_a_present_one_at_once(autojump_clock: Clock) -> None:
    trace = Trace()
    alice_in = trio.Event()

    async def entrypoint(ctx: JobContext) -> None:
        await alice_in.wait()
        start = trio.current_time()
        p = await ctx.wait_for_participant()  # connects too
        trace.add("got", p.identity, trio.current_time() - start, ctx.room.isconnected())
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            alice_in.set()
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert trace.args("got") == [("alice", 0.0, True)]


async def test_wait_for_participant_waits_for_a_later_joiner(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        p = await ctx.wait_for_participant()
        trace.add("got", p.identity)
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        await trio.sleep(7)
        async with sim.participant("alice"):
            await trio.sleep_forever()

    await simulate_job(entrypoint, script=script)
    assert trace.args("got") == [("alice",)]
    assert trace.times("got") == [7.0]


async def test_wait_for_participant_identity_filter(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        p = await ctx.wait_for_participant(identity="bob")
        trace.add("got", p.identity, sorted(ctx.room.remote_participants))
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(2)
            async with sim.participant("bob"):
                await trio.sleep_forever()

    await simulate_job(entrypoint, script=script)
    assert trace.args("got") == [("bob", ["alice", "bob"])]
    assert trace.times("got") == [2.0]


async def test_wait_for_participant_kind_filter(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def wait_default() -> None:
            p = await ctx.wait_for_participant()
            trace.add("default", p.identity)

        async def wait_agent() -> None:
            p = await ctx.wait_for_participant(kind=rtc.ParticipantKind.AGENT)
            trace.add("agent", p.identity)

        async def wait_sip() -> None:
            p = await ctx.wait_for_participant(kind=[rtc.ParticipantKind.SIP])
            trace.add("sip", p.identity)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_default)
            nursery.start_soon(wait_agent)
            nursery.start_soon(wait_sip)
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        async with sim.participant("other-agent", kind="agent"):
            await trio.sleep(1)
            async with sim.participant("recorder", kind="egress"):
                await trio.sleep(1)
                async with sim.participant("phone", kind="sip"):
                    await trio.sleep_forever()

    await simulate_job(entrypoint, script=script)
    assert trace.args("agent") == [("other-agent",)]
    assert trace.times("agent") == [0.0]
    # neither the agent nor the egress satisfies the default kinds; the SIP caller does
    assert trace.args("default") == [("phone",)]
    assert trace.args("sip") == [("phone",)]
    assert trace.times("default") == [2.0]
    assert rtc.ParticipantKind.SIP in DEFAULT_PARTICIPANT_KINDS


@pytest.mark.parametrize("ending", ["room_closed", "room_deleted", "shutdown", "terminate"])
async def test_wait_for_participant_raises_when_the_room_or_job_ends(
    ending: str, autojump_clock: Clock
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda reason: trace.add("callback", reason))
        await ctx.connect()
        try:
            await ctx.wait_for_participant(identity="never")
        except JobShutdownError as exc:
            trace.add("raised", str(exc))
            raise
        trace.add("returned")

    async def script(sim: Simulation) -> None:
        if ending == "room_closed":
            async with sim.participant("alice"):
                await trio.sleep(1)
            # alice left: the room closes departure_timeout (5 s) later
        elif ending == "room_deleted":
            await trio.sleep(3)
            sim.server.rooms.delete(sim.room)
        elif ending == "shutdown":
            await trio.sleep(3)
            holder[0].shutdown("caller hung up")
        else:
            await trio.sleep(3)
            sim.terminate()

    holder: list[JobContext] = []

    async def capturing(ctx: JobContext) -> None:
        holder.append(ctx)
        await entrypoint(ctx)

    result = await simulate_job(capturing, script=script, departure_timeout=5)
    assert "returned" not in trace.labels()
    assert trace.count("raised") == 1
    expected = {
        "room_closed": "room disconnected",
        "room_deleted": "room disconnected",
        "shutdown": "caller hung up",
        "terminate": "job terminated by the server",
    }[ending]
    assert expected in trace.args("raised")[0][0]
    assert trace.times("raised") == [6.0 if ending == "room_closed" else 3.0]
    assert result.outcome.reason == expected
    assert result.outcome.ok, result.outcome
    assert trace.args("callback") == [(expected,)]


async def test_wait_for_participant_when_nobody_ever_joins(autojump_clock: Clock) -> None:
    """Pain point 10: no participant, the room closes (empty timeout) -> the wait raises."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_shutdown_callback(lambda: trace.add("callback"))
        try:
            await ctx.wait_for_participant()
        except JobShutdownError:
            trace.add("raised")
            raise

    async def script(sim: Simulation) -> None:
        room = sim.server.rooms.get(sim.room)
        assert room is not None

    result = await simulate_job(entrypoint, script=script, empty_timeout=30)
    assert trace.labels() == ["raised", "callback"]
    assert trace.times("raised") == [30.0]
    assert result.outcome.reason == "room disconnected"


async def test_wait_for_participant_with_an_agent_kind(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        with trio.move_on_after(5):
            await ctx.wait_for_participant(identity="helper")  # default kinds: no agents
            trace.add("wrong")
        p = await ctx.wait_for_participant(identity="helper", kind=rtc.ParticipantKind.AGENT)
        trace.add("got", p.identity)
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        await trio.sleep(1)
        async with sim.participant("helper", kind="agent"):
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok
    assert trace.args("got") == [("helper",)]


async def test_wait_for_participant_never_returns_one_of_a_disconnected_room(
    autojump_clock: Clock,
) -> None:
    """After the room is gone, its last participants are still listed: not a match."""
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        async def late_wait() -> None:
            trace.add("listed", sorted(ctx.room.remote_participants))
            try:
                p = await ctx.wait_for_participant(identity="alice")
                trace.add("returned", p.identity)
            except JobShutdownError:
                trace.add("raised")

        ctx.add_shutdown_callback(late_wait)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(1)
            sim.server.rooms.delete(sim.room)
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "room disconnected"
    assert trace.labels() == ["listed", "raised"]


async def test_wait_for_participant_rejects_bad_arguments(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        with pytest.raises(TypeError, match="identity must be a str"):
            await ctx.wait_for_participant(identity=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="kind must be a ParticipantKind"):
            await ctx.wait_for_participant(kind="standard")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="kind"):
            await ctx.wait_for_participant(kind=())
        trace.add("connected", ctx.room.isconnected())  # rejected before connecting
        ctx.shutdown()

    result = await simulate_job(entrypoint)
    assert result.outcome.ok, result.outcome
    assert trace.args("connected") == [(False,)]
