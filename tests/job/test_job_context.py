"""JobContext members: room, job, proc, worker_id, api, get_job_context, room events."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
from livekit.protocol import room as room_pb

from tests.job.helpers import Clock, Trace, capture_logs, job_info, wait_for_agent
from trio_agents import AutoSubscribe, JobContext, get_job_context, rtc
from trio_agents._job._context import CONNECT_WARNING_DELAY, run_job
from trio_agents._job._control import JobControl
from trio_agents.testing import Simulation, open_local_server, simulate_job


async def test_job_proc_worker_and_room_before_connect(autojump_clock: Clock) -> None:
    seen: dict[str, Any] = {}

    async def entrypoint(ctx: JobContext) -> None:
        seen["job"] = ctx.job
        seen["userdata"] = ctx.proc.userdata
        seen["pid"] = ctx.proc.pid
        seen["worker_id"] = ctx.worker_id
        seen["fake"] = ctx.is_fake_job()
        seen["room_type"] = type(ctx.room)
        seen["connected_at_start"] = ctx.room.isconnected()
        await ctx.connect()
        seen["connected"] = ctx.room.isconnected()
        seen["room_name"] = ctx.room.name
        seen["room_sid"] = ctx.room.sid
        seen["identity"] = ctx.room.local_participant.identity
        seen["kind"] = ctx.room.local_participant.kind
        ctx.shutdown("done")

    result = await simulate_job(
        entrypoint,
        room="members-room",
        metadata='{"lang": "fr"}',
        userdata={"model": "tiny"},
    )
    assert result.outcome.ok, result.outcome
    job = seen["job"]
    assert job is result.job or job == result.job
    assert job.id.startswith("AJ_")
    assert job.metadata == '{"lang": "fr"}'
    assert job.room.name == "members-room"
    assert job.room.sid.startswith("RM_")
    assert seen["userdata"] == {"model": "tiny"}
    assert isinstance(seen["pid"], int)
    assert seen["worker_id"] == "AW_simulated"
    assert seen["fake"] is False
    assert seen["room_type"] is rtc.Room
    assert seen["connected_at_start"] is False
    assert seen["connected"] is True
    assert seen["room_name"] == "members-room"
    assert seen["room_sid"] == job.room.sid
    assert seen["identity"] == f"agent-{job.id}"
    assert seen["kind"] == rtc.ParticipantKind.AGENT


@pytest.mark.parametrize(
    "metadata",
    ["", "not json {", "\u2603 \x00 \U0001f600", "x" * 100_000, '{"a": [1, 2, {"b": null}]}'],
)
async def test_any_metadata_string_reaches_the_job_unchanged(
    metadata: str, autojump_clock: Clock
) -> None:
    got: list[str] = []

    async def entrypoint(ctx: JobContext) -> None:
        got.append(ctx.job.metadata)
        ctx.shutdown()

    result = await simulate_job(entrypoint, metadata=metadata)
    assert result.outcome.ok
    assert got == [metadata]


async def test_userdata_is_the_process_dict_and_mutable(autojump_clock: Clock) -> None:
    async def entrypoint(ctx: JobContext) -> None:
        ctx.proc.userdata["seen"] = True
        assert get_job_context().proc.userdata is ctx.proc.userdata
        ctx.shutdown()

    result = await simulate_job(entrypoint, userdata={"vad": "loaded"})
    assert result.outcome.ok, result.outcome


async def test_api_reaches_the_server_and_is_closed_at_teardown(autojump_clock: Clock) -> None:
    listed: list[str] = []
    ctxs: list[JobContext] = []

    async def entrypoint(ctx: JobContext) -> None:
        ctxs.append(ctx)
        assert ctx.api is ctx.api  # one client per job
        rooms = await ctx.api.room.list_rooms(room_pb.ListRoomsRequest())
        listed.extend(r.name for r in rooms.rooms)
        await ctx.api.room.update_room_metadata(
            room_pb.UpdateRoomMetadataRequest(room=ctx.job.room.name, metadata="via api")
        )
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        sim.server.rooms.create("another-room")

    result = await simulate_job(entrypoint, script=script, room="api-room")
    assert result.outcome.ok, result.outcome
    assert "api-room" in listed
    assert "close_api" in [e.args[0] for e in result.of_kind("phase_done")]
    with pytest.raises(RuntimeError, match="closed"):
        await ctxs[0].api.room.list_rooms(room_pb.ListRoomsRequest())


async def test_get_job_context_from_child_tasks_and_participant_tasks(
    autojump_clock: Clock,
) -> None:
    found: list[tuple[str, bool]] = []

    async def child(ctx: JobContext) -> None:
        found.append(("child", get_job_context() is ctx))

    async def grandchild_spawner(ctx: JobContext) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, ctx)

    async def per_participant(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
        found.append(("participant", get_job_context() is ctx))

    def callback() -> None:
        found.append(("callback", get_job_context() is ctxs[0]))

    ctxs: list[JobContext] = []

    async def entrypoint(ctx: JobContext) -> None:
        ctxs.append(ctx)
        found.append(("entrypoint", get_job_context() is ctx))
        ctx.add_participant_entrypoint(per_participant)
        ctx.add_shutdown_callback(callback)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(grandchild_spawner, ctx)
        await ctx.connect()

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(1)
        sim.terminate()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok, result.outcome
    assert sorted(found) == [
        ("callback", True),
        ("child", True),
        ("entrypoint", True),
        ("participant", True),
    ]
    with pytest.raises(RuntimeError, match="outside a job"):
        get_job_context()


async def test_get_job_context_outside_any_job_raises() -> None:
    with pytest.raises(RuntimeError, match="no job is running"):
        get_job_context()


async def test_two_concurrent_jobs_each_see_their_own_context(autojump_clock: Clock) -> None:
    seen: dict[str, str] = {}

    async def entrypoint(ctx: JobContext) -> None:
        await trio.sleep(1)
        seen[ctx.job.room.name] = get_job_context().job.room.name
        ctx.shutdown()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: simulate_job(entrypoint, room="room-a"))
        nursery.start_soon(lambda: simulate_job(entrypoint, room="room-b"))
    assert seen == {"room-a": "room-a", "room-b": "room-b"}


async def test_room_metadata_and_participant_changes_reach_the_entrypoint(
    autojump_clock: Clock,
) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        handler_events: list[str] = []
        ctx.room.on("room_metadata_changed", lambda ev: handler_events.append(ev.new))
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
        async with ctx.room.events(
            rtc.RoomMetadataChanged,
            rtc.ParticipantAttributesChanged,
            rtc.ParticipantMetadataChanged,
        ) as events:
            async for ev in events:
                if isinstance(ev, rtc.RoomMetadataChanged):
                    trace.add("room_metadata", ev.old, ev.new)
                    assert ctx.room.metadata == ev.new
                elif isinstance(ev, rtc.ParticipantAttributesChanged):
                    trace.add(
                        "attributes",
                        ev.participant.identity,
                        dict(ev.changed_attributes),
                        dict(ev.participant.attributes),
                    )
                else:
                    trace.add("participant_metadata", ev.participant.identity, ev.new)
                if len(trace.items) == 4:
                    trace.add("handler", list(handler_events))
                    ctx.shutdown("seen everything")

    async def script(sim: Simulation) -> None:
        async with sim.participant("alice", attributes={"a": "1"}) as alice:
            await wait_for_agent(sim, alice)
            room = sim.server.rooms.get(sim.room)
            assert room is not None
            sim.server.rooms.update_metadata(room, "topic: weather")
            await alice.set_attributes({"a": "2", "b": "x"})
            await alice.set_metadata("alice-md")
            await alice.set_attributes({"b": ""})
            await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.reason == "seen everything", result.outcome
    assert trace.items[0][1:] == ("room_metadata", ("", "topic: weather"))
    assert trace.items[1][1:] == (
        "attributes",
        ("alice", {"a": "2", "b": "x"}, {"a": "2", "b": "x"}),
    )
    assert trace.items[2][1:] == ("participant_metadata", ("alice", "alice-md"))
    assert trace.items[3][1:] == ("attributes", ("alice", {"b": ""}, {"a": "2"}))
    assert trace.args("handler") == [(["topic: weather"],)]


async def test_the_room_is_a_live_view_of_participants(autojump_clock: Clock) -> None:
    snapshots: list[list[str]] = []

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        for _ in range(3):
            snapshots.append(sorted(ctx.room.remote_participants))
            await trio.sleep(2)
        ctx.shutdown()

    async def script(sim: Simulation) -> None:
        await trio.sleep(1)
        async with sim.participant("alice"):
            await trio.sleep(2)
        await trio.sleep_forever()

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok
    assert snapshots == [[], ["alice"], []]


async def test_a_fake_job_neither_deletes_rooms_nor_warns(autojump_clock: Clock) -> None:
    trace = Trace()

    async def entrypoint(ctx: JobContext) -> None:
        trace.add("fake", ctx.is_fake_job())
        await ctx.delete_room()  # no server to ask: a no-op
        await trio.sleep(CONNECT_WARNING_DELAY * 2)
        ctx.shutdown()

    async with open_local_server() as srv:
        info = attrs.evolve(job_info(srv, "fake-room"), fake_job=True)
        with capture_logs("trio_agents.job") as logs:
            outcome = await run_job(info, entrypoint, JobControl())
        assert srv.rooms.get("fake-room") is not None
    assert outcome.ok
    assert trace.args("fake") == [(True,)]
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []
