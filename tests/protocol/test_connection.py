"""``Connection``: the ordering rules and timers, for both roles."""

from __future__ import annotations

import math

import pytest
from livekit.protocol import agent, models

from tests.protocol.helpers import ConnectionPair, FakeClock, make_job, snapshot
from trio_agents.protocol import (
    ASSIGNMENT_TIMEOUT,
    AVAILABILITY_TIMEOUT,
    MAX_MESSAGE_SIZE,
    REGISTER_TIMEOUT,
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
    Registered,
    RegisterTimeout,
    RemoteProtocolError,
    Role,
    SimulateJob,
    StatusDue,
    UpdateJobStatus,
    UpdateWorkerStatus,
)
from trio_agents.protocol._codec import encode_server_message, encode_worker_message

W = Role.WORKER
S = Role.SERVER
J = JobState

# One example of every wire event, by sender.
WORKER_EVENTS: list[Event] = [
    Register(agent_name="a"),
    Availability(job_id="AJ_x", available=True),
    Availability(job_id="AJ_x", available=False),
    UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.5, job_count=1),
    UpdateJobStatus(job_id="AJ_x", status=agent.JS_RUNNING),
    UpdateJobStatus(job_id="AJ_x", status=agent.JS_SUCCESS),
    Ping(timestamp=1),
    MigrateJob(job_ids=["AJ_x"]),
    SimulateJob(),
]
SERVER_EVENTS: list[Event] = [
    Registered(worker_id="AW_x"),
    AvailabilityRequest(job=make_job("AJ_x")),
    JobAssignment(job=make_job("AJ_x"), token="t"),
    JobTermination(job_id="AJ_x"),
    Pong(last_timestamp=1, timestamp=2),
]
TIMER_EVENTS: list[Event] = [
    RegisterTimeout(),
    AvailabilityTimeout(job_id="AJ_x"),
    AssignmentTimeout(job_id="AJ_x"),
    StatusDue(),
]


def _name(event: Event) -> str:
    return type(event).__name__


@pytest.fixture
def pair() -> ConnectionPair:
    return ConnectionPair()


@pytest.fixture
def registered() -> ConnectionPair:
    p = ConnectionPair()
    p.register()
    return p


# --- construction -----------------------------------------------------------


def test_roles() -> None:
    worker = Connection(W)
    server = Connection(S)
    assert (worker.our_role, worker.their_role) == (W, S)
    assert (server.our_role, server.their_role) == (S, W)
    assert ConnectionState.IDLE == worker.state == server.state
    assert {} == worker.jobs() == server.jobs()


def test_role_must_be_a_role() -> None:
    with pytest.raises(TypeError, match="Role"):
        Connection("worker")  # type: ignore[arg-type]


def test_receive_message_wants_bytes(pair: ConnectionPair) -> None:
    with pytest.raises(TypeError, match="bytes"):
        pair.server.receive_message("hello")  # type: ignore[arg-type]
    # not a protocol error: the connection is still usable
    assert pair.server.state == ConnectionState.IDLE


def test_receive_message_takes_bytearray_and_memoryview(pair: ConnectionPair) -> None:
    data = pair.worker.send(Register())
    assert isinstance(pair.server.receive_message(memoryview(bytearray(data))), Register)
    reply = pair.server.send(Registered(worker_id="AW_1"))
    assert Registered(worker_id="AW_1") == pair.worker.receive_message(bytearray(reply))
    assert ConnectionState.REGISTERED == pair.worker.state == pair.server.state


# --- the happy path ---------------------------------------------------------


def test_happy_path(pair: ConnectionPair) -> None:
    # register
    reg = Register(agent_name="my-agent", version="1.7.0", job_type=agent.JT_PUBLISHER)
    assert reg == pair.send(W, reg)
    assert ConnectionState.REGISTERING == pair.worker.state == pair.server.state
    assert Registered(worker_id="AW_1") == pair.send(S, Registered(worker_id="AW_1"))
    assert ConnectionState.REGISTERED == pair.worker.state == pair.server.state

    # the server offers a job
    job = make_job("AJ_1", metadata="dispatch metadata", agent_name="my-agent")
    got = pair.send(S, AvailabilityRequest(job=job))
    assert isinstance(got, AvailabilityRequest)
    assert job == got.job
    assert pair.job_states("AJ_1") == (J.OFFERED, J.OFFERED)
    assert {"AJ_1": J.OFFERED} == pair.worker.jobs() == pair.server.jobs()

    # the worker accepts
    answer = Availability(
        job_id="AJ_1",
        available=True,
        participant_identity="agent-AJ_1",
        participant_attributes={"lk.agent.name": "my-agent"},
    )
    assert answer == pair.send(W, answer)
    assert pair.job_states("AJ_1") == (J.ACCEPTED, J.ACCEPTED)

    # the server assigns
    assignment = JobAssignment(job=job, token="jwt", url="wss://elsewhere")
    assert assignment == pair.send(S, assignment)
    assert pair.job_states("AJ_1") == (J.RUNNING, J.RUNNING)
    assert {"AJ_1"} == pair.running(W) == pair.running(S)

    # progress, then the end
    pair.report("AJ_1", agent.JS_RUNNING)
    assert pair.job_states("AJ_1") == (J.RUNNING, J.RUNNING)
    pair.send(W, UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.25, job_count=1))
    pair.report("AJ_1", agent.JS_SUCCESS)
    assert pair.job_states("AJ_1") == (J.ABSENT, J.ABSENT)
    assert {} == pair.worker.jobs() == pair.server.jobs()
    assert ConnectionState.REGISTERED == pair.worker.state == pair.server.state


