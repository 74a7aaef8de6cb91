"""Shared Hypothesis strategies: one per protocol event, plus their parts.

Every strategy builds values that ``encode``/``decode`` round-trip exactly,
except that ``UpdateWorkerStatus(load=None)`` reads back as ``load=0.0`` (the
field has no presence on the wire).  New events must get a strategy here.

The strategies for what happens in a job's room (participants, scripts of
joins/leaves/attribute changes/text, shutdown triggers) are shipped to users
in ``trio_agents.testing.strategies``; ``test_scripts.py`` uses them from there.
"""

from __future__ import annotations

from hypothesis import strategies as st
from livekit.protocol import agent, models

from trio_agents.protocol import (
    AssignmentTimeout,
    Availability,
    AvailabilityRequest,
    AvailabilityTimeout,
    Event,
    JobAssignment,
    JobTermination,
    MigrateJob,
    Ping,
    Pong,
    Register,
    Registered,
    RegisterTimeout,
    SimulateJob,
    StatusDue,
    UpdateJobStatus,
    UpdateWorkerStatus,
)

__all__ = [
    "assignment_timeouts",
    "availabilities",
    "availability_requests",
    "availability_timeouts",
    "job_assignments",
    "job_ids",
    "job_statuses",
    "job_terminations",
    "job_types",
    "jobs",
    "migrate_jobs",
    "participants",
    "permissions",
    "pings",
    "pongs",
    "raw_server_messages",
    "raw_worker_messages",
    "register_timeouts",
    "registereds",
    "registers",
    "rooms",
    "server_events",
    "server_infos",
    "simulate_jobs",
    "status_dues",
    "timer_events",
    "update_job_statuses",
    "update_worker_statuses",
    "worker_events",
]

# --- parts ------------------------------------------------------------------------

