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
from typing import Final, TypeAlias

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

class Refined(enum.Enum):
    """Kinds of the two events whose content changes the rules."""

    #: ``Availability`` accepting the job.
    AVAILABLE = "Availability.accept"
    #: ``Availability`` declining it (or asking the server to terminate it).
    DECLINED = "Availability.decline"
    #: ``UpdateJobStatus`` with a non-final status.
    PROGRESS = "UpdateJobStatus.progress"
    #: ``UpdateJobStatus`` with ``JS_SUCCESS``/``JS_FAILED``.
    TERMINAL = "UpdateJobStatus.terminal"


AVAILABLE: Final = Refined.AVAILABLE
DECLINED: Final = Refined.DECLINED
PROGRESS: Final = Refined.PROGRESS
TERMINAL: Final = Refined.TERMINAL

#: A table key: the event's class, or its refinement.  Keys are the classes
#: themselves, so renaming an event cannot silently drop it from a table.
Kind: TypeAlias = "type[ev.Event] | Refined"


def kind_of(event: ev.Event) -> Kind:
    """The table key of ``event``."""
    if isinstance(event, ev.Availability):
        return AVAILABLE if event.available and not event.terminate else DECLINED
    if isinstance(event, ev.UpdateJobStatus):
        return TERMINAL if event.status in (agent.JS_SUCCESS, agent.JS_FAILED) else PROGRESS
    return type(event)


def kind_name(kind: Kind) -> str:
    """How errors name a kind: ``Register``, ``Availability.accept``, ..."""
    return kind.value if isinstance(kind, Refined) else kind.__name__


#: Who may send each wire event.
SENDER: Final[dict[Kind, Role]] = {
    ev.Register: Role.WORKER,
    AVAILABLE: Role.WORKER,
    DECLINED: Role.WORKER,
    ev.UpdateWorkerStatus: Role.WORKER,
    PROGRESS: Role.WORKER,
    TERMINAL: Role.WORKER,
    ev.Ping: Role.WORKER,
    ev.MigrateJob: Role.WORKER,
    ev.SimulateJob: Role.WORKER,
    ev.Registered: Role.SERVER,
    ev.AvailabilityRequest: Role.SERVER,
    ev.JobAssignment: Role.SERVER,
    ev.JobTermination: Role.SERVER,
    ev.Pong: Role.SERVER,
}

#: Timer events, produced only by ``Connection.handle_timer``.
TIMER_KINDS: Final = frozenset(
    {ev.RegisterTimeout, ev.AvailabilityTimeout, ev.AssignmentTimeout, ev.StatusDue}
)

ALL_KINDS: Final = frozenset(SENDER) | TIMER_KINDS

_C = ConnectionState  # (short names for the tables below only)
_J = JobState

#: (connection state, event kind) -> next connection state.  Missing = forbidden.
CONNECTION_TRANSITIONS: Final[dict[tuple[ConnectionState, Kind], ConnectionState]] = {
    (_C.IDLE, ev.Register): _C.REGISTERING,
    (_C.IDLE, ev.Ping): _C.IDLE,
    (_C.IDLE, ev.Pong): _C.IDLE,
    (_C.IDLE, ev.RegisterTimeout): _C.ERROR,
    (_C.REGISTERING, ev.Registered): _C.REGISTERED,
    (_C.REGISTERING, ev.Ping): _C.REGISTERING,
    (_C.REGISTERING, ev.Pong): _C.REGISTERING,
    (_C.REGISTERING, ev.RegisterTimeout): _C.ERROR,
    **{
        (_C.REGISTERED, k): _C.REGISTERED
        for k in ALL_KINDS - {ev.Register, ev.Registered, ev.RegisterTimeout}
    },
}

#: Event kinds that concern one job (looked up in ``JOB_TRANSITIONS`` too).
JOB_KINDS: Final = frozenset(
    {
        ev.AvailabilityRequest,
        AVAILABLE,
        DECLINED,
        ev.AvailabilityTimeout,
        ev.JobAssignment,
        ev.AssignmentTimeout,
        PROGRESS,
        TERMINAL,
        ev.JobTermination,
        ev.MigrateJob,
    }
)

#: (job state, event kind) -> next job state, or IGNORE.  Missing = forbidden.
JOB_TRANSITIONS: Final[dict[tuple[JobState, Kind], JobState | _Ignore]] = {
    # the offer: answered exactly once
    (_J.ABSENT, ev.AvailabilityRequest): _J.OFFERED,
    (_J.OFFERED, AVAILABLE): _J.ACCEPTED,
    (_J.OFFERED, DECLINED): _J.ABSENT,
    (_J.OFFERED, ev.AvailabilityTimeout): _J.EXPIRED,
    (_J.EXPIRED, AVAILABLE): IGNORE,  # the server gave up before the answer came
    (_J.EXPIRED, DECLINED): IGNORE,
    # the assignment: only after an accepting answer
    (_J.ACCEPTED, ev.JobAssignment): _J.RUNNING,
    (_J.ACCEPTED, ev.AssignmentTimeout): _J.EXPIRED,
    # the worker gave up waiting, but the server thinks the job is running: the
    # worker must report it failed, so both ends agree again.
    (_J.EXPIRED, ev.JobAssignment): _J.RUNNING,
    # running
    (_J.RUNNING, PROGRESS): _J.RUNNING,
    (_J.RUNNING, TERMINAL): _J.ABSENT,
    (_J.RUNNING, ev.JobTermination): _J.RUNNING,
    (_J.ABSENT, ev.JobTermination): IGNORE,  # crossed the job's final status
    (_J.EXPIRED, ev.JobTermination): IGNORE,
    (_J.ABSENT, PROGRESS): IGNORE,  # a job from before a reconnect
    (_J.ABSENT, TERMINAL): IGNORE,
    # after a reconnect the worker re-announces what it still runs
    (_J.ABSENT, ev.MigrateJob): _J.RUNNING,
    (_J.RUNNING, ev.MigrateJob): _J.RUNNING,
    (_J.EXPIRED, ev.MigrateJob): _J.RUNNING,
}


def connection_transition(state: ConnectionState, kind: Kind, *, local: bool) -> ConnectionState:
    """Next connection state, or the ``ProtocolError`` for whoever broke the rule."""
    try:
        return CONNECTION_TRANSITIONS[state, kind]
    except KeyError:
        err: type[ProtocolError] = LocalProtocolError if local else RemoteProtocolError
        raise err(
            f"{kind_name(kind)} is not allowed while the connection is {state.value}"
        ) from None


#: Cells that exist only for a message that crossed a timeout in flight: the
#: receiver accepts it, but the sender knows better, so sending into one is a
#: local error, as for ``IGNORE`` cells.  ``JobAssignment`` for an expired job
#: is the worker's late assignment; the server's own ``EXPIRED`` means the
#: answer timed out, and LiveKit never assigns such a job.
RECEIVE_ONLY: Final = frozenset({(_J.EXPIRED, ev.JobAssignment)})


def job_transition(state: JobState, kind: Kind, *, local: bool) -> JobState | _Ignore:
    """Next job state (or ``IGNORE``), or the ``ProtocolError`` for the culprit."""
    nxt = JOB_TRANSITIONS.get((state, kind))
    if nxt is None or (local and (nxt is IGNORE or (state, kind) in RECEIVE_ONLY)):
        err: type[ProtocolError] = LocalProtocolError if local else RemoteProtocolError
        raise err(f"{kind_name(kind)} is not allowed for a job that is {state.value}")
    return nxt