@pytest.mark.parametrize("status", [agent.JS_SUCCESS, agent.JS_FAILED])
def test_terminal_status_ends_the_job(registered: ConnectionPair, status: int) -> None:
    registered.start_job("AJ_1")
    registered.send(W, UpdateJobStatus(job_id="AJ_1", status=status, error="boom"))
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)
    # a finished job takes no more updates from the worker
    with pytest.raises(LocalProtocolError):
        registered.worker.send(UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))


@pytest.mark.parametrize("status", [agent.JS_PENDING, agent.JS_RUNNING, agent.JS_CANCELLED])
def test_non_terminal_status_keeps_the_job_running(registered: ConnectionPair, status: int) -> None:
    registered.start_job("AJ_1")
    registered.send(W, UpdateJobStatus(job_id="AJ_1", status=status))
    registered.send(W, UpdateJobStatus(job_id="AJ_1", status=status))
    assert registered.job_states("AJ_1") == (J.RUNNING, J.RUNNING)


def test_a_finished_job_id_can_be_offered_again(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.report("AJ_1", agent.JS_SUCCESS)
    registered.start_job("AJ_1")
    assert registered.job_states("AJ_1") == (J.RUNNING, J.RUNNING)


def test_jobs_are_independent(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.offer("AJ_2")
    registered.offer("AJ_3")
    registered.accept("AJ_3")
    expected = {"AJ_1": J.RUNNING, "AJ_2": J.OFFERED, "AJ_3": J.ACCEPTED}
    assert expected == registered.worker.jobs() == registered.server.jobs()
    assert registered.worker.jobs(J.OFFERED) == {"AJ_2": J.OFFERED}
    assert registered.server.jobs(J.RUNNING) == {"AJ_1": J.RUNNING}
    registered.decline("AJ_2")
    registered.report("AJ_1", agent.JS_FAILED)
    assert {"AJ_3": J.ACCEPTED} == registered.worker.jobs() == registered.server.jobs()


def test_pings_before_and_after_registration(pair: ConnectionPair) -> None:
    pair.send(W, Ping(timestamp=100))
    pair.send(S, Pong(last_timestamp=100, timestamp=200))
    assert ConnectionState.IDLE == pair.worker.state == pair.server.state
    pair.send(W, Register())
    pair.send(W, Ping(timestamp=101))
    pair.send(S, Pong(last_timestamp=101, timestamp=201))
    assert ConnectionState.REGISTERING == pair.worker.state == pair.server.state
    pair.send(S, Registered(worker_id="AW_1"))
    pair.send(W, Ping(timestamp=102))
    pair.send(S, Pong(last_timestamp=102, timestamp=202))
    assert ConnectionState.REGISTERED == pair.worker.state == pair.server.state


def test_simulate_job_after_registration(registered: ConnectionPair) -> None:
    sim = SimulateJob(
        job_type=agent.JT_PUBLISHER,
        room=models.Room(name="r"),
        participant=models.ParticipantInfo(identity="p"),
    )
    assert sim == registered.send(W, sim)
    # simulating a job creates no job state by itself
    assert {} == registered.worker.jobs() == registered.server.jobs()


# --- rejecting --------------------------------------------------------------


def test_decline(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    registered.decline("AJ_1")
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)
    # no assignment for a declined job
    assignment = JobAssignment(job=registered.offered["AJ_1"], token="t")
    before = snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError):
        registered.server.send(assignment)
    assert before == snapshot(registered.server, "AJ_1")
    # the server gave up waiting: no availability timer left, nothing for the worker either
    assert math.inf == registered.server.next_deadline()
    fired = registered.advance(AVAILABILITY_TIMEOUT + ASSIGNMENT_TIMEOUT)
    assert fired[S] == []
    assert [StatusDue()] == fired[W]  # only the status beat


@pytest.mark.parametrize("available", [False, True])
def test_terminate_is_a_decline(registered: ConnectionPair, available: bool) -> None:
    # terminate=True ends the job on the server; it wins over available=True,
    # as in LiveKit's server, which checks ``terminate`` first.
    registered.offer("AJ_1")
    answer = Availability(job_id="AJ_1", available=available, terminate=True)
    got = registered.send(W, answer)
    assert isinstance(got, Availability)
    assert got.terminate
    assert available == got.available
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)
    with pytest.raises(LocalProtocolError):
        registered.server.send(JobAssignment(job=registered.offered["AJ_1"], token="t"))
    # and the worker does not wait for an assignment
    events = registered.advance(ASSIGNMENT_TIMEOUT + 1)[W]
    assert not any(isinstance(e, AssignmentTimeout) for e in events)


