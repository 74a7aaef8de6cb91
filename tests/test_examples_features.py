"""The feature examples (call_center, room_state, hang_up, audio_on_connect) do what
their docstrings say, each as a simulated job under the mock clock."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_agents import rtc
from trio_agents.testing import Simulation, simulate_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import audio_on_connect
import call_center
import hang_up
import room_state


@pytest.mark.parametrize(
    ("metadata", "word"), [('{"language": "fr"}', "bonjour"), ("", "hello"), ("not json", "hello")]
)
async def test_call_center_greets_callers_and_supervisors_by_kind(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    metadata: str,
    word: str,
) -> None:
    heard: dict[str, str] = {}

    async def script(sim: Simulation) -> None:
        async with sim.participant("boss") as boss:
            heard["boss"] = (await boss.wait_for_text(topic="chat")).text
            await trio.sleep(1)  # the agent still waits for a caller
            async with sim.participant("+33123456789", kind="sip") as caller:
                heard["caller"] = (await caller.wait_for_text(topic="chat")).text
                await trio.sleep(1)
            assert not caller.texts[1:], "the caller got only its own greeting"
        assert [t.text for t in boss.texts] == [heard["boss"]]

    caplog.set_level(logging.INFO, logger="call-center")
    result = await simulate_job(
        call_center.entrypoint,
        script=script,
        metadata=metadata,
        room="line-1",
        departure_timeout=1,
    )
    assert result.outcome.ok
    assert heard == {
        "boss": "you are supervising line-1",
        "caller": f"{word}, caller +33123456789",
    }
    (line,) = [r for r in caplog.records if r.getMessage() == "a caller is on the line"]
    assert line.caller == "+33123456789"  # type: ignore[attr-defined]
    assert line.job_id == result.job.id  # type: ignore[attr-defined]


async def test_room_state_sees_metadata_and_attribute_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            await trio.sleep(0.5)
            room = sim.server.rooms.get(sim.room)
            assert room is not None
            sim.server.rooms.update_metadata(room, "pricing")
            await trio.sleep(0.5)
            await alice.set_attributes({"status": "done"})
            answer = await alice.wait_for_text(topic="chat")
            assert answer.text == "thanks alice; topics so far: ['pricing']"

    result = await simulate_job(room_state.entrypoint, script=script, departure_timeout=1)
    assert result.outcome.ok


async def test_hang_up_deletes_the_room_for_everyone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice, sim.participant("bob") as bob:
            await alice.send_text("Bye", topic="chat")
            answer = await bob.wait_for_text(topic="chat", predicate=lambda t: t.text != "Bye")
            assert answer.text == "bye, hanging up"
            with trio.fail_after(5):
                for p in (alice, bob):  # both are disconnected by the deletion
                    async with p.room.events(rtc.Disconnected) as events:
                        async for _ in events:  # (ends once the room has disconnected)
                            pass
        assert sim.server.rooms.get(sim.room) is None

    result = await simulate_job(hang_up.entrypoint, script=script)
    assert result.outcome.reason == "room disconnected"
    assert result.outcome.ok


async def test_hang_up_deletes_the_room_even_when_the_job_ends_otherwise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("alice"):
            await trio.sleep(1)
            sim.terminate()  # the server ends the job; delete_room_on_close still applies
            await trio.sleep(1)
        assert sim.server.rooms.get(sim.room) is None

    result = await simulate_job(hang_up.entrypoint, script=script, delete_room_on_close=True)
    assert "phase_done" in result.kinds()


async def test_audio_on_connect_publishes_greets_and_counts_what_it_hears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(sim: Simulation) -> None:
        async with sim.participant("alice") as alice:
            assert (await alice.wait_for_text(topic="chat")).text == "the agent is here"
            async with alice.room.events(rtc.TrackSubscribed) as subscribed:
                if not any(
                    pub.track is not None
                    for p in alice.room.remote_participants.values()
                    for pub in p.track_publications.values()
                ):
                    async for _ in subscribed:
                        break
            await alice.publish_audio(frames=25)
            await trio.sleep(0.5)
            await alice.send_text("count", topic="chat")
            answer = await alice.wait_for_text(topic="chat")
            assert answer.text == "heard 25 frames from you"

    result = await simulate_job(audio_on_connect.entrypoint, script=script, departure_timeout=1)
    assert result.outcome.ok
    assert json.dumps(result.outcome.reason) == '"room disconnected"'
