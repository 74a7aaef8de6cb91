"""The testing kit: fake_job_context, scripts and their player, the hypothesis strategies."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_agents import JobContext, get_job_context, rtc
from trio_agents.testing import (
    DeleteRoom,
    Drain,
    Join,
    Leave,
    Script,
    SendText,
    SetAttributes,
    SetMetadata,
    SetName,
    Terminate,
    Wait,
    fake_job_context,
    open_local_server,
    run_script,
)
from trio_agents.testing import strategies as ts

# --- fake_job_context -------------------------------------------------------------


async def test_fake_job_context_is_the_current_job_inside_the_block() -> None:
    with pytest.raises(RuntimeError):
        get_job_context()
    with fake_job_context(job_id="J1", job_metadata='{"lang": "fr"}') as ctx:
        assert get_job_context() is ctx
        assert ctx.is_fake_job()
        assert ctx.job.id == "J1"
        assert ctx.job.metadata == '{"lang": "fr"}'
        assert ctx.job.room.name == "fake-room"
        assert ctx.info.accept_arguments.identity == "fake-agent"
        await ctx.connect()  # the caller owns the room: a no-op
        await ctx.delete_room()  # a fake job deletes nothing
        assert not ctx.shutting_down.is_set()
        ctx.shutdown("done")
        assert ctx.shutting_down.is_set()
        assert ctx.shutdown_reason == "done"
    with pytest.raises(RuntimeError):
        get_job_context()


async def test_fake_job_context_watches_a_room_the_test_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_server() as server:
        server.create_room("desk")
        token = server.participant_token("agent", "desk", kind="agent")
        async with rtc.connect_room(server.memory_url, token) as room:
            with fake_job_context(room=room) as ctx:
                assert ctx.job.room.name == "desk"
                async with trio.open_nursery() as nursery:
                    found: list[rtc.RemoteParticipant] = []

                    async def wait() -> None:
                        found.append(await ctx.wait_for_participant(identity="carol"))

                    nursery.start_soon(wait)
                    await trio.sleep(1)
                    assert found == []
                    async with server.simulated_participant("carol", room="desk"):
                        await trio.sleep(1)
                        assert [p.identity for p in found] == ["carol"]


# --- scripts --------------------------------------------------------------------------


def test_script_check_rejects_impossible_scripts() -> None:
    Script((Join("a"), Leave("a"), Join("a"))).check()
    with pytest.raises(ValueError, match="joins twice"):
        Script((Join("a"), Join("a"))).check()
    with pytest.raises(ValueError, match="not in the room"):
        Script((SendText("a", "hi"),)).check()
    with pytest.raises(ValueError, match="not in the room"):
        Script((Join("a"), Leave("a"), Leave("a"))).check()
    with pytest.raises(ValueError, match="kind"):
        Script((Join("a", kind="robot"),)).check()


class Recorder:
    """An agent that writes down what it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    async def entrypoint(self, ctx: JobContext) -> None:
        async def participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
            self.seen.append(("joined", p.identity))
            try:
                await trio.sleep_forever()
            finally:
                self.seen.append(("left", p.identity))

        ctx.add_participant_entrypoint(participant)
        ctx.room.on(
            "participant_attributes_changed",
            lambda ev: self.seen.append(("attributes", ev.participant.identity)),
        )
        ctx.room.on(
            "participant_metadata_changed",
            lambda ev: self.seen.append(("metadata", ev.participant.identity)),
        )
        ctx.room.on(
            "participant_name_changed",
            lambda ev: self.seen.append(("name", ev.participant.identity)),
        )
        ctx.room.on(
            "text_received",
            lambda ev: self.seen.append(("text", ev.participant.identity, ev.text)),
        )
        await ctx.connect()
        await trio.sleep_forever()


def test_run_script_plays_every_step_in_order() -> None:
    agent = Recorder()
    script = Script(
        (
            Join("a", attributes={"x": "1"}),
            Join("b"),
            SetAttributes("a", {"x": "2"}),
            SetMetadata("b", "m"),
            SetName("a", "Anna"),
            SendText("b", "hello"),
            Wait(5),
            Leave("a"),  # the first to join leaves while b stays
            SendText("b", "still here"),
        )
    )
    result = run_script(agent.entrypoint, script, departure_timeout=2)
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "room disconnected"
    assert agent.seen == [
        ("joined", "a"),
        ("joined", "b"),
        ("attributes", "a"),
        ("metadata", "b"),
        ("name", "a"),
        ("text", "b", "hello"),
        ("left", "a"),
        ("text", "b", "still here"),
        ("left", "b"),  # everyone still present leaves at the end
    ]
    # the room closed departure_timeout after the last one left, after the wait
    assert result.of_kind("shutdown")[0].time >= 5 + 2


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [(Terminate(), "job terminated by the server"), (DeleteRoom(), "room disconnected")],
)
def test_a_trigger_ends_the_job_while_people_are_present(trigger: object, reason: str) -> None:
    agent = Recorder()
    script = Script((Join("a"), Wait(1)), trigger=trigger)  # type: ignore[arg-type]
    result = run_script(agent.entrypoint, script, departure_timeout=100)
    assert result.outcome.reason == reason
    assert result.of_kind("shutdown")[0].time < 100


def test_drain_sets_shutting_down_and_the_job_goes_on() -> None:
    seen: list[bool] = []

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        await ctx.shutting_down.wait()
        seen.append(ctx.shutdown_reason is None)

    result = run_script(entrypoint, Script((Join("a"),), trigger=Drain()), departure_timeout=3)
    assert seen == [True]
    assert result.outcome.reason == "room disconnected"


def test_run_script_bounds_a_job_that_never_ends() -> None:
    async def entrypoint(ctx: JobContext) -> None:
        await trio.sleep_forever()  # never connects: no room event can end it

    with pytest.raises(trio.TooSlowError):
        run_script(entrypoint, Script(), max_time=50)


# --- strategies -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(ts.scripts(max_steps=20, kinds=("standard", "agent"), pool=("a", "b")))
def test_generated_scripts_are_valid(script: Script) -> None:
    script.check()
    assert len(script.steps) <= 20
    assert set(script.identities()) <= {"a", "b"}
    for step in script.steps:
        if isinstance(step, Join):
            assert step.kind in ("standard", "agent")


@settings(max_examples=20, deadline=None)
@given(ts.scripts(max_steps=6, triggers=st.none()))
def test_any_script_runs_to_a_clean_end(script: Script) -> None:
    agent = Recorder()
    # longer than all the script's waits: the room cannot close between two
    # visits (then the job would end, and later joiners meet no agent)
    result = run_script(agent.entrypoint, script, departure_timeout=1000)
    assert result.outcome.ok, result.outcome
    assert result.outcome.reason == "room disconnected"
    joined = sorted(e[1] for e in agent.seen if e[0] == "joined")
    left = sorted(e[1] for e in agent.seen if e[0] == "left")
    assert joined == left == sorted(s.identity for s in script.steps if isinstance(s, Join))


def test_strategies_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="kinds"):
        ts.participant_kinds(("robot",))


def test_strategies_without_hypothesis_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import trio_agents.testing.strategies\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'trio-agents[testing]'" in out.stdout
    # the rest of the kit does not need hypothesis
    code = "import sys; sys.modules['hypothesis'] = None\nimport trio_agents.testing"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