# --- register first ---------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [e for e in WORKER_EVENTS if not isinstance(e, Register | Ping)],
    ids=_name,
)
def test_server_wants_register_first(pair: ConnectionPair, event: Event) -> None:
    with pytest.raises(RemoteProtocolError, match="idle"):
        pair.server.receive_message(encode_worker_message(event))
    assert pair.server.state == ConnectionState.ERROR


@pytest.mark.parametrize(
    "event",
    [e for e in WORKER_EVENTS if not isinstance(e, Register | Ping)],
    ids=_name,
)
def test_server_wants_registered_sent_before_anything_else(
    pair: ConnectionPair, event: Event
) -> None:
    pair.send(W, Register())
    with pytest.raises(RemoteProtocolError, match="registering"):
        pair.server.receive_message(encode_worker_message(event))
    assert pair.server.state == ConnectionState.ERROR


@pytest.mark.parametrize(
    "event",
    [e for e in WORKER_EVENTS if not isinstance(e, Register | Ping)],
    ids=_name,
)
def test_worker_must_register_first(pair: ConnectionPair, event: Event) -> None:
    before = snapshot(pair.worker, "AJ_x")
    with pytest.raises(LocalProtocolError, match="idle"):
        pair.worker.send(event)
    assert before == snapshot(pair.worker, "AJ_x")
    # the connection carries on
    pair.register()
    assert pair.worker.state == ConnectionState.REGISTERED


@pytest.mark.parametrize(
    "event",
    [e for e in WORKER_EVENTS if not isinstance(e, Register | Ping)],
    ids=_name,
)
def test_worker_waits_for_registered(pair: ConnectionPair, event: Event) -> None:
    pair.send(W, Register())
    before = snapshot(pair.worker, "AJ_x")
    with pytest.raises(LocalProtocolError, match="registering"):
        pair.worker.send(event)
    assert before == snapshot(pair.worker, "AJ_x")


@pytest.mark.parametrize(
    "event",
    [e for e in SERVER_EVENTS if not isinstance(e, Registered | Pong)],
    ids=_name,
)
def test_server_cannot_send_jobs_before_registered(pair: ConnectionPair, event: Event) -> None:
    for registering in (False, True):
        if registering:
            pair.send(W, Register())  # registering, not yet answered: still not allowed
        before = snapshot(pair.server, "AJ_x")
        with pytest.raises(LocalProtocolError):
            pair.server.send(event)
        assert before == snapshot(pair.server, "AJ_x")


@pytest.mark.parametrize(
    "event",
    [e for e in SERVER_EVENTS if not isinstance(e, Pong)],
    ids=_name,
)
def test_worker_wants_registered_first(pair: ConnectionPair, event: Event) -> None:
    # Registered is not acceptable either before the worker registered
    with pytest.raises(RemoteProtocolError):
        pair.worker.receive_message(encode_server_message(event))
    assert pair.worker.state == ConnectionState.ERROR


@pytest.mark.parametrize(
    "event",
    [e for e in SERVER_EVENTS if not isinstance(e, Registered | Pong)],
    ids=_name,
)
def test_worker_wants_registered_before_jobs(pair: ConnectionPair, event: Event) -> None:
    pair.send(W, Register())
    with pytest.raises(RemoteProtocolError, match="registering"):
        pair.worker.receive_message(encode_server_message(event))
    assert pair.worker.state == ConnectionState.ERROR


