"""Events <-> ``livekit.protocol.agent`` messages.  The only protobuf-aware module.

Each websocket message carries exactly one ``WorkerMessage`` (worker to server)
or ``ServerMessage`` (server to worker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent

from . import _events as ev
from ._errors import RemoteProtocolError

_M = TypeVar("_M", bound=Message)

#: LiveKit rejects websocket frames larger than this.
MAX_MESSAGE_SIZE = 2 * 1024 * 1024


def _copy(msg: _M) -> _M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


# --- encode -------------------------------------------------------------------


def encode_worker_message(event: ev.Event) -> bytes:
    """Serialize a worker-to-server event."""
    msg = agent.WorkerMessage()
    match event:
        case ev.Register():
            msg.register.type = event.job_type
            msg.register.agent_name = event.agent_name
            msg.register.version = event.version
            msg.register.ping_interval = event.ping_interval
            msg.register.deployment = event.deployment
            msg.register.allowed_permissions.CopyFrom(event.permissions)
        case ev.Availability():
            a = msg.availability
            a.job_id = event.job_id
            a.available = event.available
            a.terminate = event.terminate
            a.supports_resume = event.supports_resume
            a.participant_identity = event.participant_identity
            a.participant_name = event.participant_name
            a.participant_metadata = event.participant_metadata
            a.participant_attributes.update(event.participant_attributes)
        case ev.UpdateWorkerStatus():
            msg.update_worker.job_count = event.job_count
            if event.status is not None:
                msg.update_worker.status = event.status
            if event.load is not None:
                msg.update_worker.load = event.load
        case ev.UpdateJobStatus():
            msg.update_job.job_id = event.job_id
            msg.update_job.status = event.status
            msg.update_job.error = event.error
        case ev.Ping():
            msg.ping.timestamp = event.timestamp
        case ev.MigrateJob():
            msg.migrate_job.job_ids.extend(event.job_ids)
        case ev.SimulateJob():
            msg.simulate_job.type = event.job_type
            msg.simulate_job.room.CopyFrom(event.room)
            if event.participant is not None:
                msg.simulate_job.participant.CopyFrom(event.participant)
        case _:
            raise TypeError(f"{type(event).__name__} is not a worker-to-server message")
    return msg.SerializeToString()


def encode_server_message(event: ev.Event) -> bytes:
    """Serialize a server-to-worker event."""
    msg = agent.ServerMessage()
    match event:
        case ev.Registered():
            msg.register.worker_id = event.worker_id
            msg.register.server_info.CopyFrom(event.server_info)
        case ev.AvailabilityRequest():
            msg.availability.job.CopyFrom(event.job)
            msg.availability.resuming = event.resuming
        case ev.JobAssignment():
            msg.assignment.job.CopyFrom(event.job)
            msg.assignment.token = event.token
            if event.url is not None:
                msg.assignment.url = event.url
        case ev.JobTermination():
            msg.termination.job_id = event.job_id
        case ev.Pong():
            msg.pong.last_timestamp = event.last_timestamp
            msg.pong.timestamp = event.timestamp
        case _:
            raise TypeError(f"{type(event).__name__} is not a server-to-worker message")
    return msg.SerializeToString()


# --- decode -------------------------------------------------------------------


def _parse(cls: type[_M], data: bytes) -> _M:
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(
            f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit"
        )
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise RemoteProtocolError(f"undecodable {cls.DESCRIPTOR.name}: {exc}") from exc
    except Exception as exc:  # upb may raise other errors on hostile input
        raise RemoteProtocolError(f"undecodable {cls.DESCRIPTOR.name}: {exc!r}") from exc


def _worker_register(m: agent.WorkerMessage) -> ev.Event:
    r = m.register
    if r.type not in agent.JobType.values():
        raise RemoteProtocolError(f"register: unknown job type {r.type}")
    return ev.Register(
        agent_name=r.agent_name,
        job_type=r.type,
        version=r.version,
        ping_interval=r.ping_interval,
        deployment=r.deployment,
        # LiveKit grants subscribe/publish/data/metadata when the field is absent
        permissions=(
            _copy(r.allowed_permissions)
            if r.HasField("allowed_permissions")
            else ev._default_permissions()
        ),
    )


def _worker_availability(m: agent.WorkerMessage) -> ev.Event:
    a = m.availability
    return ev.Availability(
        job_id=a.job_id,
        available=a.available,
        terminate=a.terminate,
        supports_resume=a.supports_resume,
        participant_identity=a.participant_identity,
        participant_name=a.participant_name,
        participant_metadata=a.participant_metadata,
        participant_attributes=dict(a.participant_attributes),
    )


def _worker_update_worker(m: agent.WorkerMessage) -> ev.Event:
    u = m.update_worker
    return ev.UpdateWorkerStatus(
        status=u.status if u.HasField("status") else None,
        load=u.load,
        job_count=u.job_count,
    )


def _worker_update_job(m: agent.WorkerMessage) -> ev.Event:
    u = m.update_job
    return ev.UpdateJobStatus(job_id=u.job_id, status=u.status, error=u.error)


def _worker_simulate(m: agent.WorkerMessage) -> ev.Event:
    s = m.simulate_job
    return ev.SimulateJob(
        job_type=s.type,
        room=_copy(s.room),
        participant=_copy(s.participant) if s.HasField("participant") else None,
    )


_WORKER_DECODERS: dict[str, Callable[[agent.WorkerMessage], ev.Event]] = {
    "register": _worker_register,
    "availability": _worker_availability,
    "update_worker": _worker_update_worker,
    "update_job": _worker_update_job,
    "ping": lambda m: ev.Ping(timestamp=m.ping.timestamp),
    "migrate_job": lambda m: ev.MigrateJob(job_ids=tuple(m.migrate_job.job_ids)),
    "simulate_job": _worker_simulate,
}


def decode_worker_message(data: bytes) -> ev.Event:
    """Parse one ``WorkerMessage``; raise ``RemoteProtocolError`` on bad bytes."""
    msg = _parse(agent.WorkerMessage, data)
    which = msg.WhichOneof("message")
    if which is None:
        raise RemoteProtocolError("WorkerMessage carries no known message")
    decoder = _WORKER_DECODERS.get(which)
    if decoder is None:
        raise RemoteProtocolError(f"unsupported WorkerMessage {which!r}")
    return decoder(msg)


_SERVER_DECODERS: dict[str, Callable[[agent.ServerMessage], ev.Event]] = {
    "register": lambda m: ev.Registered(
        worker_id=m.register.worker_id, server_info=_copy(m.register.server_info)
    ),
    "availability": lambda m: ev.AvailabilityRequest(
        job=_copy(m.availability.job), resuming=m.availability.resuming
    ),
    "assignment": lambda m: ev.JobAssignment(
        job=_copy(m.assignment.job),
        token=m.assignment.token,
        url=m.assignment.url if m.assignment.HasField("url") else None,
    ),
    "termination": lambda m: ev.JobTermination(job_id=m.termination.job_id),
    "pong": lambda m: ev.Pong(last_timestamp=m.pong.last_timestamp, timestamp=m.pong.timestamp),
}


def decode_server_message(data: bytes) -> ev.Event | None:
    """Parse one ``ServerMessage``.

    Returns ``None`` for ``go_away``, which LiveKit's own worker ignores too.
    """
    msg = _parse(agent.ServerMessage, data)
    which = msg.WhichOneof("message")
    if which is None:
        raise RemoteProtocolError("ServerMessage carries no known message")
    if which == "go_away":
        return None
    decoder = _SERVER_DECODERS.get(which)
    if decoder is None:
        raise RemoteProtocolError(f"unsupported ServerMessage {which!r}")
    return decoder(msg)
