"""A minimal scripted ``/agent`` worker for testing the stand-in server.

It is ``protocol.Connection(Role.WORKER)`` over ``open_websocket``, and nothing
else: tests say exactly what the worker sends and read exactly what the server
answers.  Because every received message goes through the worker-side protocol
core, a server that breaks the protocol's ordering rules fails the test with a
``RemoteProtocolError``.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import attrs
import trio
from livekit import api as lkapi
from livekit.protocol import agent

from trio_agents import protocol
from trio_agents._errors import ConnectionClosed
from trio_agents._transport import MessageStream, open_websocket
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET

E = TypeVar("E", bound=protocol.Event)


def worker_token(
    *,
    api_key: str = DEV_API_KEY,
    api_secret: str = DEV_API_SECRET,
    agent: bool = True,
    ttl: datetime.timedelta = datetime.timedelta(hours=6),
) -> str:
    """The JWT a worker authenticates with (``VideoGrants(agent=True)`` by default)."""
    return (
        lkapi.AccessToken(api_key, api_secret)
        .with_grants(lkapi.VideoGrants(agent=agent))
        .with_ttl(ttl)
        .to_jwt()
    )


def accept(
    request: protocol.AvailabilityRequest,
    *,
    identity: str | None = None,
    name: str = "",
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
) -> protocol.Availability:
    """An accepting answer, with the official worker's default identity ``agent-<job id>``."""
    return protocol.Availability(
        job_id=request.job.id,
        available=True,
        participant_identity=identity if identity is not None else f"agent-{request.job.id}",
        participant_name=name,
        participant_metadata=metadata,
        participant_attributes=dict(attributes or {}),
    )


def decline(
    request: protocol.AvailabilityRequest, *, terminate: bool = False
) -> protocol.Availability:
    return protocol.Availability(job_id=request.job.id, available=False, terminate=terminate)


#: What an auto-answering worker does with an offer; None leaves it unanswered.
Policy = Callable[[protocol.AvailabilityRequest], protocol.Availability | None]


@attrs.define(eq=False)
class ScriptedWorker:
    """One worker connection, driven step by step by a test."""

    ws: MessageStream
    conn: protocol.Connection
    worker_id: str | None = None
    registered: protocol.Registered | None = None
    #: Filled by ``auto_answer``: everything the server sent, by kind.
    offers: list[protocol.AvailabilityRequest] = attrs.field(factory=list)
    assignments: list[protocol.JobAssignment] = attrs.field(factory=list)
    terminations: list[str] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    # --- raw wire ---------------------------------------------------------------

    async def send(self, event: protocol.Event) -> None:
        await self.ws.send_message(self.conn.send(event))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send_message(data)

    async def receive(self) -> protocol.Event:
        """The next event from the server (tolerated no-op messages are skipped)."""
        event, _ = await self.receive_frame()
        return event

    async def receive_frame(self) -> tuple[protocol.Event, agent.ServerMessage]:
        """The next event and the ``ServerMessage`` frame it came in, exactly as sent."""
        while True:
            raw = await self.ws.get_message()
            assert isinstance(raw, bytes), f"server sent a text frame to a binary worker: {raw!r}"
            event = self.conn.receive_message(raw)
            if event is not None:
                return event, agent.ServerMessage.FromString(raw)

    async def expect(self, cls: type[E]) -> E:
        event = await self.receive()
        assert isinstance(event, cls), f"expected {cls.__name__}, got {event!r}"
        return event

    async def wait_closed(self) -> ConnectionClosed:
        """Read until the server closes the connection; fail on any message."""
        try:
            raw = await self.ws.get_message()
        except ConnectionClosed as exc:
            return exc
        raise AssertionError(f"expected the server to close, got {raw!r}")

    # --- steps ------------------------------------------------------------------

    async def register(self, **fields: object) -> protocol.Registered:
        await self.send(protocol.Register(**fields))  # type: ignore[arg-type]
        registered = await self.expect(protocol.Registered)
        self.registered = registered
        self.worker_id = registered.worker_id
        return registered

    async def ping(self, timestamp: int) -> protocol.Pong:
        await self.send(protocol.Ping(timestamp=timestamp))
        return await self.expect(protocol.Pong)

    async def take_job(self, **accept_fields: object) -> protocol.JobAssignment:
        """Wait for an offer, accept it, return the assignment."""
        offer = await self.expect(protocol.AvailabilityRequest)
        await self.send(accept(offer, **accept_fields))  # type: ignore[arg-type]
        assignment = await self.expect(protocol.JobAssignment)
        assert assignment.job.id == offer.job.id
        return assignment

    # --- background answering -------------------------------------------------

    async def auto_answer(
        self, policy: Policy, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer every offer with ``policy`` and record what arrives, until the socket closes."""
        task_status.started()
        with contextlib.suppress(ConnectionClosed):
            while True:
                event = await self.receive()
                match event:
                    case protocol.AvailabilityRequest():
                        self.offers.append(event)
                        answer = policy(event)
                        if answer is not None:
                            await self.send(answer)
                    case protocol.JobAssignment():
                        self.assignments.append(event)
                    case protocol.JobTermination():
                        self.terminations.append(event.job_id)
                    case _:
                        raise AssertionError(f"unexpected {event!r}")
                self._changed.set()
                self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (re-checked after each recorded message)."""
        while not predicate():
            await self._changed.wait()


@contextlib.asynccontextmanager
async def open_worker(
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    register: bool = True,
    **register_fields: object,
) -> AsyncIterator[ScriptedWorker]:
    """Connect a scripted worker to ``url``/agent; registered unless ``register=False``.

    ``token`` defaults to a valid worker token sent as ``Authorization: Bearer``;
    pass ``headers`` to send something else instead.
    """
    if headers is None:
        headers = {"Authorization": f"Bearer {token or worker_token()}"}
    async with open_websocket(url, "/agent", headers=headers, query=query) as ws:
        worker = ScriptedWorker(
            ws, protocol.Connection(protocol.Role.WORKER, clock=trio.current_time)
        )
        if register:
            await worker.register(**register_fields)
        yield worker
