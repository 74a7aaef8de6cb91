"""Scripts of what happens in a job's room, as plain data, and the player that runs them.

A ``Script`` is a sequence of steps: participants joining and leaving,
changing their attributes, metadata or name, sending text, time passing,
and at most one shutdown trigger from outside the job (the server
terminating it, the worker draining, the room being deleted).  Because it is
data, hypothesis can generate and shrink it (``trio_agents.testing.strategies``),
and a failing example prints as something a person can read and replay.

``run_script(entrypoint, script)`` plays one against a real job under a mock
clock in a fresh ``trio.run``; ``play_script(sim, script)`` plays one inside a
``simulate_job`` script of your own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs
import trio
import trio.testing

from .._job._context import EntrypointFn
from ._participants import SimulatedParticipant
from ._simulate import Simulation, SimulationResult, simulate_job

#: The participant kinds that keep a room open (LiveKit closes a room after
#: the last of these left, plus its departure timeout).
KEEPALIVE_KINDS = frozenset({"standard", "sip", "connector", "ingress"})
#: Every participant kind a token can carry.
PARTICIPANT_KINDS = ("standard", "sip", "connector", "ingress", "egress", "agent")


def _frozen_map(value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((value or {}).items()))


@attrs.frozen
class Join:
    """``identity`` joins the room (a new participant; it must not be present)."""

    identity: str
    kind: str = "standard"
    name: str = ""
    metadata: str = ""
    attributes: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_frozen_map)


@attrs.frozen
class Leave:
    """``identity`` leaves the room (it must be present)."""

    identity: str


@attrs.frozen
class SetAttributes:
    """``identity`` sets some of its attributes (an empty value deletes one, as in LiveKit)."""

    identity: str
    attributes: tuple[tuple[str, str], ...] = attrs.field(converter=_frozen_map)


@attrs.frozen
class SetMetadata:
    identity: str
    metadata: str


@attrs.frozen
class SetName:
    identity: str
    name: str


@attrs.frozen
class SendText:
    """``identity`` sends ``text`` on ``topic`` to everyone in the room."""

    identity: str
    text: str
    topic: str = ""


@attrs.frozen
class Wait:
    """Let ``seconds`` of (virtual) time pass."""

    seconds: float


@attrs.frozen
class Terminate:
    """The server terminates the job (its ``JobTermination``)."""


@attrs.frozen
class Drain:
    """The worker starts draining: ``ctx.shutting_down`` is set; the job goes on."""


@attrs.frozen
class DeleteRoom:
    """The room is deleted (RoomService.DeleteRoom): everyone is disconnected."""


Step = Join | Leave | SetAttributes | SetMetadata | SetName | SendText | Wait
Trigger = Terminate | Drain | DeleteRoom


@attrs.frozen
class Script:
    """What happens in the room, in order, then an optional trigger.

    After the steps (and the trigger), everyone still present leaves, so a
    job that waits for its room to close ends after the departure timeout.
    """

    steps: tuple[Step, ...] = ()
    trigger: Trigger | None = None

    def identities(self) -> list[str]:
        """Every identity that joins, in order of first join."""
        seen: dict[str, None] = {}
        for step in self.steps:
            if isinstance(step, Join):
                seen.setdefault(step.identity, None)
        return list(seen)

    def check(self) -> None:
        """Raise ``ValueError`` if a step acts for someone absent, or joins someone present."""
        present: set[str] = set()
        for index, step in enumerate(self.steps):
            if isinstance(step, Wait):
                if not step.seconds >= 0:
                    raise ValueError(f"step {index}: Wait needs seconds >= 0, got {step.seconds}")
                continue
            if isinstance(step, Join):
                if step.identity in present:
                    raise ValueError(f"step {index}: {step.identity!r} joins twice")
                if step.kind not in PARTICIPANT_KINDS:
                    raise ValueError(f"step {index}: unknown participant kind {step.kind!r}")
                present.add(step.identity)
            elif step.identity not in present:
                raise ValueError(f"step {index}: {step.identity!r} is not in the room")
            elif isinstance(step, Leave):
                present.discard(step.identity)


async def play_script(sim: Simulation, script: Script) -> None:
    """Play ``script`` in the job's room, then make everyone still present leave.

    Use it as (part of) a ``simulate_job`` script.  Each step returns once
    the stand-in server has applied it; ``Wait`` steps sleep.  Each
    participant is a task of its own, so anyone can leave in any order.
    """
    script.check()
    present: dict[str, _Member] = {}
    async with trio.open_nursery() as nursery:
        for step in script.steps:
            if isinstance(step, Wait):
                await trio.sleep(step.seconds)
            elif isinstance(step, Join):
                member = _Member()
                await nursery.start(member.run, sim, step)
                present[step.identity] = member
            else:
                member = present[step.identity]
                participant = member.participant
                assert participant is not None
                if isinstance(step, Leave):
                    del present[step.identity]
                    await member.leave()
                elif isinstance(step, SetAttributes):
                    await participant.set_attributes(dict(step.attributes))
                elif isinstance(step, SetMetadata):
                    await participant.set_metadata(step.metadata)
                elif isinstance(step, SetName):
                    await participant.set_name(step.name)
                else:
                    await participant.send_text(step.text, topic=step.topic)
        if isinstance(script.trigger, Terminate):
            sim.terminate()
        elif isinstance(script.trigger, Drain):
            sim.drain()
        elif isinstance(script.trigger, DeleteRoom):
            sim.server.rooms.delete(sim.room)
        # everyone still present leaves, in the order they joined
        for member in present.values():
            await member.leave()


class _Member:
    """One scripted participant: joined by ``run`` (a task), gone after ``leave``."""

    def __init__(self) -> None:
        self.participant: SimulatedParticipant | None = None
        self._leave = trio.Event()
        self._gone = trio.Event()

    async def run(
        self, sim: Simulation, join: Join, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            async with sim.participant(
                join.identity,
                kind=join.kind,
                name=join.name,
                metadata=join.metadata,
                attributes=dict(join.attributes),
            ) as participant:
                self.participant = participant
                task_status.started()
                await self._leave.wait()
        finally:
            self._gone.set()

    async def leave(self) -> None:
        self._leave.set()
        await self._gone.wait()


async def simulate_script(
    entrypoint: EntrypointFn, script: Script, **simulate_kwargs: Any
) -> SimulationResult:
    """``simulate_job(entrypoint, script=<play script>, **simulate_kwargs)``."""
    return await simulate_job(
        entrypoint, script=functools.partial(play_script, script=script), **simulate_kwargs
    )


def run_script(
    entrypoint: EntrypointFn,
    script: Script,
    *,
    max_time: float = 24 * 3600.0,
    **simulate_kwargs: Any,
) -> SimulationResult:
    """Run one job with ``script`` in a fresh ``trio.run`` on an autojump mock clock.

    This is the synchronous form a hypothesis test calls once per example
    (hypothesis does not run inside pytest-trio's event loop).  The job gets
    at most ``max_time`` virtual seconds; a job that outlives them (it never
    connected and nothing ended it) raises ``TimeoutError``.
    """

    async def main() -> SimulationResult:
        with trio.fail_after(max_time):
            return await simulate_script(entrypoint, script, **simulate_kwargs)

    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(main, clock=clock)
