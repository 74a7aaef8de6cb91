"""Properties of the job tree over the shipped script strategies.

``trio_agents.testing.strategies`` is what users property-test their agents
with; here the library holds itself to the same: for any script (every
participant kind, any trigger), an agent with a participant entrypoint sees
each default-kind joiner exactly once, every such task has finished when the
job ends, and the job ends by the trigger the script used.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_agents import JobContext, rtc
from trio_agents.testing import DeleteRoom, Join, Script, Terminate, run_script
from trio_agents.testing import strategies as ts

ALL_KINDS = ("standard", "sip", "connector", "ingress", "egress", "agent")
#: Longer than any script's waits: the room never closes while the script runs
#: (used as both the departure and the empty timeout).
DEPARTURE = 10_000.0


class Tracker:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    async def entrypoint(self, ctx: JobContext) -> None:
        async def participant(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
            self.started.append(p.identity)
            try:
                me = ctx.room.local_participant
                await me.send_text("hi", destination_identities=[p.identity])
                await ctx.shutting_down.wait()
            finally:
                self.finished.append(p.identity)

        ctx.add_participant_entrypoint(participant)  # default kinds: standard, sip, connector
        await ctx.connect()


@settings(deadline=None, max_examples=50)  # each example joins up to 10 participants
@given(ts.scripts(max_steps=10, kinds=ALL_KINDS, triggers=st.none() | ts.shutdown_triggers()))
def test_participant_tasks_follow_the_script(script: Script) -> None:
    agent = Tracker()
    result = run_script(
        agent.entrypoint, script, departure_timeout=DEPARTURE, empty_timeout=DEPARTURE
    )
    assert result.outcome.ok, result.outcome
    joiners = [s.identity for s in script.steps if isinstance(s, Join)]
    default_kind = [
        s.identity for s in script.steps if isinstance(s, Join) and s.kind in ts.DEFAULT_KINDS
    ]
    assert sorted(agent.started) == sorted(default_kind)
    assert sorted(agent.finished) == sorted(agent.started)
    assert set(joiners) >= set(agent.started)
    if isinstance(script.trigger, Terminate):
        assert result.outcome.reason == "job terminated by the server"
    else:
        # deleted, or closed after everyone left (a drain changes nothing)
        assert result.outcome.reason == "room disconnected"
        if not isinstance(script.trigger, DeleteRoom):
            last = result.of_kind("shutdown")[0].time
            assert last >= DEPARTURE
