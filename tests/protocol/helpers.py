"""Test helpers: a worker and a server ``Connection`` joined by a fake wire.

``ConnectionPair`` plays both ends of one ``/agent`` websocket with a fake
clock.  ``send`` delivers at once and checks what the other end makes of the
message; ``send_later`` and ``deliver`` keep messages in flight, one FIFO queue
per direction like a real websocket, so tests can make messages cross.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from livekit.protocol import agent, models

from trio_agents.protocol import (
    Availability,
    AvailabilityRequest,
    Connection,
    Event,
    JobAssignment,
    JobState,
    Register,
    Registered,
    Role,
    UpdateJobStatus,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def make_job(job_id: str, **fields: object) -> agent.Job:
    """A plausible ``agent.Job`` with ``job_id``."""
    return agent.Job(
        id=job_id,
        type=agent.JT_ROOM,
        room=models.Room(sid="RM_test", name="test-room"),
        **fields,  # type: ignore[arg-type]
    )


def other(role: Role) -> Role:
    return Role.SERVER if role is Role.WORKER else Role.WORKER


class ConnectionPair:
    """A worker ``Connection`` and a server ``Connection`` on one fake wire."""

    def __init__(self, clock: FakeClock | None = None, **timeouts: float) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.worker = Connection(Role.WORKER, clock=self.clock, **timeouts)
        self.server = Connection(Role.SERVER, clock=self.clock, **timeouts)
        #: Messages in flight, keyed by their sender, oldest first.
        self.in_flight: dict[Role, deque[tuple[Event, bytes]]] = {
            Role.WORKER: deque(),
            Role.SERVER: deque(),
        }
        #: Every job the server offered, by id, so assignments reuse it.
        self.offered: dict[str, agent.Job] = {}

    def conn(self, role: Role) -> Connection:
        return self.worker if role is Role.WORKER else self.server

    # --- the wire -----------------------------------------------------------

    def send(
        self,
        role: Role,
        event: Event,
        *,
        expect: Literal["match", "ignored"] = "match",
    ) -> Event | None:
        """``role`` sends ``event`` and the other end receives it at once.

        ``expect="match"``: the receiver must produce an event equal to the one
        sent; ``expect="ignored"``: the receiver must drop it (``None``).
        Messages already in flight from ``role`` are delivered first.
        """
        self.send_later(role, event)
        while len(self.in_flight[role]) > 1:
            self.deliver(role)
        sent, _ = self.in_flight[role][0]
        got = self.deliver(role)
        if expect == "match":
            assert got == sent
        else:
            assert got is None
        return got

    def send_later(self, role: Role, event: Event) -> bytes:
        """``role`` sends ``event``; it stays in flight until ``deliver``."""
        data = self.conn(role).send(event)
        assert isinstance(data, bytes)
        self.in_flight[role].append((event, data))
        return data

    def deliver(self, sender: Role) -> Event | None:
        """Deliver the oldest message in flight from ``sender``."""
        _, data = self.in_flight[sender].popleft()
        return self.conn(other(sender)).receive_message(data)

    def deliver_all(self) -> None:
        while self.in_flight[Role.WORKER] or self.in_flight[Role.SERVER]:
            for role in (Role.WORKER, Role.SERVER):
                if self.in_flight[role]:
                    self.deliver(role)

    # --- time ---------------------------------------------------------------

    def advance(self, seconds: float) -> dict[Role, list[Event]]:
        """Move the clock and fire both ends' due timers."""
        now = self.clock.advance(seconds)
        return {
            Role.WORKER: self.worker.handle_timer(now),
            Role.SERVER: self.server.handle_timer(now),
        }

    # --- protocol steps -----------------------------------------------------

    def register(self, worker_id: str = "AW_test", **register: object) -> Registered:
        self.send(Role.WORKER, Register(**register))  # type: ignore[arg-type]
        reply = Registered(worker_id=worker_id)
        self.send(Role.SERVER, reply)
        return reply

    def offer(self, job_id: str, **fields: object) -> agent.Job:
        job = make_job(job_id, **fields)
        self.offered[job_id] = job
        self.send(Role.SERVER, AvailabilityRequest(job=job))
        return job

    def accept(self, job_id: str, **answer: object) -> None:
        self.send(Role.WORKER, Availability(job_id=job_id, available=True, **answer))  # type: ignore[arg-type]

    def decline(self, job_id: str, *, terminate: bool = False) -> None:
        self.send(Role.WORKER, Availability(job_id=job_id, available=False, terminate=terminate))

    def assign(self, job_id: str, token: str = "agent-token") -> JobAssignment:
        assignment = JobAssignment(job=self.offered[job_id], token=token)
        self.send(Role.SERVER, assignment)
        return assignment

    def start_job(self, job_id: str) -> None:
        """Offer, accept and assign ``job_id``: it ends up running on both ends."""
        self.offer(job_id)
        self.accept(job_id)
        self.assign(job_id)

    def report(self, job_id: str, status: agent.JobStatus.ValueType) -> None:
        self.send(Role.WORKER, UpdateJobStatus(job_id=job_id, status=status))

    # --- inspection ---------------------------------------------------------

    def running(self, role: Role) -> set[str]:
        return set(self.conn(role).jobs(JobState.RUNNING))

    def job_states(self, job_id: str) -> tuple[JobState, JobState]:
        """``(worker's view, server's view)`` of ``job_id``."""
        return self.worker.job_state(job_id), self.server.job_state(job_id)


def snapshot(conn: Connection, *job_ids: str) -> tuple[object, ...]:
    """Everything public about ``conn``, to check that a call changed nothing."""
    return (
        conn.state,
        conn.jobs(),
        conn.next_deadline(),
        tuple(conn.job_state(j) for j in job_ids),
    )
