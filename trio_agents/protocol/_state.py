"""Every ordering rule of the worker protocol, written as tables.

Rule 1: everything that decides whether a message may be sent or received
lives in this file.  Rule 2: the tables do not know which role we play;
``Connection`` applies them to what it sends (a violation is a
``LocalProtocolError``) and to what it receives (a ``RemoteProtocolError``).

There are two machines:

* the **connection**: a worker must register first; until the server answers
  only pings may cross; a second registration is an error.
* one **job** machine per job id: the server offers a job
  (``AvailabilityRequest``), the worker answers once, the server assigns only
  after an accepting answer, status updates are only for running jobs.

Messages cross in flight, so some cells are ``IGNORE``: receiving them is
harmless and expected (a termination for a job the worker has just finished,
a late availability answer after the server gave up).  Sending into an
``IGNORE`` cell is still a local error: the sender knows better.
"""

from __future__ import annotations

import enum
from typing import Final

from livekit.protocol import agent

from . import _events as ev
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError


class Role(enum.Enum):
    """Which end of the ``/agent`` websocket a ``Connection`` plays."""

    #: The agent worker (``AgentServer``): sends ``WorkerMessage``.
    WORKER = "worker"
    #: The LiveKit server (or the stand-in): sends ``ServerMessage``.
    SERVER = "server"


class ConnectionState(enum.Enum):
    #: Nothing but pings has crossed yet.
    IDLE = "idle"
    #: The worker sent ``Register``; the server has not answered.
    REGISTERING = "registering"
    #: Registered: jobs may flow.
    REGISTERED = "registered"
    #: A remote protocol error happened; the connection must be dropped.
    ERROR = "error"


class JobState(enum.Enum):
    #: Unknown to this connection (never seen, or ended).
    ABSENT = "absent"
    #: The server asked ``AvailabilityRequest`` and waits for the answer.
    OFFERED = "offered"
    #: The worker accepted and waits for ``JobAssignment``.
    ACCEPTED = "accepted"
    #: Assigned (or migrated): status updates and termination may flow.
    RUNNING = "running"
    #: An answer or an assignment timed out; late messages are ignored.
    EXPIRED = "expired"


class _Ignore(enum.Enum):
    IGNORE = "ignore"


#: Table value for a message that is dropped without an event when received.
IGNORE: Final = _Ignore.IGNORE

# Event kinds: the event class, refined where the answer changes the rules.
AVAILABLE = "Availability.accept"
DECLINED = "Availability.decline"
PROGRESS = "UpdateJobStatus.progress"
TERMINAL = "UpdateJobStatus.terminal"


def kind_of(event: ev.Event) -> str:
    """The table key of ``event``."""
    if isinstance(event, ev.Availability):
        return AVAILABLE if event.available and not event.terminate else DECLINED
    if isinstance(event, ev.UpdateJobStatus):
        return TERMINAL if event.status in (agent.JS_SUCCESS, agent.JS_FAILED) else PROGRESS
    return type(event).__name__


#: Who may send each wire event.
SENDER: Final[dict[str, Role]] = {
    "Register": Role.WORKER,
    AVAILABLE: Role.WORKER,
    DECLINED: Role.WORKER,
    "UpdateWorkerStatus": Role.WORKER,
    PROGRESS: Role.WORKER,
    TERMINAL: Role.WORKER,
    "Ping": Role.WORKER,
    "MigrateJob": Role.WORKER,
    "SimulateJob": Role.WORKER,
    "Registered": Role.SERVER,
    "AvailabilityRequest": Role.SERVER,
    "JobAssignment": Role.SERVER,
    "JobTermination": Role.SERVER,
    "Pong": Role.SERVER,
}

#: Timer events, produced only by ``Connection.handle_timer``.
TIMER_KINDS: Final = frozenset(
    {"RegisterTimeout", "AvailabilityTimeout", "AssignmentTimeout", "StatusDue"}
)

ALL_KINDS: Final = frozenset(SENDER) | TIMER_KINDS

S = ConnectionState
J = JobState

