"""Events <-> ``livekit.protocol.agent`` messages, checked against the real protobufs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.message import Message
from livekit.protocol import agent, models

from trio_agents.protocol import (
    MAX_MESSAGE_SIZE,
    AssignmentTimeout,
    Availability,
    AvailabilityRequest,
    Event,
    JobAssignment,
    JobTermination,
    MigrateJob,
    Ping,
    Pong,
    Register,
    Registered,
    RemoteProtocolError,
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

Decoder = Callable[[bytes], Event | None]


def _worker_msg(event: Event) -> agent.WorkerMessage:
    return agent.WorkerMessage.FromString(encode_worker_message(event))


def _server_msg(event: Event) -> agent.ServerMessage:
    return agent.ServerMessage.FromString(encode_server_message(event))


def _set_fields(msg: Message) -> set[str]:
    return {f.name for f, _ in msg.ListFields()}


PERMISSIONS = models.ParticipantPermission(
    can_subscribe=True,
    can_publish=False,
    can_publish_data=True,
    can_publish_sources=[models.TrackSource.MICROPHONE, models.TrackSource.CAMERA],
    hidden=True,
    can_update_metadata=False,
    agent=True,
)

PARTICIPANT = models.ParticipantInfo(
    sid="PA_1",
    identity="alice",
    name="Alice",
    metadata="{}",
    attributes={"lang": "fr"},
    kind=models.ParticipantInfo.Kind.STANDARD,
)

ROOM = models.Room(sid="RM_1", name="room", metadata="room metadata", creation_time=1700000000)

FULL_JOB = agent.Job(
    id="AJ_full",
    dispatch_id="AD_1",
    type=agent.JT_PARTICIPANT,
    room=ROOM,
    participant=PARTICIPANT,
    metadata="dispatch metadata",
    agent_name="my-agent",
    state=agent.JobState(
        status=agent.JS_RUNNING,
        started_at=1,
        updated_at=2,
        participant_identity="agent-AJ_full",
        worker_id="AW_1",
        agent_id="AW_1",
    ),
    enable_recording=True,
    deployment="staging",
    attributes={"k": "v", "x": "y"},
    enable_redaction=True,
)

WORKER_EVENTS: list[Event] = [
    Register(),
    Register(
        agent_name="my-agent",
        job_type=agent.JT_PUBLISHER,
        version="1.7.0",
        ping_interval=30,
        deployment="staging",
        permissions=PERMISSIONS,
    ),
    Availability(job_id="AJ_1", available=False),
    Availability(
        job_id="AJ_1",
        available=True,
        terminate=True,
        supports_resume=True,
        participant_identity="agent-AJ_1",
        participant_name="Agent",
        participant_metadata="meta",
        participant_attributes={"lk.agent.name": "my-agent", "empty": "", "ünï": "cödé"},
    ),
    UpdateWorkerStatus(status=agent.WS_AVAILABLE, load=0.25, job_count=3),
    UpdateWorkerStatus(status=agent.WS_FULL, load=1.0, job_count=0),
    UpdateWorkerStatus(status=None, load=0.5),
    UpdateWorkerStatus(status=agent.WS_FULL, load=None, job_count=1),
    UpdateJobStatus(job_id="AJ_1", status=agent.JS_FAILED, error="crashed"),
    UpdateJobStatus(job_id="AJ_1", status=agent.JS_PENDING),
    Ping(timestamp=0),
    Ping(timestamp=-(2**63)),
    Ping(timestamp=2**63 - 1),
    MigrateJob(job_ids=()),
    MigrateJob(job_ids=("AJ_1", "AJ_2", "AJ_1")),
    SimulateJob(),
    SimulateJob(job_type=agent.JT_PUBLISHER, room=ROOM, participant=PARTICIPANT),
    SimulateJob(participant=models.ParticipantInfo()),  # present but empty
]

SERVER_EVENTS: list[Event] = [
    Registered(worker_id="AW_1"),
    Registered(
        worker_id="AW_1",
        server_info=models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version="1.13.5",
            protocol=16,
            region="eu",
            node_id="ND_1",
            agent_protocol=1,
        ),
    ),
    AvailabilityRequest(job=agent.Job(id="AJ_1")),
    AvailabilityRequest(job=FULL_JOB, resuming=True),
    JobAssignment(job=FULL_JOB, token="jwt"),
    JobAssignment(job=FULL_JOB, token="jwt", url="wss://other.example"),
    JobAssignment(job=FULL_JOB, token="", url=""),  # present but empty
    JobTermination(job_id="AJ_1"),
    Pong(last_timestamp=123, timestamp=456),
    Pong(last_timestamp=-1, timestamp=2**63 - 1),
]


# --- roundtrips ------------------------------------------------------------------


@pytest.mark.parametrize("event", WORKER_EVENTS, ids=repr)
def test_worker_roundtrip(event: Event) -> None:
    expected = event
    if isinstance(event, UpdateWorkerStatus) and event.load is None:
        # the field has no presence: an omitted load reads back as 0, as on the server
        expected = UpdateWorkerStatus(status=event.status, load=0.0, job_count=event.job_count)
    assert expected == decode_worker_message(encode_worker_message(event))


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=repr)
def test_server_roundtrip(event: Event) -> None:
    assert event == decode_server_message(encode_server_message(event))


def test_every_wire_event_is_covered() -> None:
    worker = {type(e) for e in WORKER_EVENTS}
    server = {type(e) for e in SERVER_EVENTS}
    assert {
        Register,
        Availability,
        UpdateWorkerStatus,
        UpdateJobStatus,
        Ping,
        MigrateJob,
        SimulateJob,
    } == worker
    assert {Registered, AvailabilityRequest, JobAssignment, JobTermination, Pong} == server
    worker_oneof = agent.WorkerMessage.DESCRIPTOR.oneofs_by_name["message"]
    server_oneof = agent.ServerMessage.DESCRIPTOR.oneofs_by_name["message"]
    assert {_worker_msg(e).WhichOneof("message") for e in WORKER_EVENTS} == {
        f.name for f in worker_oneof.fields
    }
    # go_away has no event: it decodes to None (see below)
    assert {_server_msg(e).WhichOneof("message") for e in SERVER_EVENTS} == {
        f.name for f in server_oneof.fields
    } - {"go_away"}


# --- field-level fidelity: encode -----------------------------------------------


def test_register_fields() -> None:
    msg = _worker_msg(WORKER_EVENTS[1])
    assert msg.WhichOneof("message") == "register"
    r = msg.register
    assert r.type == agent.JT_PUBLISHER
    assert r.agent_name == "my-agent"
    assert r.version == "1.7.0"
    assert r.ping_interval == 30
    assert r.deployment == "staging"
    assert r.allowed_permissions == PERMISSIONS
    assert list(r.allowed_permissions.can_publish_sources) == [
        models.TrackSource.MICROPHONE,
        models.TrackSource.CAMERA,
    ]
    assert r.allowed_permissions.hidden
    assert not r.allowed_permissions.can_publish


def test_register_default_permissions_are_sent() -> None:
    # like the Python SDK: the agent grant plus publish/subscribe/data/metadata
    r = _worker_msg(Register()).register
    assert r.HasField("allowed_permissions")
    p = r.allowed_permissions
    assert (
        p.can_subscribe,
        p.can_publish,
        p.can_publish_data,
        p.can_update_metadata,
        p.agent,
    ) == (True, True, True, True, True)
    assert not p.hidden
    assert r.type == agent.JT_ROOM


def test_availability_fields() -> None:
    msg = _worker_msg(WORKER_EVENTS[3])
    a = msg.availability
    assert (a.job_id, a.available, a.terminate, a.supports_resume) == ("AJ_1", True, True, True)
    assert (
        a.participant_identity,
        a.participant_name,
        a.participant_metadata,
    ) == ("agent-AJ_1", "Agent", "meta")
    assert dict(a.participant_attributes) == {
        "lk.agent.name": "my-agent",
        "empty": "",
        "ünï": "cödé",
    }


def test_availability_attributes_are_copied() -> None:
    attributes = {"a": "1"}
    event = Availability(job_id="AJ_1", available=True, participant_attributes=attributes)
    attributes["b"] = "2"
    assert dict(_worker_msg(event).availability.participant_attributes) == {"a": "1"}


def test_update_worker_status_optional_status() -> None:
    # WS_AVAILABLE is the zero value: it must still be sent, since the server
    # updates the status only when the field is present
    present = _worker_msg(UpdateWorkerStatus(status=agent.WS_AVAILABLE)).update_worker
    assert present.HasField("status")
    assert present.status == agent.WS_AVAILABLE
    absent = _worker_msg(UpdateWorkerStatus(status=None, job_count=2)).update_worker
    assert not absent.HasField("status")
    assert absent.job_count == 2
    assert UpdateWorkerStatus(status=None, load=0.0, job_count=2) == decode_worker_message(
        encode_worker_message(UpdateWorkerStatus(status=None, job_count=2))
    )


def test_update_worker_status_load() -> None:
    with_load = _worker_msg(UpdateWorkerStatus(load=0.75)).update_worker
    assert with_load.load == 0.75
    assert "load" in _set_fields(with_load)
    # load=None omits the field; the server records 0, and so does decoding
    without = _worker_msg(UpdateWorkerStatus(load=None, status=agent.WS_FULL))
    assert "load" not in _set_fields(without.update_worker)
    decoded = decode_worker_message(without.SerializeToString())
    assert UpdateWorkerStatus(status=agent.WS_FULL, load=0.0) == decoded
    # the draining field of newer protocols is simply not set
    assert not without.update_worker.draining


def test_update_job_fields() -> None:
    u = _worker_msg(UpdateJobStatus(job_id="AJ_9", status=agent.JS_FAILED, error="x")).update_job
    assert (u.job_id, u.status, u.error) == ("AJ_9", agent.JS_FAILED, "x")


def test_ping_pong_fields() -> None:
    assert _worker_msg(Ping(timestamp=-5)).ping.timestamp == -5
    pong = _server_msg(Pong(last_timestamp=7, timestamp=8)).pong
    assert (pong.last_timestamp, pong.timestamp) == (7, 8)


def test_migrate_job_fields() -> None:
    event = MigrateJob(job_ids=["AJ_1", "AJ_2"])
    assert event.job_ids == ("AJ_1", "AJ_2")  # a list is stored as a tuple
    assert list(_worker_msg(event).migrate_job.job_ids) == ["AJ_1", "AJ_2"]


def test_simulate_job_optional_participant() -> None:
    without = _worker_msg(SimulateJob(room=ROOM)).simulate_job
    assert not without.HasField("participant")
    assert without.room == ROOM
    assert decode_worker_message(encode_worker_message(SimulateJob())).participant is None  # type: ignore[union-attr]
    with_p = _worker_msg(SimulateJob(job_type=agent.JT_PUBLISHER, participant=PARTICIPANT))
    assert with_p.simulate_job.HasField("participant")
    assert with_p.simulate_job.participant == PARTICIPANT
    assert with_p.simulate_job.type == agent.JT_PUBLISHER


def test_registered_fields() -> None:
    msg = _server_msg(SERVER_EVENTS[1])
    assert msg.register.worker_id == "AW_1"
    assert msg.register.server_info.version == "1.13.5"
    assert msg.register.server_info.agent_protocol == 1


def test_availability_request_fields() -> None:
    a = _server_msg(AvailabilityRequest(job=FULL_JOB, resuming=True)).availability
    assert a.resuming
    assert a.job == FULL_JOB
    assert dict(a.job.attributes) == {"k": "v", "x": "y"}
    assert a.job.participant.identity == "alice"
    assert a.job.state.status == agent.JS_RUNNING


def test_job_assignment_optional_url() -> None:
    none = _server_msg(JobAssignment(job=FULL_JOB, token="jwt")).assignment
    assert not none.HasField("url")
    assert none.token == "jwt"
    assert none.job == FULL_JOB
    empty = _server_msg(JobAssignment(job=FULL_JOB, token="jwt", url="")).assignment
    assert empty.HasField("url")  # "" is not None: it is sent
    decoded = decode_server_message(
        encode_server_message(JobAssignment(job=FULL_JOB, token="jwt", url=""))
    )
    assert isinstance(decoded, JobAssignment)
    assert decoded.url == ""
    url = _server_msg(JobAssignment(job=FULL_JOB, token="jwt", url="wss://x")).assignment
    assert url.url == "wss://x"


def test_job_termination_fields() -> None:
    assert _server_msg(JobTermination(job_id="AJ_3")).termination.job_id == "AJ_3"


# --- field-level fidelity: decode real messages -------------------------------------


def test_decode_register() -> None:
    msg = agent.WorkerMessage(
        register=agent.RegisterWorkerRequest(
            type=agent.JT_PARTICIPANT,
            agent_name="n",
            version="v",
            ping_interval=5,
            deployment="d",
            allowed_permissions=PERMISSIONS,
            namespace="ignored",
            instance_id="ignored too",
        )
    )
    assert Register(
        agent_name="n",
        job_type=agent.JT_PARTICIPANT,
        version="v",
        ping_interval=5,
        deployment="d",
        permissions=PERMISSIONS,
    ) == decode_worker_message(msg.SerializeToString())


def test_decode_availability_with_attributes() -> None:
    msg = agent.WorkerMessage(
        availability=agent.AvailabilityResponse(
            job_id="AJ_1",
            available=True,
            participant_identity="id",
            participant_attributes={"a": "1", "b": "2"},
        )
    )
    event = decode_worker_message(msg.SerializeToString())
    assert isinstance(event, Availability)
    assert event.participant_attributes == {"a": "1", "b": "2"}
    assert isinstance(event.participant_attributes, dict)
    assert (
        event.job_id,
        event.available,
        event.terminate,
        event.participant_identity,
    ) == ("AJ_1", True, False, "id")


def test_decode_update_worker_without_status() -> None:
    msg = agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=0.5, job_count=4))
    assert UpdateWorkerStatus(status=None, load=0.5, job_count=4) == decode_worker_message(
        msg.SerializeToString()
    )


def test_decode_update_worker_with_zero_status() -> None:
    msg = agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(status=agent.WS_AVAILABLE))
    event = decode_worker_message(msg.SerializeToString())
    assert isinstance(event, UpdateWorkerStatus)
    assert event.status == agent.WS_AVAILABLE
    assert event.status is not None


def test_decode_migrate_job() -> None:
    msg = agent.WorkerMessage(migrate_job=agent.MigrateJobRequest(job_ids=["AJ_1", "AJ_2"]))
    assert MigrateJob(job_ids=("AJ_1", "AJ_2")) == decode_worker_message(msg.SerializeToString())


def test_decode_assignment_with_and_without_url() -> None:
    with_url = agent.ServerMessage(assignment=agent.JobAssignment(job=FULL_JOB, token="t", url="u"))
    without = agent.ServerMessage(assignment=agent.JobAssignment(job=FULL_JOB, token="t"))
    assert JobAssignment(job=FULL_JOB, token="t", url="u") == decode_server_message(
        with_url.SerializeToString()
    )
    assert JobAssignment(job=FULL_JOB, token="t", url=None) == decode_server_message(
        without.SerializeToString()
    )


def test_decoded_messages_are_independent_copies() -> None:
    data = encode_server_message(AvailabilityRequest(job=FULL_JOB))
    first = decode_server_message(data)
    second = decode_server_message(data)
    assert isinstance(first, AvailabilityRequest)
    assert isinstance(second, AvailabilityRequest)
    first.job.id = "changed"
    assert second.job.id == "AJ_full"


def test_go_away_decodes_to_none() -> None:
    msg = agent.ServerMessage()
    msg.go_away.reason = "server shutting down"
    assert decode_server_message(msg.SerializeToString()) is None
    empty = agent.ServerMessage()
    empty.go_away.SetInParent()
    assert decode_server_message(empty.SerializeToString()) is None


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decode", "name"),
    [(decode_worker_message, "WorkerMessage"), (decode_server_message, "ServerMessage")],
)
@pytest.mark.parametrize(
    "data",
    [
        b"\xff",  # truncated varint key
        b"\x0a\x05ab",  # length prefix longer than the data
        b"\x0f",  # wire type 7 does not exist
        b"\x12\x04\x0a\x02\xff\xfe",  # field 2 -> field 1 string, not UTF-8
    ],
)
def test_malformed_bytes(decode: Decoder, name: str, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match=f"undecodable {name}"):
        decode(data)


@pytest.mark.parametrize("decode", [decode_worker_message, decode_server_message])
def test_empty_oneof(decode: Decoder) -> None:
    with pytest.raises(RemoteProtocolError, match="carries no known message"):
        decode(b"")
    # a field the oneof does not know (number 99, varint) is an empty oneof too
    with pytest.raises(RemoteProtocolError, match="carries no known message"):
        decode(b"\x98\x06\x01")


def _padded_availability(size: int) -> bytes:
    """A valid WorkerMessage of exactly ``size`` bytes."""
    pad = size
    while True:
        msg = agent.WorkerMessage(
            availability=agent.AvailabilityResponse(job_id="AJ_1", participant_metadata="x" * pad)
        )
        data = msg.SerializeToString()
        if len(data) == size:
            return data
        pad -= len(data) - size


def test_message_size_limit() -> None:
    assert MAX_MESSAGE_SIZE == 2 * 1024 * 1024
    at_limit = _padded_availability(MAX_MESSAGE_SIZE)
    assert len(at_limit) == MAX_MESSAGE_SIZE
    event = decode_worker_message(at_limit)
    assert isinstance(event, Availability)
    over = _padded_availability(MAX_MESSAGE_SIZE + 1)
    with pytest.raises(RemoteProtocolError, match=f"{MAX_MESSAGE_SIZE + 1} bytes exceeds"):
        decode_worker_message(over)


def test_oversized_server_message() -> None:
    data = b"\x00" * (MAX_MESSAGE_SIZE + 1)  # never parsed: the size check comes first
    with pytest.raises(RemoteProtocolError, match="limit"):
        decode_server_message(data)


@pytest.mark.parametrize("job_type", [3, 7, 2**31 - 1, -1])
def test_register_with_unknown_job_type(job_type: int) -> None:
    msg = agent.WorkerMessage()
    msg.register.type = job_type  # type: ignore[assignment]
    msg.register.agent_name = "a"
    with pytest.raises(RemoteProtocolError, match=f"register: unknown job type {job_type}"):
        decode_worker_message(msg.SerializeToString())


@pytest.mark.parametrize("job_type", [agent.JT_ROOM, agent.JT_PUBLISHER, agent.JT_PARTICIPANT])
def test_register_with_known_job_type(job_type: int) -> None:
    msg = agent.WorkerMessage(register=agent.RegisterWorkerRequest(type=job_type))  # type: ignore[arg-type]
    event = decode_worker_message(msg.SerializeToString())
    assert isinstance(event, Register)
    assert job_type == event.job_type


def test_encoders_refuse_the_other_direction() -> None:
    for event in [*SERVER_EVENTS[:1], StatusDue(), AssignmentTimeout(job_id="AJ_1")]:
        with pytest.raises(TypeError, match="not a worker-to-server message"):
            encode_worker_message(event)
    for event in [*WORKER_EVENTS[:1], StatusDue()]:
        with pytest.raises(TypeError, match="not a server-to-worker message"):
            encode_server_message(event)
