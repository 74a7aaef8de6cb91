"""``Connection``: the worker protocol for one websocket, with no I/O at all.

Feed it each received websocket message with ``receive_message`` and get an
event back; give it events with ``send`` and get the bytes to put on the wire.
Time is an input too: ``next_deadline()`` says when to call
``handle_timer(now)``, which returns the timer events that fell due.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from . import _events as ev
from ._codec import (
    MAX_MESSAGE_SIZE,
    decode_server_message,
    decode_worker_message,
    encode_server_message,
    encode_worker_message,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._state import (
    IGNORE,
    JOB_KINDS,
    SENDER,
    TIMER_KINDS,
    ConnectionState,
    JobState,
    Role,
    connection_transition,
    job_transition,
    kind_name,
    kind_of,
)

#: LiveKit closes a connection that has not registered within this many seconds.
REGISTER_TIMEOUT = 10.0
#: LiveKit waits this long for an availability answer.
AVAILABILITY_TIMEOUT = 10.0
#: The worker waits this long for the assignment of a job it accepted.
ASSIGNMENT_TIMEOUT = 7.5
#: The worker reports its status this often.
STATUS_INTERVAL = 2.5

_MAX_EXPIRED = 1024  # expired job ids remembered to recognise late messages


def _job_ids(event: ev.Event) -> Iterable[str]:
    match event:
        case ev.AvailabilityRequest() | ev.JobAssignment():
            return (event.job.id,)
        case ev.MigrateJob():
            return event.job_ids
        case (
            ev.Availability()
            | ev.UpdateJobStatus()
            | ev.JobTermination()
            | ev.AvailabilityTimeout()
            | ev.AssignmentTimeout()
        ):
            return (event.job_id,)
    return ()


class Connection:
    """One end of an ``/agent`` websocket.

    Args:
        our_role: ``Role.WORKER`` or ``Role.SERVER``.
        clock: returns the current time in seconds; timers are armed from it
            (pass ``trio.current_time`` under trio, a fake in tests).
    """

    def __init__(
        self,
        our_role: Role,
        *,
        clock: Callable[[], float] = time.monotonic,
        register_timeout: float = REGISTER_TIMEOUT,
        availability_timeout: float = AVAILABILITY_TIMEOUT,
        assignment_timeout: float = ASSIGNMENT_TIMEOUT,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        if not isinstance(our_role, Role):
            raise TypeError(f"our_role must be a Role, not {our_role!r}")
        self.our_role = our_role
        self.their_role = Role.SERVER if our_role is Role.WORKER else Role.WORKER
        self._clock = clock
        self._availability_timeout = availability_timeout
        self._assignment_timeout = assignment_timeout
        self._status_interval = status_interval
        self._state = ConnectionState.IDLE
        self._jobs: dict[str, JobState] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        # timers: key -> (deadline, event to fire)
        self._timers: dict[tuple[str, str], tuple[float, ev.Event]] = {}
        if our_role is Role.SERVER:
            self._arm(("register", ""), register_timeout, ev.RegisterTimeout())

    # --- inspection ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    def job_state(self, job_id: str) -> JobState:
        """Where ``job_id`` stands on this connection."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        return JobState.EXPIRED if job_id in self._expired else JobState.ABSENT

    def jobs(self, state: JobState | None = None) -> dict[str, JobState]:
        """Known jobs (not ``ABSENT``/``EXPIRED``), optionally only those in ``state``."""
        return {j: s for j, s in self._jobs.items() if state is None or s is state}

    # --- time ---------------------------------------------------------------

    def next_deadline(self) -> float:
        """When ``handle_timer`` should next be called (``inf`` if never)."""
        return min((d for d, _ in self._timers.values()), default=float("inf"))

    def handle_timer(self, now: float) -> list[ev.Event]:
        """Fire every timer due at ``now``; return their events, earliest first."""
        due = sorted(
            ((d, key, e) for key, (d, e) in self._timers.items() if d <= now),
            key=lambda t: t[0],
        )
        out: list[ev.Event] = []
        for deadline, key, event in due:
            del self._timers[key]
            if isinstance(event, ev.StatusDue):
                if self._state is ConnectionState.REGISTERED:
                    # periodic: next beat from the scheduled time, skipping missed ones
                    nxt = deadline + self._status_interval
                    while nxt <= now:
                        nxt += self._status_interval
                    self._timers[key] = (nxt, event)
                    out.append(event)
                continue
            self._apply(event, local=True)
            out.append(event)
        return out

    def _arm(self, key: tuple[str, str], delay: float, event: ev.Event) -> None:
        self._timers[key] = (self._clock() + delay, event)

    # --- wire ---------------------------------------------------------------

    def send(self, event: ev.Event) -> bytes:
        """Check ``event`` against the rules and return the bytes to send.

        Raises:
            LocalProtocolError: the protocol forbids sending it now; nothing changed.
        """
        if self._state is ConnectionState.ERROR:
            raise LocalProtocolError("the connection failed; open a new one")
        kind = kind_of(event)
        if SENDER.get(kind) is not self.our_role:
            raise LocalProtocolError(f"a {self.our_role.value} cannot send {kind_name(kind)}")
        # encode before applying: an event that cannot go out must change nothing
        encode = encode_worker_message if self.our_role is Role.WORKER else encode_server_message
        data = encode(event)
        if len(data) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"{kind_name(kind)} encodes to {len(data)} bytes, over the limit"
            )
        self._apply(event, local=True)
        return data

    def receive_message(self, data: bytes) -> ev.Event | None:
        """Take one websocket message from the peer.

        Returns the event, or ``None`` when the message is one that the protocol
        tolerates but that needs no action (a late answer, a termination that
        crossed the job's end, ``go_away``).

        Raises:
            RemoteProtocolError: bytes that do not decode, or a message the
                peer was not allowed to send; the connection is then unusable.
        """
        if self._state is ConnectionState.ERROR:
            raise RemoteProtocolError("the connection already failed")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        try:
            if self.our_role is Role.SERVER:
                event: ev.Event | None = decode_worker_message(bytes(data))
            else:
                event = decode_server_message(bytes(data))
            if event is None:
                return None
            return event if self._apply(event, local=False) else None
        except RemoteProtocolError:
            self._state = ConnectionState.ERROR
            self._timers.clear()
            raise

    # --- the rules ----------------------------------------------------------

    def _apply(self, event: ev.Event, *, local: bool) -> bool:
        """Apply ``event`` to both machines; False if it is to be ignored.

        Validates everything before changing anything, so a ``LocalProtocolError``
        leaves the connection as it was.
        """
        kind = kind_of(event)
        if kind not in TIMER_KINDS:
            sender = self.our_role if local else self.their_role
            if SENDER[kind] is not sender:  # decode already sorts by role
                raise RemoteProtocolError(f"a {sender.value} cannot send {kind_name(kind)}")
        new_conn = connection_transition(self._state, kind, local=local)
        job_updates: dict[str, JobState] = {}
        ignored = False
        if kind in JOB_KINDS:
            for job_id in _job_ids(event):
                if not job_id:
                    err = LocalProtocolError if local else RemoteProtocolError
                    raise err(f"{kind_name(kind)} needs a job id")
                nxt = job_transition(self.job_state(job_id), kind, local=local)
                if nxt is IGNORE:
                    ignored = True
                else:
                    job_updates[job_id] = nxt
        # commit
        old_conn, self._state = self._state, new_conn
        for job_id, state in job_updates.items():
            self._set_job(job_id, state)
        self._after(event, old_conn)
        return not ignored

    def _set_job(self, job_id: str, state: JobState) -> None:
        self._expired.pop(job_id, None)
        if state is JobState.ABSENT:
            self._jobs.pop(job_id, None)
        elif state is JobState.EXPIRED:
            self._jobs.pop(job_id, None)
            self._expired[job_id] = None
            while len(self._expired) > _MAX_EXPIRED:
                self._expired.popitem(last=False)
        else:
            self._jobs[job_id] = state

    def _after(self, event: ev.Event, old: ConnectionState) -> None:
        """Arm and disarm timers once a transition is committed."""
        match event:
            case ev.Registered():
                self._timers.pop(("register", ""), None)
                if self.our_role is Role.WORKER:
                    self._arm(("status", ""), self._status_interval, ev.StatusDue())
            case ev.AvailabilityRequest() if self.our_role is Role.SERVER:
                job_id = event.job.id
                self._arm(
                    ("availability", job_id),
                    self._availability_timeout,
                    ev.AvailabilityTimeout(job_id=job_id),
                )
            case ev.Availability():
                self._timers.pop(("availability", event.job_id), None)
                if (
                    self.our_role is Role.WORKER
                    and self.job_state(event.job_id) is JobState.ACCEPTED
                ):
                    self._arm(
                        ("assignment", event.job_id),
                        self._assignment_timeout,
                        ev.AssignmentTimeout(job_id=event.job_id),
                    )
            case ev.JobAssignment():
                self._timers.pop(("assignment", event.job.id), None)
