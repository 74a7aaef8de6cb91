"""Pain point 28: every record emitted in a job carries job_id, room_id and the user's fields."""

from __future__ import annotations

import logging

import trio

from tests.job.helpers import Clock, capture_logs
from trio_agents import JobContext, rtc
from trio_agents.testing import Simulation, simulate_job

user_log = logging.getLogger("my_agent")
plugin_log = logging.getLogger("some_plugin.tts")


async def test_records_from_every_task_of_the_job_carry_the_fields(autojump_clock: Clock) -> None:
    async def per_participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        user_log.info("participant task for %s", p.identity)
        try:
            await trio.sleep_forever()
        finally:
            user_log.info("participant task finally")

    async def child() -> None:
        await trio.sleep(1)
        plugin_log.info("from a child task")

        async def grandchild() -> None:
            plugin_log.info("from a grandchild task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(grandchild)

    async def entrypoint(ctx: JobContext) -> None:
        ctx.log_context_fields["call_id"] = "call-42"
        ctx.log_context_fields["tenant"] = "acme"
        user_log.info("entrypoint started")
        ctx.add_participant_entrypoint(per_participant)
        ctx.add_shutdown_callback(lambda: user_log.info("shutdown callback"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(2)
        sim.terminate()

    with capture_logs("my_agent", "some_plugin", "trio_agents.job") as logs:
        result = await simulate_job(entrypoint, script=script, room="logged-room")
        user_log.info("after the job")
    messages = [r.getMessage() for r in logs.records]
    for expected in [
        "entrypoint started",
        "from a child task",
        "from a grandchild task",
        "participant task for alice",
        "participant task finally",
        "shutdown callback",
        "job shutting down: job terminated by the server",
    ]:
        assert expected in messages, messages
    in_job = [r for r in logs.records if r.getMessage() != "after the job"]
    assert in_job
    for record in in_job:
        fields = record.__dict__
        assert fields["job_id"] == result.job.id, record.getMessage()
        assert fields["room_id"] == result.job.room.sid
        assert fields["room_id"].startswith("RM_")
        assert fields["room"] == "logged-room"
        assert fields["call_id"] == "call-42", record.getMessage()
        assert fields["tenant"] == "acme"
    (outside,) = [r for r in logs.records if r.getMessage() == "after the job"]
    assert "job_id" not in outside.__dict__
    assert "call_id" not in outside.__dict__


async def test_fields_are_read_when_the_record_is_emitted(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        user_log.info("before")
        ctx.log_context_fields["step"] = 1
        user_log.info("one")
        ctx.log_context_fields["step"] = 2
        user_log.info("two")
        ctx.shutdown()

    with capture_logs("my_agent") as logs:
        await simulate_job(entrypoint)
    steps = {r.getMessage(): r.__dict__.get("step") for r in logs.records}
    assert steps == {"before": None, "one": 1, "two": 2}


async def test_concurrent_jobs_keep_their_own_fields(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        ctx.log_context_fields["who"] = ctx.job.room.name
        for i in range(3):
            await trio.sleep(1)
            user_log.info("tick %d of %s", i, ctx.job.room.name)
        ctx.shutdown()

    with capture_logs("my_agent") as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: simulate_job(entrypoint, room="room-a"))
            nursery.start_soon(lambda: simulate_job(entrypoint, room="room-b"))
    assert len(logs.records) == 6
    for record in logs.records:
        room = record.getMessage().rsplit(" ", 1)[1]
        assert record.__dict__["who"] == room
        assert record.__dict__["room"] == room


async def test_extra_keys_may_shadow_the_job_fields(autojump_clock: Clock) -> None:
    """``extra={"room": ...}`` inside a job must not raise "Attempt to overwrite"."""

    async def entrypoint(ctx: JobContext) -> None:
        ctx.log_context_fields["call_id"] = "c1"
        user_log.info("mine", extra={"room": "the user's own", "call_id": "c2"})
        user_log.info("plain")
        ctx.shutdown()

    with capture_logs("my_agent") as logs:
        result = await simulate_job(entrypoint, room="job-room")
    assert result.outcome.ok, result.outcome
    mine, plain = logs.records
    assert mine.__dict__["room"] == "the user's own"
    assert mine.__dict__["call_id"] == "c2"
    assert mine.__dict__["job_id"] == result.job.id
    assert plain.__dict__["room"] == "job-room"
    assert plain.__dict__["call_id"] == "c1"
    formatted = logging.Formatter("%(job_id)s %(room)s %(call_id)s %(message)s").format(mine)
    assert formatted == f"{result.job.id} the user's own c2 mine"


async def test_a_user_field_named_like_a_framework_extra_is_harmless(
    autojump_clock: Clock,
) -> None:
    """The framework logs participant errors with extra={"participant_identity": ...}."""

    async def failing(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        raise ValueError("boom")

    async def entrypoint(ctx: JobContext) -> None:
        ctx.log_context_fields["participant_identity"] = "set by the user"
        ctx.add_participant_entrypoint(failing)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(1)
        sim.terminate()

    with capture_logs("trio_agents.job") as logs:
        result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    (error,) = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert error.__dict__["participant_identity"] == "alice"
    assert len(result.of_kind("participant_entrypoint_failed")) == 1
