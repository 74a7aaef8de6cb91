"""Events of the worker protocol, one class per protobuf message.

Events are frozen, keyword-only values.  A ``Connection`` turns received bytes
into events and events into bytes; the mapping to ``livekit.protocol.agent``
messages lives in ``_codec.py``.  Timer events (``*Timeout``, ``StatusDue``)
never cross the wire: ``Connection.handle_timer`` produces them.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from livekit.protocol import agent, models

__all__ = [
    "AssignmentTimeout",
    "Availability",
    "AvailabilityRequest",
    "AvailabilityTimeout",
    "Event",
    "JobAssignment",
    "JobTermination",
    "MigrateJob",
    "Ping",
    "Pong",
    "Register",
    "RegisterTimeout",
    "Registered",
    "SimulateJob",
    "StatusDue",
    "UpdateJobStatus",
    "UpdateWorkerStatus",
]


class Event:
    """Base class of every protocol event.  Don't subclass the concrete events."""

    __slots__ = ()


def _default_permissions() -> models.ParticipantPermission:
    return models.ParticipantPermission(
        can_subscribe=True,
        can_publish=True,
        can_publish_data=True,
        can_update_metadata=True,
        agent=True,
    )


def _str_dict(value: object) -> dict[str, str]:
    return dict(value) if value else {}  # type: ignore[call-overload]


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


# --- worker -> server -------------------------------------------------------


@attrs.frozen(kw_only=True)
class Register(Event):
    """``WorkerMessage.register``: the first message a worker sends."""

    agent_name: str = ""
    job_type: agent.JobType = agent.JT_ROOM
    version: str = ""
    ping_interval: int = 0
    deployment: str = ""
    permissions: models.ParticipantPermission = attrs.field(factory=_default_permissions)


@attrs.frozen(kw_only=True)
class Availability(Event):
    """``WorkerMessage.availability``: the answer to an ``AvailabilityRequest``.

    ``available=True`` accepts (the server then sends ``JobAssignment``);
    ``available=False`` declines, and ``terminate=True`` also ends the job on
    the server instead of trying another worker.
    """

    job_id: str
    available: bool
    terminate: bool = False
    supports_resume: bool = False
    participant_identity: str = ""
    participant_name: str = ""
    participant_metadata: str = ""
    participant_attributes: dict[str, str] = attrs.field(factory=dict, converter=_str_dict)


@attrs.frozen(kw_only=True)
class UpdateWorkerStatus(Event):
    """``WorkerMessage.update_worker``: periodic load and availability report.

    ``status=None`` leaves the server's idea of the status unchanged, and
    ``load=None`` omits the field (the server then records 0).
    """

    status: agent.WorkerStatus | None = None
    load: float | None = None
    job_count: int = 0


@attrs.frozen(kw_only=True)
class UpdateJobStatus(Event):
    """``WorkerMessage.update_job``: a job's progress or end."""

    job_id: str
    status: agent.JobStatus
    error: str = ""


@attrs.frozen(kw_only=True)
class Ping(Event):
    """``WorkerMessage.ping``; the server answers with ``Pong``."""

    timestamp: int


@attrs.frozen(kw_only=True)
class MigrateJob(Event):
    """``WorkerMessage.migrate_job``: jobs still running after a re-register."""

    job_ids: tuple[str, ...] = attrs.field(converter=_str_tuple)


@attrs.frozen(kw_only=True)
class SimulateJob(Event):
    """``WorkerMessage.simulate_job``: ask the server to assign a synthetic job."""

    job_type: agent.JobType = agent.JT_ROOM
    room: models.Room = attrs.field(factory=models.Room)
    participant: models.ParticipantInfo | None = None


# --- server -> worker -------------------------------------------------------


@attrs.frozen(kw_only=True)
class Registered(Event):
    """``ServerMessage.register``: registration accepted."""

    worker_id: str
    server_info: models.ServerInfo = attrs.field(factory=models.ServerInfo)


@attrs.frozen(kw_only=True)
class AvailabilityRequest(Event):
    """``ServerMessage.availability``: will this worker take ``job``?"""

    job: agent.Job
    resuming: bool = False


@attrs.frozen(kw_only=True)
class JobAssignment(Event):
    """``ServerMessage.assignment``: the job is yours; join with ``token``."""

    job: agent.Job
    token: str
    url: str | None = None


@attrs.frozen(kw_only=True)
class JobTermination(Event):
    """``ServerMessage.termination``: stop this job."""

    job_id: str


@attrs.frozen(kw_only=True)
class Pong(Event):
    """``ServerMessage.pong``."""

    last_timestamp: int
    timestamp: int


# --- timers (local only) ------------------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterTimeout(Event):
    """Server side: the worker did not register in time; close the connection."""


@attrs.frozen(kw_only=True)
class AvailabilityTimeout(Event):
    """Server side: the worker did not answer the availability request in time."""

    job_id: str


@attrs.frozen(kw_only=True)
class AssignmentTimeout(Event):
    """Worker side: the accepted job was never assigned; do not launch it."""

    job_id: str


@attrs.frozen(kw_only=True)
class StatusDue(Event):
    """Worker side: time to send ``UpdateWorkerStatus``."""