def test_server_cannot_register_a_worker_that_did_not_ask(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        pair.server.send(Registered(worker_id="AW_1"))
    assert pair.server.state == ConnectionState.IDLE


# --- double register --------------------------------------------------------


def test_worker_registers_once(pair: ConnectionPair) -> None:
    pair.send(W, Register())
    with pytest.raises(LocalProtocolError):
        pair.worker.send(Register())
    assert pair.worker.state == ConnectionState.REGISTERING
    pair.send(S, Registered(worker_id="AW_1"))
    with pytest.raises(LocalProtocolError):
        pair.worker.send(Register())
    assert pair.worker.state == ConnectionState.REGISTERED


@pytest.mark.parametrize("answered", [False, True])
def test_server_rejects_a_second_register(pair: ConnectionPair, answered: bool) -> None:
    pair.send(W, Register())
    if answered:
        pair.send(S, Registered(worker_id="AW_1"))
    with pytest.raises(RemoteProtocolError, match="Register"):
        pair.server.receive_message(encode_worker_message(Register()))
    assert pair.server.state == ConnectionState.ERROR


def test_server_answers_register_once(registered: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        registered.server.send(Registered(worker_id="AW_2"))
    assert registered.server.state == ConnectionState.REGISTERED


def test_worker_rejects_a_second_registered(registered: ConnectionPair) -> None:
    with pytest.raises(RemoteProtocolError, match="Registered"):
        registered.worker.receive_message(encode_server_message(Registered(worker_id="AW_2")))
    assert registered.worker.state == ConnectionState.ERROR


# --- availability: answered once ------------------------------------------------


def test_worker_answers_only_offered_jobs(registered: ConnectionPair) -> None:
    for answer in (True, False):
        with pytest.raises(LocalProtocolError, match="absent"):
            registered.worker.send(Availability(job_id="AJ_never", available=answer))
    assert registered.worker.jobs() == {}


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("second", [True, False])
def test_worker_answers_once(registered: ConnectionPair, first: bool, second: bool) -> None:
    registered.offer("AJ_1")
    registered.send(W, Availability(job_id="AJ_1", available=first))
    before = snapshot(registered.worker, "AJ_1")
    with pytest.raises(LocalProtocolError):
        registered.worker.send(Availability(job_id="AJ_1", available=second))
    assert before == snapshot(registered.worker, "AJ_1")


@pytest.mark.parametrize("first", [True, False])
def test_server_rejects_a_second_answer(registered: ConnectionPair, first: bool) -> None:
    registered.offer("AJ_1")
    registered.send(W, Availability(job_id="AJ_1", available=first))
    with pytest.raises(RemoteProtocolError):
        registered.server.receive_message(
            encode_worker_message(Availability(job_id="AJ_1", available=True))
        )
    assert registered.server.state == ConnectionState.ERROR


def test_server_rejects_an_answer_to_no_offer(registered: ConnectionPair) -> None:
    with pytest.raises(RemoteProtocolError, match="absent"):
        registered.server.receive_message(
            encode_worker_message(Availability(job_id="AJ_never", available=True))
        )


@pytest.mark.parametrize("state", ["offered", "accepted", "running"])
def test_server_offers_a_job_once(registered: ConnectionPair, state: str) -> None:
    registered.offer("AJ_1")
    if state != "offered":
        registered.accept("AJ_1")
    if state == "running":
        registered.assign("AJ_1")
    before = snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError):
        registered.server.send(AvailabilityRequest(job=make_job("AJ_1")))
    assert before == snapshot(registered.server, "AJ_1")
    # and the worker would not take it either
    with pytest.raises(RemoteProtocolError):
        registered.worker.receive_message(
            encode_server_message(AvailabilityRequest(job=make_job("AJ_1")))
        )


# --- assignment: only after an accepting answer -------------------------------


def test_server_assigns_only_accepted_jobs(registered: ConnectionPair) -> None:
    job = registered.offer("AJ_1")
    assignment = JobAssignment(job=job, token="t")
    before = snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError, match="offered"):
        registered.server.send(assignment)
    assert before == snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError, match="absent"):
        registered.server.send(JobAssignment(job=make_job("AJ_never"), token="t"))
    registered.accept("AJ_1")
    registered.send(S, assignment)
    with pytest.raises(LocalProtocolError, match="running"):
        registered.server.send(assignment)


def test_worker_rejects_an_unaccepted_assignment(registered: ConnectionPair) -> None:
    job = registered.offer("AJ_1")
    with pytest.raises(RemoteProtocolError, match="offered"):
        registered.worker.receive_message(encode_server_message(JobAssignment(job=job, token="t")))
    assert registered.worker.state == ConnectionState.ERROR


def test_worker_rejects_a_second_assignment(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    data = encode_server_message(JobAssignment(job=registered.offered["AJ_1"], token="t"))
    with pytest.raises(RemoteProtocolError, match="running"):
        registered.worker.receive_message(data)


def test_server_cannot_assign_after_the_answer_timed_out(registered: ConnectionPair) -> None:
    # LiveKit gives up on the job (ErrAvailabilityTimeout) and never assigns
    # it: an assignment now could reach a worker that declined the job.
    job = registered.offer("AJ_1")
    registered.advance(AVAILABILITY_TIMEOUT)
    assert registered.server.job_state("AJ_1") == J.EXPIRED
    before = snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError, match="expired"):
        registered.server.send(JobAssignment(job=job, token="t"))
    assert before == snapshot(registered.server, "AJ_1")
    # had it gone out, the worker (which has not even answered) would have choked
    with pytest.raises(RemoteProtocolError):
        registered.worker.receive_message(encode_server_message(JobAssignment(job=job, token="t")))


# --- status updates: only for known jobs ------------------------------------


@pytest.mark.parametrize("state", ["absent", "offered", "accepted", "expired"])
@pytest.mark.parametrize("status", [agent.JS_RUNNING, agent.JS_SUCCESS, agent.JS_FAILED])
def test_worker_reports_only_running_jobs(
    registered: ConnectionPair, state: str, status: int
) -> None:
    if state != "absent":
        registered.offer("AJ_1")
    if state in ("accepted", "expired"):
        registered.accept("AJ_1")
    if state == "expired":
        registered.advance(ASSIGNMENT_TIMEOUT)
    assert state == registered.worker.job_state("AJ_1").value
    before = snapshot(registered.worker, "AJ_1")
    with pytest.raises(LocalProtocolError, match=state):
        registered.worker.send(UpdateJobStatus(job_id="AJ_1", status=status))
    assert before == snapshot(registered.worker, "AJ_1")


