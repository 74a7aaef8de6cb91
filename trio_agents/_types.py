"""Public enums and small value types shared by the worker and the jobs."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs
from livekit.protocol import agent, models

__all__ = [
    "DEFAULT_PARTICIPANT_KINDS",
    "AutoSubscribe",
    "JobAcceptArguments",
    "JobExecutorType",
    "JobOutcome",
    "RunningJobInfo",
    "ServerType",
    "WorkerPermissions",
]


class JobExecutorType(enum.Enum):
    """Where a job runs."""

    #: Its own child process with its own ``trio.run`` (the default).
    PROCESS = "process"
    #: Its own ``trio.run`` in a thread of the worker process.
    THREAD = "thread"
    #: A task in the worker's own trio run (tests, debugging).
    INLINE = "inline"


class ServerType(enum.IntEnum):
    """Which jobs a worker takes (LiveKit ``JobType``)."""

    ROOM = agent.JT_ROOM
    PUBLISHER = agent.JT_PUBLISHER
    PARTICIPANT = agent.JT_PARTICIPANT


class AutoSubscribe(enum.Enum):
    """Which remote tracks ``JobContext.connect`` subscribes to."""

    SUBSCRIBE_ALL = "subscribe_all"
    SUBSCRIBE_NONE = "subscribe_none"
    AUDIO_ONLY = "audio_only"
    VIDEO_ONLY = "video_only"


#: Participant kinds a participant entrypoint runs for by default.
DEFAULT_PARTICIPANT_KINDS: tuple[int, ...] = (
    models.ParticipantInfo.STANDARD,
    models.ParticipantInfo.SIP,
    models.ParticipantInfo.CONNECTOR,
)


@attrs.frozen(kw_only=True)
class WorkerPermissions:
    """Permissions the agent participant gets in its rooms."""

    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_metadata: bool = True
    can_publish_sources: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    hidden: bool = False

    def to_proto(self) -> models.ParticipantPermission:
        return models.ParticipantPermission(
            can_publish=self.can_publish,
            can_subscribe=self.can_subscribe,
            can_publish_data=self.can_publish_data,
            can_update_metadata=self.can_update_metadata,
            can_publish_sources=list(self.can_publish_sources),  # type: ignore[arg-type]
            hidden=self.hidden,
            agent=True,
        )


def _attrs_dict(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class JobAcceptArguments:
    """How the agent participant presents itself in the room."""

    identity: str
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = attrs.field(factory=dict, converter=_attrs_dict)


@attrs.frozen(kw_only=True)
class RunningJobInfo:
    """Everything a job needs to start, in the worker or in a child process."""

    job: agent.Job
    url: str
    token: str
    worker_id: str
    accept_arguments: JobAcceptArguments
    api_key: str = ""
    api_secret: str = ""
    fake_job: bool = False

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # protobuf classes do not pickle by reference; carry the Job as bytes
        return (
            _rebuild_running_job_info,
            (
                self.job.SerializeToString(),
                self.url,
                self.token,
                self.worker_id,
                self.accept_arguments,
                self.api_key,
                self.api_secret,
                self.fake_job,
            ),
        )


def _rebuild_running_job_info(
    job: bytes,
    url: str,
    token: str,
    worker_id: str,
    accept_arguments: JobAcceptArguments,
    api_key: str,
    api_secret: str,
    fake_job: bool,
) -> RunningJobInfo:
    return RunningJobInfo(
        job=agent.Job.FromString(job),
        url=url,
        token=token,
        worker_id=worker_id,
        accept_arguments=accept_arguments,
        api_key=api_key,
        api_secret=api_secret,
        fake_job=fake_job,
    )


class OutcomeKind(enum.Enum):
    #: The job ended by one of its normal triggers and nothing failed.
    CLEAN = "clean"
    #: The entrypoint (or job start-up) raised.
    ERROR = "error"
    #: The teardown deadline was hit (the job was cut off).
    DEADLINE = "deadline"
    #: The job process crashed or was killed.
    CRASHED = "crashed"
    #: The job used more memory than ``job_memory_limit_mb``.
    MEMORY_LIMIT = "memory_limit"


@attrs.frozen(kw_only=True)
class JobOutcome:
    """How a job ended, computed from what happened; reported to the server."""

    kind: OutcomeKind
    #: Why shutdown started (first reason wins): "room disconnected", ...
    reason: str = ""
    #: Error text for JS_FAILED ("" for a clean end).
    error: str = ""
    #: Errors recorded during teardown (hooks, room deletion, ...), as text.
    teardown_errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.CLEAN

    @property
    def job_status(self) -> agent.JobStatus:
        return agent.JS_SUCCESS if self.ok else agent.JS_FAILED