texts = st.text(max_size=20)
uint32s = st.integers(0, 2**32 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
str_maps = st.dictionaries(texts, texts, max_size=4)

#: Job ids, never empty (an empty id is a protocol error); a small pool so that
#: ids collide often.
job_ids = st.one_of(st.sampled_from(["AJ_1", "AJ_2", "AJ_3"]), st.text(min_size=1, max_size=12))

job_types = st.sampled_from(sorted(agent.JobType.values()))
job_statuses = st.sampled_from(sorted(agent.JobStatus.values()))
worker_statuses = st.sampled_from(sorted(agent.WorkerStatus.values()))
#: float32 values, which the ``load`` field carries exactly.
loads = st.floats(min_value=0.0, max_value=10.0, width=32)


@st.composite
def permissions(draw: st.DrawFn) -> models.ParticipantPermission:
    return models.ParticipantPermission(
        can_subscribe=draw(st.booleans()),
        can_publish=draw(st.booleans()),
        can_publish_data=draw(st.booleans()),
        can_publish_sources=draw(
            st.lists(st.sampled_from(sorted(models.TrackSource.values())), max_size=3)
        ),
        hidden=draw(st.booleans()),
        can_update_metadata=draw(st.booleans()),
        agent=draw(st.booleans()),
    )


@st.composite
def rooms(draw: st.DrawFn) -> models.Room:
    return models.Room(
        sid=draw(texts),
        name=draw(texts),
        metadata=draw(texts),
        creation_time=draw(int64s),
        num_participants=draw(uint32s),
    )


@st.composite
def participants(draw: st.DrawFn) -> models.ParticipantInfo:
    return models.ParticipantInfo(
        sid=draw(texts),
        identity=draw(texts),
        name=draw(texts),
        metadata=draw(texts),
        attributes=draw(str_maps),
        kind=draw(st.sampled_from(sorted(models.ParticipantInfo.Kind.values()))),
    )


@st.composite
def jobs(draw: st.DrawFn, job_id: st.SearchStrategy[str] = job_ids) -> agent.Job:
    job = agent.Job(
        id=draw(job_id),
        dispatch_id=draw(texts),
        type=draw(job_types),
        room=draw(rooms()),
        metadata=draw(texts),
        agent_name=draw(texts),
        enable_recording=draw(st.booleans()),
        deployment=draw(texts),
        attributes=draw(str_maps),
    )
    participant = draw(st.none() | participants())
    if participant is not None:
        job.participant.CopyFrom(participant)
    if draw(st.booleans()):
        job.state.status = draw(job_statuses)
        job.state.started_at = draw(int64s)
        job.state.worker_id = draw(texts)
    return job


@st.composite
def server_infos(draw: st.DrawFn) -> models.ServerInfo:
    return models.ServerInfo(
        edition=draw(st.sampled_from(sorted(models.ServerInfo.Edition.values()))),
        version=draw(texts),
        protocol=draw(st.integers(-(2**31), 2**31 - 1)),
        region=draw(texts),
        node_id=draw(texts),
        agent_protocol=draw(st.integers(-(2**31), 2**31 - 1)),
    )


# --- worker -> server --------------------------------------------------------------


def registers() -> st.SearchStrategy[Register]:
    return st.builds(
        Register,
        agent_name=texts,
        job_type=job_types,
        version=texts,
        ping_interval=uint32s,
        deployment=texts,
        permissions=permissions(),
    )


def availabilities(job_id: st.SearchStrategy[str] = job_ids) -> st.SearchStrategy[Availability]:
    return st.builds(
        Availability,
        job_id=job_id,
        available=st.booleans(),
        terminate=st.booleans(),
        supports_resume=st.booleans(),
        participant_identity=texts,
        participant_name=texts,
        participant_metadata=texts,
        participant_attributes=str_maps,
    )


def update_worker_statuses() -> st.SearchStrategy[UpdateWorkerStatus]:
    return st.builds(
        UpdateWorkerStatus,
        status=st.none() | worker_statuses,
        load=st.none() | loads,
        job_count=uint32s,
    )


def update_job_statuses(
    job_id: st.SearchStrategy[str] = job_ids,
) -> st.SearchStrategy[UpdateJobStatus]:
    return st.builds(UpdateJobStatus, job_id=job_id, status=job_statuses, error=texts)


def pings() -> st.SearchStrategy[Ping]:
    return st.builds(Ping, timestamp=int64s)


def migrate_jobs() -> st.SearchStrategy[MigrateJob]:
    return st.builds(MigrateJob, job_ids=st.lists(job_ids, max_size=4).map(tuple))


def simulate_jobs() -> st.SearchStrategy[SimulateJob]:
    return st.builds(
        SimulateJob,
        job_type=job_types,
        room=rooms(),
        participant=st.none() | participants(),
    )


# --- server -> worker --------------------------------------------------------------


def registereds() -> st.SearchStrategy[Registered]:
    return st.builds(Registered, worker_id=texts, server_info=server_infos())


def availability_requests(
    job_id: st.SearchStrategy[str] = job_ids,
) -> st.SearchStrategy[AvailabilityRequest]:
    return st.builds(AvailabilityRequest, job=jobs(job_id), resuming=st.booleans())


def job_assignments(job_id: st.SearchStrategy[str] = job_ids) -> st.SearchStrategy[JobAssignment]:
    return st.builds(JobAssignment, job=jobs(job_id), token=texts, url=st.none() | texts)


def job_terminations(
    job_id: st.SearchStrategy[str] = job_ids,
) -> st.SearchStrategy[JobTermination]:
    return st.builds(JobTermination, job_id=job_id)


def pongs() -> st.SearchStrategy[Pong]:
    return st.builds(Pong, last_timestamp=int64s, timestamp=int64s)


# --- timers ----------------------------------------------------------------------------


def register_timeouts() -> st.SearchStrategy[RegisterTimeout]:
    return st.just(RegisterTimeout())


def availability_timeouts() -> st.SearchStrategy[AvailabilityTimeout]:
    return st.builds(AvailabilityTimeout, job_id=job_ids)


def assignment_timeouts() -> st.SearchStrategy[AssignmentTimeout]:
    return st.builds(AssignmentTimeout, job_id=job_ids)


def status_dues() -> st.SearchStrategy[StatusDue]:
    return st.just(StatusDue())


# --- unions ----------------------------------------------------------------------------


def worker_events() -> st.SearchStrategy[Event]:
    """Any event a worker sends."""
    return st.one_of(
        registers(),
        availabilities(),
        update_worker_statuses(),
        update_job_statuses(),
        pings(),
        migrate_jobs(),
        simulate_jobs(),
    )


def server_events() -> st.SearchStrategy[Event]:
    """Any event a server sends."""
    return st.one_of(
        registereds(), availability_requests(), job_assignments(), job_terminations(), pongs()
    )


def timer_events() -> st.SearchStrategy[Event]:
    return st.one_of(
        register_timeouts(), availability_timeouts(), assignment_timeouts(), status_dues()
    )


# --- raw protobuf, including values no event would produce -------------------------------

#: Any int32, so enums get values outside their definition too.
any_enum = st.integers(-(2**31), 2**31 - 1)


@st.composite
def raw_worker_messages(draw: st.DrawFn) -> agent.WorkerMessage:
    """A ``WorkerMessage`` with any (or no) oneof member and loosely chosen fields."""
    msg = agent.WorkerMessage()
    which = draw(
        st.sampled_from([*agent.WorkerMessage.DESCRIPTOR.oneofs_by_name["message"].fields, None])
    )
    if which is None:
        return msg
    sub = getattr(msg, which.name)
    sub.SetInParent()
    match which.name:
        case "register":
            sub.type = draw(any_enum)
            sub.agent_name = draw(texts)
            sub.deployment = draw(texts)
            if draw(st.booleans()):
                sub.allowed_permissions.CopyFrom(draw(permissions()))
        case "availability":
            sub.job_id = draw(st.text(max_size=5))
            sub.available = draw(st.booleans())
            sub.terminate = draw(st.booleans())
            sub.participant_attributes.update(draw(str_maps))
        case "update_worker":
            if draw(st.booleans()):
                sub.status = draw(any_enum)
            sub.load = draw(st.floats(width=32, allow_nan=True))
            sub.job_count = draw(uint32s)
        case "update_job":
            sub.job_id = draw(st.text(max_size=5))
            sub.status = draw(any_enum)
        case "ping":
            sub.timestamp = draw(int64s)
        case "migrate_job":
            sub.job_ids.extend(draw(st.lists(st.text(max_size=5), max_size=3)))
        case "simulate_job":
            sub.type = draw(any_enum)
            if draw(st.booleans()):
                sub.participant.CopyFrom(draw(participants()))
    return msg


@st.composite
def raw_server_messages(draw: st.DrawFn) -> agent.ServerMessage:
    """A ``ServerMessage`` with any (or no) oneof member and loosely chosen fields."""
    msg = agent.ServerMessage()
    which = draw(
        st.sampled_from([*agent.ServerMessage.DESCRIPTOR.oneofs_by_name["message"].fields, None])
    )
    if which is None:
        return msg
    sub = getattr(msg, which.name)
    sub.SetInParent()
    match which.name:
        case "register":
            sub.worker_id = draw(texts)
        case "availability" | "assignment":
            sub.job.CopyFrom(draw(jobs(st.text(max_size=5))))
            sub.job.type = draw(any_enum)
        case "termination":
            sub.job_id = draw(st.text(max_size=5))
        case "pong":
            sub.last_timestamp = draw(int64s)
        case "go_away":
            sub.reason = draw(texts)
    return msg