@pytest.mark.parametrize("status", [agent.JS_RUNNING, agent.JS_SUCCESS, agent.JS_FAILED])
def test_server_ignores_status_of_unknown_jobs(registered: ConnectionPair, status: int) -> None:
    # e.g. a job from before a reconnect that was not migrated
    registered.start_job("AJ_1")
    before = snapshot(registered.server, "AJ_1", "AJ_old")
    data = encode_worker_message(UpdateJobStatus(job_id="AJ_old", status=status))
    assert registered.server.receive_message(data) is None
    assert before == snapshot(registered.server, "AJ_1", "AJ_old")
    assert registered.server.state == ConnectionState.REGISTERED


@pytest.mark.parametrize("state", ["offered", "accepted"])
def test_server_rejects_status_of_unassigned_jobs(registered: ConnectionPair, state: str) -> None:
    registered.offer("AJ_1")
    if state == "accepted":
        registered.accept("AJ_1")
    data = encode_worker_message(UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))
    with pytest.raises(RemoteProtocolError, match=state):
        registered.server.receive_message(data)


# --- termination ------------------------------------------------------------


def test_termination_of_a_running_job(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.send(S, JobTermination(job_id="AJ_1"))
    # still running until the worker reports the end
    assert registered.job_states("AJ_1") == (J.RUNNING, J.RUNNING)
    registered.send(S, JobTermination(job_id="AJ_1"))  # asking twice is fine
    registered.report("AJ_1", agent.JS_SUCCESS)
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)


def test_worker_ignores_termination_of_unknown_job(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    before = snapshot(registered.worker, "AJ_1", "AJ_unknown")
    data = encode_server_message(JobTermination(job_id="AJ_unknown"))
    assert registered.worker.receive_message(data) is None
    assert before == snapshot(registered.worker, "AJ_1", "AJ_unknown")
    assert registered.worker.state == ConnectionState.REGISTERED


def test_termination_crossing_the_final_status(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.send_later(W, UpdateJobStatus(job_id="AJ_1", status=agent.JS_SUCCESS))
    registered.send_later(S, JobTermination(job_id="AJ_1"))
    assert registered.deliver(S) is None  # the worker already ended the job
    assert isinstance(registered.deliver(W), UpdateJobStatus)
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)


@pytest.mark.parametrize("state", ["absent", "offered", "accepted", "expired"])
def test_server_terminates_only_running_jobs(registered: ConnectionPair, state: str) -> None:
    if state != "absent":
        registered.offer("AJ_1")
    if state == "accepted":
        registered.accept("AJ_1")
    if state == "expired":
        registered.advance(AVAILABILITY_TIMEOUT)
    assert state == registered.server.job_state("AJ_1").value
    before = snapshot(registered.server, "AJ_1")
    with pytest.raises(LocalProtocolError, match=state):
        registered.server.send(JobTermination(job_id="AJ_1"))
    assert before == snapshot(registered.server, "AJ_1")


@pytest.mark.parametrize("state", ["offered", "accepted"])
def test_worker_rejects_termination_of_unassigned_job(
    registered: ConnectionPair, state: str
) -> None:
    registered.offer("AJ_1")
    if state == "accepted":
        registered.accept("AJ_1")
    with pytest.raises(RemoteProtocolError, match=state):
        registered.worker.receive_message(encode_server_message(JobTermination(job_id="AJ_1")))


# --- job ids ----------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        Availability(job_id="", available=True),
        UpdateJobStatus(job_id="", status=agent.JS_RUNNING),
        MigrateJob(job_ids=["AJ_1", ""]),
    ],
    ids=_name,
)
def test_job_events_need_a_job_id(registered: ConnectionPair, event: Event) -> None:
    before = snapshot(registered.worker, "AJ_1")
    with pytest.raises(LocalProtocolError, match="job id"):
        registered.worker.send(event)
    assert before == snapshot(registered.worker, "AJ_1")
    with pytest.raises(RemoteProtocolError, match="job id"):
        registered.server.receive_message(encode_worker_message(event))


@pytest.mark.parametrize(
    "event",
    [
        AvailabilityRequest(job=make_job("")),
        JobAssignment(job=make_job(""), token="t"),
        JobTermination(job_id=""),
    ],
    ids=_name,
)
def test_server_job_events_need_a_job_id(registered: ConnectionPair, event: Event) -> None:
    with pytest.raises(LocalProtocolError, match="job id"):
        registered.server.send(event)
    with pytest.raises(RemoteProtocolError, match="job id"):
        registered.worker.receive_message(encode_server_message(event))


# --- timers -----------------------------------------------------------------


def test_default_timeouts() -> None:
    assert REGISTER_TIMEOUT == 10.0
    assert AVAILABILITY_TIMEOUT == 10.0
    assert ASSIGNMENT_TIMEOUT == 7.5
    assert STATUS_INTERVAL == 2.5


