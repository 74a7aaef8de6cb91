"""Properties of the job lifecycle: generated scripts against a model of the job tree.

Hypothesis draws a ``Scenario``: participants joining and leaving (every
kind), changing attributes and metadata and sending text; an entrypoint that
connects, returns, raises, hangs, or calls ``ctx.shutdown`` (and may ignore
cancellation inside a bounded shield); shutdown hooks that finish, take time,
raise or hang; and outside triggers (``ctx.shutdown``, server termination,
room deletion; everyone leaving closes the room after its departure timeout).
Each example is one ``trio.run`` under ``MockClock(autojump_threshold=0)``
(hypothesis-trio is broken; see reference/style_anchors.md section 6), so
virtual times are exact and the model predicts them exactly.

Event times never collide: each kind of step happens at its own fraction of
a second (joins at k+0.1, leaves at k+0.2, connect at k+0.3, ...).

Invariants checked on every example:

* the job ends at the first trigger, with the reason and outcome kind the
  model predicts, and the outcome reaches the control line at the predicted
  time, never later than shutdown start + ``shutdown_process_timeout``;
* the outcome is reported once, when the work has unwound (before the room is
  deleted or left): at that moment an agent whose room is still open is still
  in it; the outcome it reports is the one the job ends with; DEADLINE only
  when the unwinding itself hit the deadline, later cuts are noted in
  ``teardown_errors``;
* every hook starts exactly once; the ones that can finish within the budget
  finish exactly once; raising hooks are all in ``outcome.teardown_errors``;
* participant entrypoints ran exactly once for each matching participant
  present at connect (when registered before it) or joining after it, and
  every one that started has finished (its ``finally`` ran) when the job ends;
* no task of the job is alive after it (no frame of the job's code, the
  job's room or the user's job functions in any live task), and the server
  no longer has the agent in the room;
* run_job returns with the outcome, except when user code shields itself
  past the deadline: then the outcome says DEADLINE and is delivered at the
  deadline, and run_job returns when the shield ends (INLINE cannot kill it;
  the PROCESS executor's parent does).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import trio_agents
from trio_agents import JobContext, rtc
from trio_agents._job._control import JobControl
from trio_agents._types import OutcomeKind
from trio_agents.testing import Simulation, open_local_server, simulate_job

BUDGET = 5.0
DEPARTURE = 3.05
FALLBACK_TERMINATE = 60.5
ROOM = "prop-room"
KINDS = ["standard", "sip", "connector", "agent", "egress", "ingress"]
KEEPALIVE = {"standard", "sip", "connector", "ingress"}  # LiveKit: all but agent, egress
DEFAULT_KINDS = {"standard", "sip", "connector"}  # DEFAULT_PARTICIPANT_KINDS
HOOK_KINDS = ["sync", "async", "slow", "raise_sync", "raise_async", "hang"]
HOOK_TIME = {"async": 0.25, "slow": 1.5}
SHIELDS = [None, 0.5, 2.0, 8.0]

# fractional offsets: no two kinds of step ever happen at the same instant
JOIN, NOISE, LEAVE, CONNECT = 0.1, 0.15, 0.2, 0.3
TERMINATE, DELETE, SCRIPT_SHUTDOWN, EP_ACTION = 0.5, 0.55, 0.6, 0.7
PFN_RAISE_AFTER = 0.02


@attrs.frozen
class Person:
    identity: str
    kind: str
    join: int
    leave: int | None
    noise: tuple[tuple[int, str], ...]
    pfn_raises: bool

    @property
    def join_at(self) -> float:
        return self.join + JOIN

    @property
    def leave_at(self) -> float:
        return math.inf if self.leave is None else self.leave + LEAVE


@attrs.frozen
class Scenario:
    people: tuple[Person, ...]
    connect: int
    register: str  # "before" / "after" connect
    action: str  # return / raise / hang / shutdown
    action_at: int
    shield: float | None
    hooks: tuple[str, ...]
    terminate: int | None
    delete: int | None
    script_shutdown: int | None
    delete_room_on_close: bool

    @property
    def connect_at(self) -> float:
        return self.connect + CONNECT


@st.composite
def people(draw: st.DrawFn) -> tuple[Person, ...]:
    count = draw(st.integers(0, 5))
    out = []
    for i in range(count):
        join = draw(st.integers(0, 12))
        stay = draw(st.one_of(st.none(), st.integers(0, 8)))
        leave = None if stay is None else join + stay
        offsets = draw(
            st.lists(
                st.tuples(st.integers(0, 8), st.sampled_from(["text", "attributes", "metadata"])),
                max_size=3,
                unique_by=lambda t: t[0],
            )
        )
        noise = tuple(
            sorted((join + off, what) for off, what in offsets if leave is None or off < stay)
        )
        out.append(
            Person(
                identity=f"p{i}",
                kind=draw(st.sampled_from(KINDS)),
                join=join,
                leave=leave,
                noise=noise,
                pfn_raises=draw(st.booleans()),
            )
        )
    return tuple(out)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    connect = draw(st.integers(0, 2))
    return Scenario(
        people=draw(people()),
        connect=connect,
        register=draw(st.sampled_from(["before", "after"])),
        action=draw(st.sampled_from(["return", "raise", "hang", "shutdown"])),
        action_at=draw(st.integers(connect, 20)),
        shield=draw(st.sampled_from(SHIELDS)),
        hooks=tuple(draw(st.lists(st.sampled_from(HOOK_KINDS), max_size=4))),
        terminate=draw(st.one_of(st.none(), st.integers(0, 20))),
        delete=draw(st.one_of(st.none(), st.integers(3, 20))),
        script_shutdown=draw(st.one_of(st.none(), st.integers(0, 20))),
        delete_room_on_close=draw(st.booleans()),
    )


# --- the model -------------------------------------------------------------------------


def room_close_time(s: Scenario) -> float:
    """When the stand-in closes the room by LiveKit's rule (departure timeout only:
    the empty timeout is out of reach), or inf."""
    steps = sorted(
        [(p.join_at, +1) for p in s.people if p.kind in KEEPALIVE]
        + [(p.leave_at, -1) for p in s.people if p.kind in KEEPALIVE and p.leave is not None]
    )
    present = 0
    for i, (t, delta) in enumerate(steps):
        present += delta
        if present == 0:
            next_join = next((u for u, d in steps[i + 1 :] if d > 0), math.inf)
            if next_join > t + DEPARTURE:
                return t + DEPARTURE
    return math.inf


@attrs.frozen
class Expected:
    shutdown_at: float
    reason: str
    kind: OutcomeKind
    connected: bool
    shielded: float  # how long the entrypoint's shielded cleanup runs (0: none)
    outcome_at: float
    returns_at: float
    hooks_finish: bool
    pfn_for: frozenset[str]
    #: When the outcome is reported (once the work unwound; before the room is left).
    reported_at: float = 0.0
    #: The teardown reached the deadline.
    late: bool = False


def expect(s: Scenario) -> Expected:
    candidates: list[tuple[float, str]] = [(FALLBACK_TERMINATE, "job terminated by the server")]
    if s.terminate is not None:
        candidates.append((s.terminate + TERMINATE, "job terminated by the server"))
    if s.script_shutdown is not None:
        candidates.append((s.script_shutdown + SCRIPT_SHUTDOWN, "scripted shutdown"))
    if s.delete is not None:
        candidates.append((s.delete + DELETE, "room disconnected"))
    candidates.append((room_close_time(s), "room disconnected"))
    action_at = s.action_at + EP_ACTION
    if s.action == "raise":
        candidates.append((action_at, "entrypoint raised ValueError"))
    elif s.action == "shutdown":
        candidates.append((action_at, "entrypoint shutdown"))
    shutdown_at, reason = min(candidates)
    connected = shutdown_at > s.connect_at
    # the entrypoint is still awaiting (and so runs its shielded cleanup) unless it
    # returned or raised before shutdown started
    awaiting = s.action in ("hang", "shutdown") or shutdown_at < action_at
    shielded = (s.shield or 0.0) if awaiting else 0.0
    # the outcome is decided once the work unwound: only that step decides
    # DEADLINE; later steps (the hooks) cut at the deadline are noted in it
    kind = OutcomeKind.CLEAN
    hooks_finish = shielded < BUDGET
    if not hooks_finish:
        kind = OutcomeKind.DEADLINE
    hook_time = max([HOOK_TIME.get(h, 0.0) for h in s.hooks], default=0.0)
    teardown = shielded + hook_time
    late = not hooks_finish or "hang" in s.hooks or teardown > BUDGET
    if late:
        teardown = BUDGET
    if reason.startswith("entrypoint raised"):
        kind = OutcomeKind.ERROR
    reported_at = shutdown_at + min(shielded, BUDGET)
    outcome_at = shutdown_at + teardown
    returns_at = max(outcome_at, shutdown_at + shielded)

    pfn_for = set()
    if connected:
        for p in s.people:
            if p.kind not in DEFAULT_KINDS or p.join_at > shutdown_at:
                continue
            if s.register == "before":
                if p.leave_at > s.connect_at:
                    pfn_for.add(p.identity)
            elif p.join_at > s.connect_at:
                pfn_for.add(p.identity)
    return Expected(
        shutdown_at=shutdown_at,
        reason=reason,
        kind=kind,
        connected=connected,
        shielded=shielded,
        outcome_at=outcome_at,
        returns_at=returns_at,
        hooks_finish=hooks_finish,
        pfn_for=frozenset(pfn_for),
        reported_at=reported_at,
        late=late,
    )


# --- one episode ---------------------------------------------------------------------------


@attrs.define
class Observed:
    log: list[tuple[float, str, tuple[Any, ...]]] = attrs.field(factory=list)

    def add(self, label: str, *args: Any) -> None:
        self.log.append((trio.current_time(), label, args))

    def of(self, label: str) -> list[tuple[float, tuple[Any, ...]]]:
        return [(t, a) for t, lbl, a in self.log if lbl == label]


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


JOB_CODE_DIRS = [
    str(Path(trio_agents.__file__).parent / "_job"),
    str(Path(trio_agents.__file__).parent / "rtc"),
]


def live_job_frames() -> list[str]:
    """Frames of job code (the job tree, its room, the user's job_* functions) in live tasks."""
    found: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for frame, _ in task.iter_await_frames():
            code = frame.f_code
            if any(code.co_filename.startswith(d) for d in JOB_CODE_DIRS) or (
                code.co_filename == __file__ and code.co_name.startswith("job_")
            ):
                found.append(f"{task.name}: {code.co_name}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


async def episode(s: Scenario, obs: Observed) -> dict[str, Any]:
    start = trio.current_time()
    assert start == 0.0
    holder: list[JobContext] = []
    controls: list[JobControl] = []

    async def job_pfn(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        obs.add("pfn_start", p.identity)
        try:
            if any(x.identity == p.identity and x.pfn_raises for x in s.people):
                await trio.sleep(PFN_RAISE_AFTER)
                obs.add("pfn_raised", p.identity)
                raise ValueError(f"pfn {p.identity}")
            await trio.sleep_forever()
        finally:
            obs.add("pfn_end", p.identity)

    def job_hook(i: int, kind: str) -> Any:
        name = f"hook-{i}"
        if kind in ("sync", "raise_sync"):

            def job_sync_hook(reason: str) -> None:
                obs.add("hook_start", name, reason)
                if kind == "raise_sync":
                    raise ValueError(name)
                obs.add("hook_end", name)

            return job_sync_hook

        async def job_async_hook() -> None:
            obs.add("hook_start", name, None)
            if kind == "raise_async":
                raise ValueError(name)
            if kind == "hang":
                await trio.sleep_forever()
            await trio.sleep(HOOK_TIME[kind])
            obs.add("hook_end", name)

        return job_async_hook

    async def job_entrypoint(ctx: JobContext) -> None:
        holder.append(ctx)
        for i, kind in enumerate(s.hooks):
            ctx.add_shutdown_callback(job_hook(i, kind))
        try:
            if s.register == "before":
                ctx.add_participant_entrypoint(job_pfn)
            await trio.sleep_until(start + s.connect_at)
            await ctx.connect()
            # the detector used after the job must see the job while it runs
            obs.add("connected", len(live_job_frames()))
            if s.register == "after":
                ctx.add_participant_entrypoint(job_pfn)
            await trio.sleep_until(start + s.action_at + EP_ACTION)
            if s.action == "return":
                return
            if s.action == "raise":
                raise ValueError("the entrypoint failed")
            if s.action == "shutdown":
                ctx.shutdown("entrypoint shutdown")
            await trio.sleep_forever()
        except trio.Cancelled:
            if s.shield is not None:
                # ignores cancellation for a bounded time
                with trio.CancelScope(shield=True):
                    await trio.sleep(s.shield)
                obs.add("shield_over")
            raise

    async def person(sim: Simulation, p: Person) -> None:
        await trio.sleep_until(start + p.join_at)
        async with sim.participant(p.identity, kind=p.kind) as sp:
            for at, what in p.noise:
                await trio.sleep_until(start + at + NOISE)
                with contextlib.suppress(rtc.NotConnectedError, rtc.RequestError):
                    if what == "text":
                        await sp.send_text(f"hello from {p.identity}", topic="chat")
                    elif what == "attributes":
                        await sp.set_attributes({"at": str(at)})
                    else:
                        await sp.set_metadata(f"md-{at}")
            if p.leave is None:
                await trio.sleep_forever()
            await trio.sleep_until(start + p.leave_at)

    async def at(when: float, fn: Any) -> None:
        await trio.sleep_until(start + when)
        fn()

    def on_report(outcome: Any) -> None:
        # the status goes out before the agent leaves: is the room open, is it in?
        room = sim_server[0].rooms.get(ROOM)
        # (a participant joining after a deletion re-creates a room of that name)
        open_ = room is not None and room.info.sid == holder[0].job.room.sid
        in_room = open_ and room is not None and any(
            i.startswith("agent-") for i in room.participants
        )
        obs.add("reported", outcome, open_, in_room)
        controls[0].mark_delivered()

    sim_server: list[Any] = []

    async def script(sim: Simulation) -> None:
        controls.append(sim.control)
        sim_server.append(sim.server)
        sim.control.on_report(on_report)
        async with trio.open_nursery() as nursery:
            for p in s.people:
                nursery.start_soon(person, sim, p)
            nursery.start_soon(at, FALLBACK_TERMINATE, sim.terminate)
            if s.terminate is not None:
                nursery.start_soon(at, s.terminate + TERMINATE, sim.terminate)
            if s.delete is not None:
                nursery.start_soon(at, s.delete + DELETE, lambda: sim.server.rooms.delete(ROOM))
            if s.script_shutdown is not None:
                nursery.start_soon(
                    at,
                    s.script_shutdown + SCRIPT_SHUTDOWN,
                    lambda: holder[0].shutdown("scripted shutdown"),
                )

    async def watch_outcome() -> None:
        while not controls:  # noqa: ASYNC110
            await trio.sleep(0.001)
        outcome = await controls[0].wait_done()
        obs.add("outcome_delivered", outcome)

    errors = ErrorRecords()
    job_logger = logging.getLogger("trio_agents.job")
    job_logger.addHandler(errors)
    try:
        async with (
            open_local_server(departure_timeout=DEPARTURE, empty_timeout=1000) as srv,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(watch_outcome)
            result = await simulate_job(
                job_entrypoint,
                script=script,
                server=srv,
                room=ROOM,
                shutdown_process_timeout=BUDGET,
                delete_room_on_close=s.delete_room_on_close,
            )
            obs.add("returned")
            await trio.testing.wait_all_tasks_blocked()
            leftovers = live_job_frames()
            room = srv.rooms.get(ROOM)
            agent_still_in = room is not None and any(
                identity.startswith("agent-") for identity in room.participants
            )
            # (a participant joining during the teardown re-creates a room of that name)
            room_gone = room is None or room.info.sid != result.job.room.sid
            nursery.cancel_scope.cancel()
    finally:
        job_logger.removeHandler(errors)
    return {
        "result": result,
        "leftovers": leftovers,
        "agent_still_in": agent_still_in,
        "room_gone": room_gone,
        "errors": errors.records,
    }


def reason_keeps_the_agent(reason: str) -> bool:
    """The server did not end the agent's connection itself (room closed or deleted)."""
    return reason != "room disconnected"


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


def check(s: Scenario, report: Callable[[str], object] = note) -> None:
    exp = expect(s)
    report(f"expected: {exp}")
    obs = Observed()
    got = trio.run(episode, s, obs, clock=trio.testing.MockClock(autojump_threshold=0))
    result = got["result"]
    outcome = result.outcome
    report(f"outcome: {outcome}")
    report(f"events: {[(round(e.time, 3), e.kind, e.args) for e in result.events]}")

    # the end: first trigger, reason, kind, timing
    shutdowns = result.of_kind("shutdown")
    assert len(shutdowns) == 1
    assert close(shutdowns[0].time, exp.shutdown_at), (shutdowns[0].time, exp.shutdown_at)
    assert outcome.reason == exp.reason
    assert outcome.kind is exp.kind, outcome
    assert ("connected" in result.kinds()) == exp.connected
    (delivered,) = obs.of("outcome_delivered")
    assert delivered[1][0] == outcome
    assert close(delivered[0], exp.outcome_at), (delivered[0], exp.outcome_at)
    assert delivered[0] <= exp.shutdown_at + BUDGET + 1e-6
    (returned,) = obs.of("returned")
    assert close(returned[0], exp.returns_at), (returned[0], exp.returns_at)
    if exp.kind is OutcomeKind.ERROR:
        assert outcome.error == "entrypoint raised ValueError: the entrypoint failed"
    if exp.kind is OutcomeKind.DEADLINE:
        assert "shutdown_process_timeout=5s" in outcome.error
    if exp.shielded:
        assert len(obs.of("shield_over")) == 1

    # hooks: each starts exactly once; those that can finish, finish exactly once
    names = [f"hook-{i}" for i in range(len(s.hooks))]
    starts = [a[0] for _, a in obs.of("hook_start")]
    assert sorted(starts) == sorted(names)
    for _, args in obs.of("hook_start"):
        if args[1] is not None:
            assert args[1] == exp.reason
    ends = sorted(a[0] for _, a in obs.of("hook_end"))
    finishing = [
        n
        for n, kind in zip(names, s.hooks, strict=True)
        if kind == "sync" or (kind in ("async", "slow") and exp.hooks_finish)
    ]
    assert ends == sorted(finishing)
    raising = [n for n, kind in zip(names, s.hooks, strict=True) if kind.startswith("raise")]
    marker = f"the deadline (shutdown_process_timeout={BUDGET:g}s)"
    notes = [e for e in outcome.teardown_errors if e.endswith(marker)]
    errors = [e for e in outcome.teardown_errors if not e.endswith(marker)]
    assert sorted(errors) == sorted(f"ValueError: {n}" for n in raising)
    if not exp.late:
        assert notes == []
    elif exp.hooks_finish:
        assert notes  # the hooks ran past the deadline after the report: said so

    # reported once, when the work unwound, before the agent left an open room
    (reported,) = obs.of("reported")
    assert close(reported[0], exp.reported_at), (reported[0], exp.reported_at)
    reported_outcome, room_open, agent_in = reported[1]
    assert reported_outcome.kind is outcome.kind
    assert reported_outcome.reason == outcome.reason
    if exp.connected and room_open and reason_keeps_the_agent(exp.reason):
        assert agent_in

    # participant entrypoints: once per matching participant; all finished
    started = [a[0] for _, a in obs.of("pfn_start")]
    assert sorted(started) == sorted(exp.pfn_for), (started, exp.pfn_for)
    ended = [a[0] for _, a in obs.of("pfn_end")]
    assert sorted(ended) == sorted(started)
    raised = {a[0] for _, a in obs.of("pfn_raised")}
    for identity in raised:
        assert any(
            identity in r.getMessage() and result.job.id in r.getMessage() for r in got["errors"]
        )

    # nothing of the job outlives it (and the detector does see a running job)
    for _, (frames_seen,) in obs.of("connected"):
        assert frames_seen > 0
    assert got["leftovers"] == []
    assert not got["agent_still_in"]
    if exp.connected and s.delete_room_on_close and exp.shielded < BUDGET:
        assert got["room_gone"]


# an example costs ~80 ms of wall time (virtual time inside): twice the profile's count
@settings(deadline=None, max_examples=settings.default.max_examples * 2)
@given(scenarios())
def test_job_lifecycle_matches_the_model(scenario: Scenario) -> None:
    exp = expect(scenario)
    event(f"reason: {exp.reason}")
    event(f"outcome: {exp.kind.value}")
    event(f"participant entrypoints ran: {min(len(exp.pfn_for), 3)}{'+' * (len(exp.pfn_for) > 2)}")
    if exp.shielded:
        event("entrypoint shielded itself")
    check(scenario)


# --- a few fixed scripts, as readable examples of the model ------------------------------


def test_example_everyone_leaves_then_the_room_closes() -> None:
    s = Scenario(
        people=(
            Person("p0", "standard", 1, 4, ((2, "text"),), False),
            Person("p1", "agent", 0, None, (), False),
            Person("p2", "sip", 2, 5, ((3, "attributes"),), True),
        ),
        connect=0,
        register="before",
        action="return",
        action_at=0,
        shield=None,
        hooks=("sync", "slow", "raise_async"),
        terminate=None,
        delete=None,
        script_shutdown=None,
        delete_room_on_close=True,
    )
    exp = expect(s)
    assert exp.reason == "room disconnected"
    assert close(exp.shutdown_at, 5.2 + DEPARTURE)
    assert exp.pfn_for == {"p0", "p2"}
    check(s, print)


def test_example_shielded_entrypoint_past_the_deadline() -> None:
    s = Scenario(
        people=(Person("p0", "standard", 0, None, (), False),),
        connect=1,
        register="after",
        action="hang",
        action_at=1,
        shield=8.0,
        hooks=("async", "sync", "hang"),
        terminate=4,
        delete=None,
        script_shutdown=None,
        delete_room_on_close=True,
    )
    exp = expect(s)
    assert exp.kind is OutcomeKind.DEADLINE
    assert close(exp.outcome_at, 4.5 + BUDGET)
    assert close(exp.returns_at, 4.5 + 8.0)
    assert exp.pfn_for == frozenset()  # present at connect, registered after it
    check(s, print)


def test_example_shutdown_before_connect() -> None:
    s = Scenario(
        people=(Person("p0", "standard", 0, None, (), False),),
        connect=2,
        register="before",
        action="raise",
        action_at=3,
        shield=0.5,
        hooks=("async",),
        terminate=None,
        delete=None,
        script_shutdown=1,
        delete_room_on_close=False,
    )
    exp = expect(s)
    assert not exp.connected
    assert exp.reason == "scripted shutdown"
    check(s, print)
