"""A property test that finds the note-taker's bug (see ``note_taker.py``).

The property: *whatever happens in the room, every participant the agent
heard anything from has their notes saved, and the job ends cleanly.*
``scripts()`` generates what happens: people joining, talking, leaving,
changing attributes, the server terminating the job, the room being deleted.
"""

from __future__ import annotations

import note_taker  # examples/ is on sys.path under pytest
import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings

from trio_agents.testing import Join, Leave, Script, SendText, Simulation, Wait, run_script
from trio_agents.testing import strategies as ts

# A few dozen examples find the bug.  No example database, so that every run
# of this file starts from scratch; and, here only, no shrinking (it takes
# half a minute to reduce the failure to the shortest script, which
# test_the_shortest_failure_is_leaving_without_a_goodbye spells out).  In
# your own tests keep the default phases: the shrunk example is the story.
FIND = settings(
    max_examples=100,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


# --8<-- [start:property]
def check_notes_are_saved(shielded: bool, script: Script) -> None:
    store = note_taker.NoteStore()
    entrypoint = note_taker.make_entrypoint(store, shielded=shielded)
    result = run_script(entrypoint, script, departure_timeout=5)
    assert result.outcome.ok, result.outcome
    heard = {who: notes for who, notes in store.heard.items() if notes}
    assert store.saved == heard, "notes were lost"


@FIND
@given(ts.scripts())
def property_buggy(script: Script) -> None:
    check_notes_are_saved(False, script)


@FIND
@given(ts.scripts())
def property_fixed(script: Script) -> None:
    check_notes_are_saved(True, script)


def test_the_property_finds_the_lost_notes() -> None:
    with pytest.raises(AssertionError, match="notes were lost"):
        property_buggy()
# --8<-- [end:property]


def test_the_fixed_agent_has_the_property() -> None:
    property_fixed()


def test_a_hand_written_test_misses_the_bug() -> None:
    # alice says goodbye and stays a moment: the task returns, nothing is cancelled
    script = Script(
        steps=(
            Join("alice"),
            SendText("alice", "buy milk"),
            SendText("alice", "bye"),
            Wait(1),
            Leave("alice"),
        )
    )
    check_notes_are_saved(False, script)


def test_the_shortest_failure_is_leaving_without_a_goodbye() -> None:
    script = Script(steps=(Join("alice"), SendText("alice", "buy milk")))
    with pytest.raises(AssertionError, match="notes were lost"):
        check_notes_are_saved(False, script)
    check_notes_are_saved(True, script)


async def test_the_real_agent_saves_on_leave(autojump_clock: trio.testing.MockClock) -> None:
    from trio_agents.testing import simulate_job

    note_taker.store.heard.clear()
    note_taker.store.saved.clear()

    async def script(sim: Simulation) -> None:
        async with sim.participant("bob") as bob:
            await bob.send_text("call mum")
            await trio.sleep(1)

    result = await simulate_job(note_taker.entrypoint, script=script, departure_timeout=5)
    assert result.outcome.ok
    assert note_taker.store.saved == {"bob": ["call mum"]}