def test_register_timeout(pair: ConnectionPair) -> None:
    pair.clock.advance(3.0)
    server = Connection(S, clock=pair.clock)
    assert server.next_deadline() == 13.0
    assert math.inf == pair.worker.next_deadline()  # the worker has no such timer
    assert server.handle_timer(12.999) == []
    assert server.state == ConnectionState.IDLE
    # pings do not count as registering
    server.receive_message(pair.worker.send(Ping(timestamp=1)))
    assert server.next_deadline() == 13.0
    assert [RegisterTimeout()] == server.handle_timer(13.0)
    assert server.state == ConnectionState.ERROR
    assert server.handle_timer(100.0) == []  # fires once
    with pytest.raises(LocalProtocolError):
        server.send(Pong(last_timestamp=1, timestamp=2))
    with pytest.raises(RemoteProtocolError):
        server.receive_message(pair.worker.send(Register()))


def test_register_timeout_while_registering(pair: ConnectionPair) -> None:
    # receiving Register is not enough: the server must answer in time
    pair.send(W, Register())
    assert pair.server.next_deadline() == REGISTER_TIMEOUT
    assert [RegisterTimeout()] == pair.advance(REGISTER_TIMEOUT)[S]
    assert pair.server.state == ConnectionState.ERROR


def test_registered_disarms_the_register_timeout(pair: ConnectionPair) -> None:
    pair.clock.advance(9.9)
    pair.register()
    assert math.inf == pair.server.next_deadline()
    assert pair.advance(100.0)[S] == []
    assert pair.server.state == ConnectionState.REGISTERED


def test_availability_timeout(registered: ConnectionPair) -> None:
    registered.clock.advance(3.0)
    registered.offer("AJ_1")
    assert registered.server.next_deadline() == 13.0
    assert registered.server.handle_timer(12.9) == []
    assert registered.server.job_state("AJ_1") == J.OFFERED
    registered.clock.advance(10.0)
    assert [AvailabilityTimeout(job_id="AJ_1")] == registered.server.handle_timer(13.0)
    assert registered.server.job_state("AJ_1") == J.EXPIRED
    assert registered.server.jobs() == {}  # expired jobs are not listed
    assert math.inf == registered.server.next_deadline()
    # the late answer is ignored: no event, no error, nothing changes
    before = snapshot(registered.server, "AJ_1")
    registered.send(W, Availability(job_id="AJ_1", available=True), expect="ignored")
    assert before == snapshot(registered.server, "AJ_1")
    assert registered.server.state == ConnectionState.REGISTERED