#: (connection state, event kind) -> next connection state.  Missing = forbidden.
CONNECTION_TRANSITIONS: Final[dict[tuple[ConnectionState, str], ConnectionState]] = {
    (S.IDLE, "Register"): S.REGISTERING,
    (S.IDLE, "Ping"): S.IDLE,
    (S.IDLE, "Pong"): S.IDLE,
    (S.IDLE, "RegisterTimeout"): S.ERROR,
    (S.REGISTERING, "Registered"): S.REGISTERED,
    (S.REGISTERING, "Ping"): S.REGISTERING,
    (S.REGISTERING, "Pong"): S.REGISTERING,
    (S.REGISTERING, "RegisterTimeout"): S.ERROR,
    **{
        (S.REGISTERED, k): S.REGISTERED
        for k in ALL_KINDS - {"Register", "Registered", "RegisterTimeout"}
    },
}

#: Event kinds that concern one job (looked up in ``JOB_TRANSITIONS`` too).
JOB_KINDS: Final = frozenset(
    {
        "AvailabilityRequest",
        AVAILABLE,
        DECLINED,
        "AvailabilityTimeout",
        "JobAssignment",
        "AssignmentTimeout",
        PROGRESS,
        TERMINAL,
        "JobTermination",
        "MigrateJob",
    }
)

#: (job state, event kind) -> next job state, or IGNORE.  Missing = forbidden.
JOB_TRANSITIONS: Final[dict[tuple[JobState, str], JobState | _Ignore]] = {
    # the offer: answered exactly once
    (J.ABSENT, "AvailabilityRequest"): J.OFFERED,
    (J.OFFERED, AVAILABLE): J.ACCEPTED,
    (J.OFFERED, DECLINED): J.ABSENT,
    (J.OFFERED, "AvailabilityTimeout"): J.EXPIRED,
    (J.EXPIRED, AVAILABLE): IGNORE,  # the server gave up before the answer came
    (J.EXPIRED, DECLINED): IGNORE,
    # the assignment: only after an accepting answer
    (J.ACCEPTED, "JobAssignment"): J.RUNNING,
    (J.ACCEPTED, "AssignmentTimeout"): J.EXPIRED,
    # the worker gave up waiting, but the server thinks the job is running: the
    # worker must report it failed, so both ends agree again.
    (J.EXPIRED, "JobAssignment"): J.RUNNING,
    # running
    (J.RUNNING, PROGRESS): J.RUNNING,
    (J.RUNNING, TERMINAL): J.ABSENT,
    (J.RUNNING, "JobTermination"): J.RUNNING,
    (J.ABSENT, "JobTermination"): IGNORE,  # crossed the job's final status
    (J.EXPIRED, "JobTermination"): IGNORE,
    (J.ABSENT, PROGRESS): IGNORE,  # a job from before a reconnect
    (J.ABSENT, TERMINAL): IGNORE,
    # after a reconnect the worker re-announces what it still runs
    (J.ABSENT, "MigrateJob"): J.RUNNING,
    (J.RUNNING, "MigrateJob"): J.RUNNING,
    (J.EXPIRED, "MigrateJob"): J.RUNNING,
}


def connection_transition(state: ConnectionState, kind: str, *, local: bool) -> ConnectionState:
    """Next connection state, or the ``ProtocolError`` for whoever broke the rule."""
    try:
        return CONNECTION_TRANSITIONS[state, kind]
    except KeyError:
        err: type[ProtocolError] = LocalProtocolError if local else RemoteProtocolError
        raise err(f"{kind} is not allowed while the connection is {state.value}") from None


#: Cells that exist only for a message that crossed a timeout in flight: the
#: receiver accepts it, but the sender knows better, so sending into one is a
#: local error, as for ``IGNORE`` cells.  ``JobAssignment`` for an expired job
#: is the worker's late assignment; the server's own ``EXPIRED`` means the
#: answer timed out, and LiveKit never assigns such a job.
RECEIVE_ONLY: Final = frozenset({(J.EXPIRED, "JobAssignment")})


def job_transition(state: JobState, kind: str, *, local: bool) -> JobState | _Ignore:
    """Next job state (or ``IGNORE``), or the ``ProtocolError`` for the culprit."""
    nxt = JOB_TRANSITIONS.get((state, kind))
    if nxt is None or (local and (nxt is IGNORE or (state, kind) in RECEIVE_ONLY)):
        err: type[ProtocolError] = LocalProtocolError if local else RemoteProtocolError
        raise err(f"{kind} is not allowed for a job that is {state.value}")
    return nxt
