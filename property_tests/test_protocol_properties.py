"""Properties of the sans-IO worker protocol.

* the transition tables are total (h2 style);
* nothing a peer can put on the wire makes a ``Connection`` raise anything but
  ``RemoteProtocolError``;
* a worker and a server that follow the local rules never trip each other's
  remote checks, and agree on which jobs run (a ``RuleBasedStateMachine``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import pytest
from hypothesis import event as event_
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from livekit.protocol import agent

from property_tests import strategies as pst
from tests.protocol.helpers import ConnectionPair, make_job, snapshot
from trio_agents.protocol import (
    ASSIGNMENT_TIMEOUT,
    AVAILABILITY_TIMEOUT,
    STATUS_INTERVAL,
    AssignmentTimeout,
    Availability,
    AvailabilityRequest,
    AvailabilityTimeout,
    Connection,
    ConnectionState,
    Event,
    JobAssignment,
    JobState,
    JobTermination,
    LocalProtocolError,
    MigrateJob,
    Ping,
    Pong,
    ProtocolError,
    Register,
    RemoteProtocolError,
    Role,
    SimulateJob,
    StatusDue,
    UpdateJobStatus,
    UpdateWorkerStatus,
)
from trio_agents.protocol._codec import (
    decode_server_message,
    decode_worker_message,
    encode_server_message,
    encode_worker_message,
)
from trio_agents.protocol._state import (
    ALL_KINDS,
    CONNECTION_TRANSITIONS,
    IGNORE,
    JOB_KINDS,
    JOB_TRANSITIONS,
    SENDER,
    TIMER_KINDS,
    Kind,
    connection_transition,
    job_transition,
    kind_name,
    kind_of,
)

W = Role.WORKER
S = Role.SERVER
J = JobState
TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


def _error_for(local: bool) -> type[ProtocolError]:
    return LocalProtocolError if local else RemoteProtocolError


# --- the tables ---------------------------------------------------------------------


def test_tables_mention_only_known_kinds() -> None:
    assert frozenset(SENDER) | TIMER_KINDS == ALL_KINDS
    assert not frozenset(SENDER) & TIMER_KINDS
    assert JOB_KINDS <= ALL_KINDS
    assert {kind for _, kind in CONNECTION_TRANSITIONS} <= ALL_KINDS
    assert {kind for _, kind in JOB_TRANSITIONS} <= JOB_KINDS


def _outcome(
    transition: Callable[..., object], state: enum.Enum, kind: Kind, local: bool
) -> object:
    """What ``transition`` returns, or the ``ProtocolError`` it raises."""
    try:
        return transition(state, kind, local=local)
    except ProtocolError as exc:
        return exc


def _check_refusal(outcome: ProtocolError, state: enum.Enum, kind: Kind, local: bool) -> None:
    assert type(outcome) is _error_for(local)
    assert kind_name(kind) in str(outcome)
    assert state.value in str(outcome)


@pytest.mark.parametrize("local", [True, False])
def test_connection_table_is_total(local: bool) -> None:
    for state in ConnectionState:
        for kind in sorted(ALL_KINDS, key=kind_name):
            nxt = _outcome(connection_transition, state, kind, local)
            if isinstance(nxt, ProtocolError):
                _check_refusal(nxt, state, kind, local)
                assert (state, kind) not in CONNECTION_TRANSITIONS
            else:
                assert isinstance(nxt, ConnectionState)
                assert CONNECTION_TRANSITIONS[state, kind] is nxt


def test_error_state_is_final() -> None:
    for kind in ALL_KINDS:
        for local in (True, False):
            with pytest.raises(_error_for(local)):
                connection_transition(ConnectionState.ERROR, kind, local=local)


@pytest.mark.parametrize("local", [True, False])
def test_job_table_is_total(local: bool) -> None:
    for state in JobState:
        for kind in sorted(JOB_KINDS, key=kind_name):
            nxt = _outcome(job_transition, state, kind, local)
            if isinstance(nxt, ProtocolError):
                _check_refusal(nxt, state, kind, local)
            else:
                if local:
                    assert nxt is not IGNORE
                    assert isinstance(nxt, JobState)
                else:
                    assert nxt is IGNORE or isinstance(nxt, JobState)
                assert JOB_TRANSITIONS[state, kind] is nxt


def test_local_never_allows_more_than_remote() -> None:
    # whatever a sender may do, its peer accepts (possibly by ignoring it)
    for state in JobState:
        for kind in JOB_KINDS:
            try:
                job_transition(state, kind, local=True)
            except LocalProtocolError:
                continue
            job_transition(state, kind, local=False)


@given(st.one_of(pst.worker_events(), pst.server_events(), pst.timer_events()))
def test_every_event_has_a_kind(event: Event) -> None:
    kind = kind_of(event)
    assert kind in ALL_KINDS
    if kind in TIMER_KINDS:
        return
    worker_side = isinstance(
        event,
        Register
        | Availability
        | UpdateWorkerStatus
        | UpdateJobStatus
        | Ping
        | MigrateJob
        | SimulateJob,
    )
    assert (W if worker_side else S) is SENDER[kind]


# --- the codec ------------------------------------------------------------------------


def _normalized(event: Event) -> Event:
    if isinstance(event, UpdateWorkerStatus) and event.load is None:
        return UpdateWorkerStatus(status=event.status, load=0.0, job_count=event.job_count)
    return event


@given(pst.worker_events())
def test_worker_events_roundtrip(event: Event) -> None:
    assert _normalized(event) == decode_worker_message(encode_worker_message(event))


@given(pst.server_events())
def test_server_events_roundtrip(event: Event) -> None:
    assert event == decode_server_message(encode_server_message(event))


# --- nothing from the wire escapes as anything but RemoteProtocolError ---------------------

SETUPS = ["fresh", "registering", "registered", "busy"]


def _connection(role: Role, setup: str) -> ConnectionPair:
    pair = ConnectionPair()
    if setup == "registering":
        pair.send(W, Register())
    elif setup in ("registered", "busy"):
        pair.register()
    if setup == "busy":
        # every job state on each side
        pair.start_job("AJ_1")
        pair.offer("AJ_4")
        pair.offer("AJ_5")
        pair.accept("AJ_5")
        pair.advance(AVAILABILITY_TIMEOUT)  # AJ_4 expires on the server, AJ_5 on the worker
        pair.offer("AJ_2")
        pair.offer("AJ_3")
        pair.accept("AJ_3")
        assert pair.worker.jobs() == {
            "AJ_1": J.RUNNING,
            "AJ_2": J.OFFERED,
            "AJ_3": J.ACCEPTED,
            "AJ_4": J.OFFERED,
        }
        assert pair.server.jobs() == {
            "AJ_1": J.RUNNING,
            "AJ_2": J.OFFERED,
            "AJ_3": J.ACCEPTED,
            "AJ_5": J.ACCEPTED,
        }
        assert (pair.worker.job_state("AJ_5"), pair.server.job_state("AJ_4")) == (
            J.EXPIRED,
            J.EXPIRED,
        )
    return pair


def _feed(pair: ConnectionPair, role: Role, messages: list[bytes]) -> None:
    conn = pair.conn(role)
    for data in messages:
        try:
            got = conn.receive_message(data)
        except RemoteProtocolError:
            assert conn.state == ConnectionState.ERROR
            assert float("inf") == conn.next_deadline()
            with pytest.raises(RemoteProtocolError):
                conn.receive_message(data)
            return
        assert conn.state != ConnectionState.ERROR
        if got is not None:
            assert isinstance(got, Event)
            assert conn.their_role is SENDER[kind_of(got)]


@given(
    role=st.sampled_from(Role),
    setup=st.sampled_from(SETUPS),
    messages=st.lists(st.binary(max_size=64), max_size=6),
)
def test_random_bytes(role: Role, setup: str, messages: list[bytes]) -> None:
    _feed(_connection(role, setup), role, messages)


@st.composite
def _wire_messages(draw: st.DrawFn, role: Role) -> bytes:
    """Bytes the peer of ``role`` could send, valid protobuf, in no particular order."""
    if role is S:
        event = draw(st.none() | pst.worker_events())
        if event is not None:
            return encode_worker_message(event)
        return draw(pst.raw_worker_messages()).SerializeToString()
    event = draw(st.none() | pst.server_events())
    if event is not None:
        return encode_server_message(event)
    return draw(pst.raw_server_messages()).SerializeToString()


@given(role=st.sampled_from(Role), setup=st.sampled_from(SETUPS), data=st.data())
def test_random_protobuf_messages(role: Role, setup: str, data: st.DataObject) -> None:
    messages = data.draw(st.lists(_wire_messages(role), max_size=8))
    _feed(_connection(role, setup), role, messages)


@given(role=st.sampled_from(Role), setup=st.sampled_from(SETUPS), data=st.data())
def test_send_is_checked_or_changes_nothing(role: Role, setup: str, data: st.DataObject) -> None:
    # any event at all: either it goes out (and decodes back to itself), or it
    # raises LocalProtocolError and leaves the connection exactly as it was
    pair = _connection(role, setup)
    conn = pair.conn(role)
    events = data.draw(
        st.lists(
            st.one_of(pst.worker_events(), pst.server_events(), pst.timer_events()), max_size=6
        )
    )
    decode = decode_worker_message if role is W else decode_server_message
    for event in events:
        ids = ("AJ_1", "AJ_2", "AJ_3", "AJ_4", "AJ_5")
        before = snapshot(conn, *ids)
        try:
            out = conn.send(event)
        except LocalProtocolError:
            assert before == snapshot(conn, *ids)
        else:
            assert _normalized(event) == decode(out)


# --- a worker and a server, driven at random ------------------------------------------------


ANSWERS = st.sampled_from(["accept", "accept", "decline", "terminate", "accept+terminate"])
STATUSES = st.sampled_from(sorted(agent.JobStatus.values()))


@settings(stateful_step_count=50)
class WorkerServerMachine(RuleBasedStateMachine):
    """Both ends of one connection, with an in-order wire in each direction.

    Actions that the protocol allows must succeed, must change the sender's
    job state as the protocol says, and must never make the receiver raise;
    actions it forbids must raise ``LocalProtocolError`` and change nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pair = ConnectionPair()
        self.pair.register()
        self.ids: list[str] = []
        self.offered_at: dict[str, float] = {}  # server side, by job id
        self.accepted_at: dict[str, float] = {}  # worker side, by job id

    # --- helpers ----------------------------------------------------------------

    @property
    def worker(self) -> Connection:
        return self.pair.worker

    @property
    def server(self) -> Connection:
        return self.pair.server

    def _attempt(
        self,
        role: Role,
        event: Event,
        job_id: str,
        *,
        valid: bool,
        then: JobState | None,
        now: bool = False,
    ) -> None:
        """Send ``event``, which must succeed if ``valid`` and be refused otherwise.

        ``now``: deliver everything in flight from ``role`` right away.
        """
        conn = self.pair.conn(role)
        if valid:
            self.pair.send_later(role, event)
            if then is not None:
                assert then is conn.job_state(job_id)
            while now and self.pair.in_flight[role]:
                self._deliver(role)
        else:
            before = snapshot(conn, job_id)
            with pytest.raises(LocalProtocolError):
                conn.send(event)
            assert before == snapshot(conn, job_id)

    def _do(
        self, action: str, job_id: str, answer: str = "accept", status: int = 1, now: bool = False
    ) -> None:
        """Try ``action`` on ``job_id``; the protocol's verdict is spelled out here.

        Each action needs the sender's job in one state, and leads to another.
        """
        sender: Role
        event: Event
        match action:
            case "offer":
                sender, needs, then = S, J.ABSENT, J.OFFERED
                event = AvailabilityRequest(job=make_job(job_id), resuming=status == 0)
            case "answer":
                accepted = answer == "accept"
                sender, needs, then = W, J.OFFERED, J.ACCEPTED if accepted else J.ABSENT
                event = Availability(
                    job_id=job_id,
                    available=answer.startswith("accept"),
                    terminate=answer.endswith("terminate"),
                    participant_identity=f"agent-{job_id}",
                )
            case "assign":
                sender, needs, then = S, J.ACCEPTED, J.RUNNING
                event = JobAssignment(job=make_job(job_id), token="jwt")
            case "report":
                sender, needs = W, J.RUNNING
                then = J.ABSENT if status in TERMINAL else J.RUNNING
                event = UpdateJobStatus(job_id=job_id, status=status)  # type: ignore[arg-type]
            case "terminate":
                sender, needs, then = S, J.RUNNING, J.RUNNING
                event = JobTermination(job_id=job_id)
            case _:
                raise AssertionError(action)
        valid = self.pair.conn(sender).job_state(job_id) is needs
        self._attempt(sender, event, job_id, valid=valid, then=then, now=now)
        if valid and action == "offer":
            self.offered_at[job_id] = self.pair.clock.now
        if valid and then is J.ACCEPTED:
            self.accepted_at[job_id] = self.pair.clock.now

    def _pick(self, data: st.DataObject, jobs: dict[str, JobState]) -> str:
        job_id: str = data.draw(st.sampled_from(sorted(jobs)), label="job_id")
        return job_id

    # --- the protocol, step by step ------------------------------------------------------

    def _new_id(self) -> str:
        job_id = f"AJ_{len(self.ids)}"
        self.ids.append(job_id)
        return job_id

    @initialize(running=st.integers(0, 3), accepted=st.integers(0, 2), offered=st.integers(0, 2))
    def some_jobs(self, running: int, accepted: int, offered: int) -> None:
        """Start with jobs in mid-life, so that short runs reach the interesting races."""
        for steps, count in (
            (("offer", "answer", "assign"), running),
            (("offer", "answer"), accepted),
            (("offer",), offered),
        ):
            for _ in range(count):
                job_id = self._new_id()
                for action in steps:
                    self._do(action, job_id, now=True)

    @rule(resuming=st.booleans(), now=st.booleans())
    def server_offers_a_new_job(self, resuming: bool, now: bool) -> None:
        self._do("offer", self._new_id(), status=0 if resuming else 1, now=now)

    @precondition(lambda self: self.worker.jobs(J.OFFERED))
    @rule(data=st.data(), answer=ANSWERS, now=st.booleans())
    def worker_answers(self, data: st.DataObject, answer: str, now: bool) -> None:
        self._do("answer", self._pick(data, self.worker.jobs(J.OFFERED)), answer=answer, now=now)

    @precondition(lambda self: self.server.jobs(J.ACCEPTED))
    @rule(data=st.data(), now=st.booleans())
    def server_assigns(self, data: st.DataObject, now: bool) -> None:
        self._do("assign", self._pick(data, self.server.jobs(J.ACCEPTED)), now=now)

    @precondition(lambda self: self.worker.jobs(J.RUNNING))
    @rule(data=st.data(), status=STATUSES, now=st.booleans())
    def worker_reports(self, data: st.DataObject, status: int, now: bool) -> None:
        self._do("report", self._pick(data, self.worker.jobs(J.RUNNING)), status=status, now=now)

    @precondition(lambda self: self.server.jobs(J.RUNNING))
    @rule(data=st.data(), now=st.booleans())
    def server_terminates(self, data: st.DataObject, now: bool) -> None:
        self._do("terminate", self._pick(data, self.server.jobs(J.RUNNING)), now=now)

    @rule(
        action=st.sampled_from(["offer", "answer", "assign", "report", "terminate"]),
        data=st.data(),
        answer=ANSWERS,
        status=STATUSES,
    )
    def anything_on_any_job(
        self, action: str, data: st.DataObject, answer: str, status: int
    ) -> None:
        """Any action on any job id, used or not: allowed or refused, as the protocol says."""
        fresh = f"AJ_{len(self.ids)}"
        job_id: str = data.draw(st.sampled_from([*self.ids, fresh]), label="job_id")
        if job_id == fresh:
            self._new_id()
        self._do(action, job_id, answer=answer, status=status)

    # --- either side ------------------------------------------------------------------

    @rule(role=st.sampled_from(Role), timestamp=st.integers(0, 2**40))
    def chatter(self, role: Role, timestamp: int) -> None:
        """A ping or a pong: always allowed, and no job changes."""
        if role is W:
            self.pair.send_later(W, Ping(timestamp=timestamp))
        else:
            self.pair.send_later(S, Pong(last_timestamp=timestamp, timestamp=timestamp + 1))

    @rule(role=st.sampled_from(Role), data=st.data())
    def sends_what_it_may_not(self, role: Role, data: st.DataObject) -> None:
        """Never allowed, whatever the job states: re-register, or the peer's or a timer's event."""
        if role is W:
            wrong = st.one_of(pst.registers(), pst.server_events(), pst.timer_events())
        else:
            wrong = st.one_of(pst.registereds(), pst.worker_events(), pst.timer_events())
        self._attempt(role, data.draw(wrong), "AJ_1", valid=False, then=None)

    # --- the wire ---------------------------------------------------------------------

    def _deliver(self, sender: Role) -> None:
        """Deliver the oldest message from ``sender`` and check what the receiver did."""
        if sender is W:
            self._deliver_to_server()
        else:
            self._deliver_to_worker()

    @precondition(lambda self: self.pair.in_flight[W])
    @rule()
    def deliver_to_server(self) -> None:
        self._deliver_to_server()

    @precondition(lambda self: self.pair.in_flight[S])
    @rule()
    def deliver_to_worker(self) -> None:
        self._deliver_to_worker()

    @rule()
    def flush(self) -> None:
        while self.pair.in_flight[W] or self.pair.in_flight[S]:
            for sender in (W, S):
                if self.pair.in_flight[sender]:
                    self._deliver(sender)

    def _deliver_to_server(self) -> None:
        event, _ = self.pair.in_flight[W][0]
        job_id = getattr(event, "job_id", "")
        before = self.server.job_state(job_id)
        got = self.pair.deliver(W)
        after = self.server.job_state(job_id)
        match event:
            case Availability() if before is J.EXPIRED:
                event_("late answer ignored")
                assert got is None  # the server gave up waiting
                assert J.EXPIRED is after
            case Availability():
                assert J.OFFERED is before
                assert event == got
                accepted = event.available and not event.terminate
                assert (J.ACCEPTED if accepted else J.ABSENT) is after
                assert self.server.next_deadline() > self.pair.clock.now
            case UpdateJobStatus():
                assert J.RUNNING is before
                assert event == got
                assert (J.ABSENT if event.status in TERMINAL else J.RUNNING) is after
            case _:
                assert event == got

    def _deliver_to_worker(self) -> None:
        event, _ = self.pair.in_flight[S][0]
        match event:
            case AvailabilityRequest() | JobAssignment():
                job_id = event.job.id
            case JobTermination():
                job_id = event.job_id
            case _:
                job_id = ""
        before = self.worker.job_state(job_id)
        got = self.pair.deliver(S)
        after = self.worker.job_state(job_id)
        match event:
            case AvailabilityRequest():
                assert (before, after) == (J.ABSENT, J.OFFERED)
                assert event == got
            case JobAssignment():
                # on time, or late: the worker must then report the job failed
                assert before in (J.ACCEPTED, J.EXPIRED)
                if before is J.EXPIRED:
                    event_("late assignment")
                assert J.RUNNING is after
                assert event == got
            case JobTermination() if before is J.RUNNING:
                assert event == got
                assert J.RUNNING is after
            case JobTermination():
                assert before in (J.ABSENT, J.EXPIRED)  # crossed the job's end
                event_("termination crossed the job's end")
                assert got is None
                assert before is after
            case _:
                assert event == got

    # --- time -----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.1, 1.0, 2.5, 3.0, 7.5, 10.0, 25.0]))
    def time_passes(self, seconds: float) -> None:
        fired = self.pair.advance(seconds)
        now = self.pair.clock.now
        beats = sum(isinstance(e, StatusDue) for e in fired[W])
        assert beats == 1 if seconds >= STATUS_INTERVAL else beats <= 1
        for event in fired[W]:
            match event:
                case StatusDue():
                    running = len(self.worker.jobs(J.RUNNING))
                    self.pair.send_later(
                        W,
                        UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.5, job_count=running),
                    )
                case AssignmentTimeout(job_id=job_id):
                    assert J.EXPIRED is self.worker.job_state(job_id)
                    assert self.accepted_at.pop(job_id) + ASSIGNMENT_TIMEOUT <= now
                case _:
                    raise AssertionError(f"unexpected worker timer {event!r}")
        for event in fired[S]:
            assert isinstance(event, AvailabilityTimeout)
            assert J.EXPIRED is self.server.job_state(event.job_id)
            assert self.offered_at.pop(event.job_id) + AVAILABILITY_TIMEOUT <= now
        # whatever did not fire was not due
        for job_id in self.worker.jobs(J.ACCEPTED):
            assert self.accepted_at[job_id] + ASSIGNMENT_TIMEOUT > now
        for job_id in self.server.jobs(J.OFFERED):
            assert self.offered_at[job_id] + AVAILABILITY_TIMEOUT > now

    # --- the socket drops -------------------------------------------------------------------

    @precondition(lambda self: self.worker.jobs(J.RUNNING))
    @rule()
    def reconnect(self) -> None:
        event_("reconnect with running jobs")
        running = sorted(self.worker.jobs(J.RUNNING))
        self.pair = ConnectionPair(self.pair.clock)
        self.offered_at.clear()
        self.accepted_at.clear()
        self.pair.register()
        if running:
            self.pair.send(W, MigrateJob(job_ids=running))
        assert set(running) == self.pair.running(W) == self.pair.running(S)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def still_registered(self) -> None:
        assert ConnectionState.REGISTERED == self.worker.state == self.server.state

    @invariant()
    def running_jobs_agree(self) -> None:
        w2s = [e for e, _ in self.pair.in_flight[W]]
        s2w = [e for e, _ in self.pair.in_flight[S]]
        # what each side will think runs once the wire is drained
        server_view = self.pair.running(S) - {
            e.job_id for e in w2s if isinstance(e, UpdateJobStatus) and e.status in TERMINAL
        }
        worker_view = self.pair.running(W) | {e.job.id for e in s2w if isinstance(e, JobAssignment)}
        assert worker_view == server_view
        if not w2s and not s2w:
            assert self.pair.running(W) == self.pair.running(S)

    @invariant()
    def job_states_compatible_when_quiet(self) -> None:
        if self.pair.in_flight[W] or self.pair.in_flight[S]:
            return
        allowed = {
            (J.ABSENT, J.ABSENT),
            (J.OFFERED, J.OFFERED),
            (J.OFFERED, J.EXPIRED),  # the worker has not answered; the server gave up
            (J.ACCEPTED, J.ACCEPTED),
            (J.ACCEPTED, J.EXPIRED),  # a late acceptance, ignored
            (J.ABSENT, J.EXPIRED),  # a late decline, ignored
            (J.EXPIRED, J.ACCEPTED),  # the worker gave up; the server may still assign
            (J.EXPIRED, J.EXPIRED),
            (J.RUNNING, J.RUNNING),
        }
        for job_id in self.ids:
            assert self.pair.job_states(job_id) in allowed, job_id

    @invariant()
    def no_timer_overdue(self) -> None:
        now = self.pair.clock.now
        assert self.worker.next_deadline() > now
        assert self.server.next_deadline() > now


TestWorkerServerMachine = WorkerServerMachine.TestCase