def test_late_decline_is_ignored(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    registered.advance(AVAILABILITY_TIMEOUT)
    registered.send(W, Availability(job_id="AJ_1", available=False), expect="ignored")
    assert registered.job_states("AJ_1") == (J.ABSENT, J.EXPIRED)


def test_answer_disarms_the_availability_timeout(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    registered.clock.advance(AVAILABILITY_TIMEOUT - 0.1)
    registered.accept("AJ_1")
    assert math.inf == registered.server.next_deadline()
    assert registered.advance(AVAILABILITY_TIMEOUT)[S] == []
    assert registered.server.job_state("AJ_1") == J.ACCEPTED


def test_answer_crossing_the_availability_timeout(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    registered.advance(AVAILABILITY_TIMEOUT - 1.0)
    registered.send_later(W, Availability(job_id="AJ_1", available=True))
    assert [AvailabilityTimeout(job_id="AJ_1")] == registered.advance(1.0)[S]
    assert registered.deliver(W) is None
    assert registered.job_states("AJ_1") == (J.ACCEPTED, J.EXPIRED)
    # the worker gives up in turn, and nobody thinks the job runs
    events = registered.advance(ASSIGNMENT_TIMEOUT)[W]
    assert AssignmentTimeout(job_id="AJ_1") in events
    assert registered.job_states("AJ_1") == (J.EXPIRED, J.EXPIRED)
    assert set() == registered.running(W) == registered.running(S)


def test_assignment_timeout(registered: ConnectionPair) -> None:
    registered.clock.advance(1.0)
    job = registered.offer("AJ_1")
    registered.accept("AJ_1")
    fired = registered.advance(ASSIGNMENT_TIMEOUT - 0.01)[W]
    assert not any(isinstance(e, AssignmentTimeout) for e in fired)
    assert registered.worker.job_state("AJ_1") == J.ACCEPTED
    fired = registered.advance(0.01)[W]
    assert [AssignmentTimeout(job_id="AJ_1")] == [
        e for e in fired if isinstance(e, AssignmentTimeout)
    ]
    assert registered.worker.job_state("AJ_1") == J.EXPIRED
    assert registered.worker.jobs() == {}
    # the server assigned it anyway: the worker now has a running job it did
    # not launch, and must say so, so that both ends agree again
    assignment = JobAssignment(job=job, token="t")
    assert assignment == registered.send(S, assignment)
    assert registered.job_states("AJ_1") == (J.RUNNING, J.RUNNING)
    registered.send(W, UpdateJobStatus(job_id="AJ_1", status=agent.JS_FAILED, error="late"))
    assert registered.job_states("AJ_1") == (J.ABSENT, J.ABSENT)


def test_assignment_disarms_the_assignment_timeout(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    fired = registered.advance(ASSIGNMENT_TIMEOUT * 3)[W]
    assert not any(isinstance(e, AssignmentTimeout) for e in fired)
    assert registered.worker.job_state("AJ_1") == J.RUNNING


def test_termination_of_an_expired_job_is_ignored(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    registered.accept("AJ_1")
    registered.advance(ASSIGNMENT_TIMEOUT)
    data = encode_server_message(JobTermination(job_id="AJ_1"))
    assert registered.worker.receive_message(data) is None
    assert registered.worker.job_state("AJ_1") == J.EXPIRED


def test_status_only_after_registration() -> None:
    clock = FakeClock()
    pair = ConnectionPair(clock)
    assert math.inf == pair.worker.next_deadline()
    pair.send(W, Register())
    assert pair.advance(3 * STATUS_INTERVAL)[W] == []
    assert math.inf == pair.worker.next_deadline()
    pair.send(S, Registered(worker_id="AW_1"))  # at t=7.5
    assert pair.worker.next_deadline() == 7.5 + STATUS_INTERVAL
    assert math.inf == pair.server.next_deadline()  # the server reports nothing


def test_status_beats(registered: ConnectionPair) -> None:
    worker = registered.worker
    assert worker.next_deadline() == 2.5
    assert worker.handle_timer(2.4) == []
    assert [StatusDue()] == worker.handle_timer(2.5)
    assert worker.next_deadline() == 5.0
    assert worker.handle_timer(4.0) == []
    # late by a bit: the next beat keeps to the schedule
    assert [StatusDue()] == worker.handle_timer(5.5)
    assert worker.next_deadline() == 7.5


def test_status_skips_missed_beats(registered: ConnectionPair) -> None:
    worker = registered.worker
    # six beats missed (2.5 ... 15.0 and 17.5 are all past): one event, then back on schedule
    assert [StatusDue()] == worker.handle_timer(18.0)
    assert worker.next_deadline() == 20.0
    assert [StatusDue()] == worker.handle_timer(20.0)
    assert worker.next_deadline() == 22.5


def test_timers_fire_earliest_first() -> None:
    pair = ConnectionPair(assignment_timeout=4.0, status_interval=5.0)
    pair.register()
    pair.offer("AJ_late")
    pair.clock.advance(0.5)
    pair.offer("AJ_early")
    pair.accept("AJ_early")  # assignment timer at 4.5
    pair.clock.advance(0.5)
    pair.accept("AJ_late")  # assignment timer at 5.0 (status also at 5.0)
    fired = pair.worker.handle_timer(5.0)
    assert AssignmentTimeout(job_id="AJ_early") == fired[0]
    assert {AssignmentTimeout(job_id="AJ_late"), StatusDue()} == set(fired[1:])
    assert len(fired) == 3


def test_custom_timeouts() -> None:
    pair = ConnectionPair(
        register_timeout=1.0, availability_timeout=2.0, assignment_timeout=3.0, status_interval=4.0
    )
    assert pair.server.next_deadline() == 1.0
    pair.register()
    assert pair.worker.next_deadline() == 4.0
    pair.offer("AJ_1")
    assert pair.server.next_deadline() == 2.0
    pair.accept("AJ_1")
    assert pair.worker.next_deadline() == 3.0
    assert [AssignmentTimeout(job_id="AJ_1")] == pair.advance(3.0)[W]


def test_clock_is_read_when_timers_are_armed() -> None:
    clock = FakeClock(1000.0)
    server = Connection(S, clock=clock)
    assert server.next_deadline() == 1000.0 + REGISTER_TIMEOUT


# --- migration --------------------------------------------------------------


def test_migrate_job_readopts_jobs_on_a_fresh_connection(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.start_job("AJ_2")
    registered.offer("AJ_3")
    registered.accept("AJ_3")
    running = sorted(registered.running(W))
    # the socket drops; the worker reconnects on a fresh pair of connections
    fresh = ConnectionPair(registered.clock)
    fresh.register()
    # without migration the new server knows nothing of the old jobs
    data = encode_worker_message(UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))
    assert fresh.server.receive_message(data) is None
    with pytest.raises(LocalProtocolError):
        fresh.worker.send(UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))
    assert MigrateJob(job_ids=("AJ_1", "AJ_2")) == fresh.send(W, MigrateJob(job_ids=running))
    assert {"AJ_1", "AJ_2"} == fresh.running(W) == fresh.running(S)
    # business as usual from here
    fresh.send(W, UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))
    fresh.send(S, JobTermination(job_id="AJ_2"))
    fresh.send(W, UpdateJobStatus(job_id="AJ_2", status=agent.JS_SUCCESS))
    assert {"AJ_1"} == fresh.running(W) == fresh.running(S)


def test_migrate_job_is_idempotent(registered: ConnectionPair) -> None:
    registered.start_job("AJ_1")
    registered.send(W, MigrateJob(job_ids=["AJ_1", "AJ_1", "AJ_2"]))
    registered.send(W, MigrateJob(job_ids=[]))
    assert {"AJ_1", "AJ_2"} == registered.running(W) == registered.running(S)


def test_migrate_job_needs_registration(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        pair.worker.send(MigrateJob(job_ids=["AJ_1"]))
    assert pair.worker.jobs() == {}


@pytest.mark.parametrize("state", ["offered", "accepted"])
def test_migrate_job_cannot_claim_an_unassigned_job(registered: ConnectionPair, state: str) -> None:
    registered.offer("AJ_1")
    if state == "accepted":
        registered.accept("AJ_1")
    before = snapshot(registered.worker, "AJ_1", "AJ_2")
    with pytest.raises(LocalProtocolError, match=state):
        registered.worker.send(MigrateJob(job_ids=["AJ_2", "AJ_1"]))
    # all or nothing: AJ_2 was not adopted either
    assert before == snapshot(registered.worker, "AJ_1", "AJ_2")
    with pytest.raises(RemoteProtocolError, match=state):
        registered.server.receive_message(encode_worker_message(MigrateJob(job_ids=["AJ_1"])))


# --- go_away ----------------------------------------------------------------


@pytest.mark.parametrize("registered_first", [False, True])
def test_go_away_is_ignored(pair: ConnectionPair, registered_first: bool) -> None:
    if registered_first:
        pair.register()
    before = snapshot(pair.worker)
    assert pair.worker.receive_message(_go_away_bytes()) is None
    assert before == snapshot(pair.worker)


def _go_away_bytes() -> bytes:
    msg = agent.ServerMessage()
    msg.go_away.SetInParent()
    assert msg.WhichOneof("message") == "go_away"
    return msg.SerializeToString()


# --- roles ------------------------------------------------------------------


@pytest.mark.parametrize("event", SERVER_EVENTS + TIMER_EVENTS + [Event()], ids=_name)
def test_worker_cannot_send_server_events(registered: ConnectionPair, event: Event) -> None:
    before = snapshot(registered.worker, "AJ_x")
    with pytest.raises(LocalProtocolError, match="a worker cannot send"):
        registered.worker.send(event)
    assert before == snapshot(registered.worker, "AJ_x")


@pytest.mark.parametrize("event", WORKER_EVENTS + TIMER_EVENTS + [Event()], ids=_name)
def test_server_cannot_send_worker_events(registered: ConnectionPair, event: Event) -> None:
    before = snapshot(registered.server, "AJ_x")
    with pytest.raises(LocalProtocolError, match="a server cannot send"):
        registered.server.send(event)
    assert before == snapshot(registered.server, "AJ_x")


# --- local errors change nothing -----------------------------------------------


def test_oversized_send_changes_nothing(registered: ConnectionPair) -> None:
    registered.offer("AJ_1")
    huge = Availability(
        job_id="AJ_1", available=True, participant_metadata="x" * (MAX_MESSAGE_SIZE + 1)
    )
    before = snapshot(registered.worker, "AJ_1")
    with pytest.raises(LocalProtocolError, match="limit"):
        registered.worker.send(huge)
    assert before == snapshot(registered.worker, "AJ_1")
    assert registered.worker.job_state("AJ_1") == J.OFFERED
    # the worker may still answer, and is then held to it
    registered.accept("AJ_1")
    assert registered.job_states("AJ_1") == (J.ACCEPTED, J.ACCEPTED)


def test_local_errors_are_protocol_errors() -> None:
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


# --- after a remote error ------------------------------------------------------


@pytest.mark.parametrize("role", [W, S])
def test_remote_error_is_final(registered: ConnectionPair, role: Role) -> None:
    registered.start_job("AJ_1")
    registered.offer("AJ_2")
    conn = registered.conn(role)
    assert math.isfinite(conn.next_deadline())  # status beat / availability timer
    with pytest.raises(RemoteProtocolError):
        conn.receive_message(b"\xff")
    assert conn.state == ConnectionState.ERROR
    # every timer is gone
    assert math.inf == conn.next_deadline()
    assert conn.handle_timer(1e9) == []
    # and every further call fails, even a valid one
    with pytest.raises(RemoteProtocolError, match="already failed"):
        conn.receive_message(b"")
    with pytest.raises(LocalProtocolError, match="failed"):
        conn.send(Ping(timestamp=1) if role is W else Pong(last_timestamp=1, timestamp=1))
    valid = (
        encode_server_message(JobTermination(job_id="AJ_1"))
        if role is W
        else encode_worker_message(UpdateJobStatus(job_id="AJ_1", status=agent.JS_RUNNING))
    )
    with pytest.raises(RemoteProtocolError):
        conn.receive_message(valid)
    assert conn.state == ConnectionState.ERROR


def test_remote_error_from_a_rule(registered: ConnectionPair) -> None:
    with pytest.raises(RemoteProtocolError):
        registered.server.receive_message(encode_worker_message(Register()))
    assert registered.server.state == ConnectionState.ERROR
    with pytest.raises(LocalProtocolError):
        registered.server.send(AvailabilityRequest(job=make_job("AJ_1")))
