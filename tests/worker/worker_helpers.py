"""Shared pieces of the AgentServer tests.

* ``make_worker`` / ``running``: an ``AgentServer`` on the INLINE executor,
  with no health server and a fixed load unless told otherwise.
* ``AgentTap``: an ASGI layer in front of the stand-in's ``/agent`` route that
  records every protobuf message of every worker connection and can drop a
  connection or push raw bytes down it, as a misbehaving server or network
  would.  It is reachable in memory (``tap.url``, mock clock) or over TCP.
* ``TCPProxy``: a loopback TCP relay whose links can be cut abruptly (no
  websocket close frame), like a network failure.
* ``FakeServerEndpoint``: a bare in-memory ``/agent`` server the test scripts
  message by message with the SERVER-role protocol core.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from livekit.protocol import agent

from trio_agents import AgentServer, JobExecutorType, protocol
from trio_agents._errors import ConnectFailed, ConnectionClosed
from trio_agents._http import serve_tcp
from trio_agents._transport import (
    MessageStream,
    register_memory_endpoint,
    unregister_memory_endpoint,
)
from trio_agents.testing import DEV_API_KEY, DEV_API_SECRET, LocalServer
from trio_agents.testing._agents import Changes
from trio_agents.testing._asgi import (
    Message,
    Receive,
    Scope,
    Send,
    WebSocket,
    open_memory_websocket,
)

_ids = itertools.count(1)

#: Virtual seconds after which an autojump test counts as hung.
WATCHDOG = 900.0


async def watchdog(seconds: float = WATCHDOG) -> None:
    await trio.sleep(seconds)
    raise TimeoutError(f"test still running after {seconds} seconds")


def make_worker(url: str | None, **kwargs: Any) -> AgentServer:
    """An AgentServer for tests: INLINE jobs, no health server, load 0."""
    options: dict[str, Any] = {
        "job_executor_type": JobExecutorType.INLINE,
        "port": None,
        "load_fnc": lambda: 0.0,
    }
    options.update(kwargs)
    key = options.pop("api_key", DEV_API_KEY)
    secret = options.pop("api_secret", DEV_API_SECRET)
    return AgentServer(url, key, secret, **options)


@contextlib.asynccontextmanager
async def running(*workers: AgentServer, register: bool = True) -> AsyncIterator[None]:
    """Run ``workers`` for the block (registered on entry); close them on exit."""
    async with trio.open_nursery() as nursery:
        for ws in workers:
            await nursery.start(ws.run)
        if register:
            for ws in workers:
                await ws.wait_registered()
        yield
        for ws in workers:
            nursery.start_soon(ws.aclose)


# --- the tap ---------------------------------------------------------------------------


@attrs.define(eq=False)
class TapConnection:
    """One worker connection seen by the tap."""

    send: Send = attrs.field(repr=False)
    #: WorkerMessage oneof names and messages, in arrival order.
    from_worker: list[tuple[str, Any]] = attrs.field(factory=list)
    #: ServerMessage oneof names and messages, in sending order.
    to_worker: list[tuple[str, Any]] = attrs.field(factory=list)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, repr=False)
    ended: trio.Event = attrs.field(factory=trio.Event, repr=False)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.from_worker]

    def drop(self) -> None:
        """End the server side of this connection (the stand-in forgets the worker)."""
        self.scope.cancel()

    async def inject(self, data: bytes | str) -> None:
        """Send a raw websocket message to the worker."""
        key = "bytes" if isinstance(data, bytes) else "text"
        await self.send({"type": "websocket.send", key: data})


class AgentTap:
    """Records and disturbs the ``/agent`` traffic between workers and ``server``.

    Everything else (rooms, Twirp) goes straight to the stand-in.
    """

    def __init__(self, server: LocalServer, nursery: trio.Nursery) -> None:
        self.server = server
        self._nursery = nursery
        self.name = f"agent-tap-{next(_ids)}"
        self.url = f"memory://{self.name}"
        self.connections: list[TapConnection] = []
        self.changes = Changes()
        #: While true, new ``/agent`` connections are refused with HTTP 503.
        self.refuse = False
        #: Trio times of the refused connection attempts.
        self.refusals: list[float] = []

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"] != "/agent":
            await self.server.app(scope, receive, send)
            return
        if self.refuse:
            self.refusals.append(trio.current_time())
            self.changes.notify()
            await WebSocket(scope, receive, send).reject(503, "service unavailable")
            return
        conn = TapConnection(send=send)
        self.connections.append(conn)
        self.changes.notify()

        async def tap_receive() -> Message:
            msg = await receive()
            if msg["type"] == "websocket.receive" and msg.get("bytes") is not None:
                wm = agent.WorkerMessage.FromString(msg["bytes"])
                conn.from_worker.append((wm.WhichOneof("message") or "", wm))
                self.changes.notify()
            return msg

        async def tap_send(msg: Message) -> None:
            if msg["type"] == "websocket.send" and msg.get("bytes") is not None:
                sm = agent.ServerMessage.FromString(msg["bytes"])
                conn.to_worker.append((sm.WhichOneof("message") or "", sm))
                self.changes.notify()
            await send(msg)

        try:
            with conn.scope:
                await self.server.app(scope, tap_receive, tap_send)
        finally:
            conn.ended.set()
            self.changes.notify()

    def open_memory_websocket(
        self, path: str, query: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[MessageStream]:
        return open_memory_websocket(self.app, self._nursery, path, query, headers)

    async def wait_connections(self, count: int) -> TapConnection:
        """Wait for the ``count``-th connection; return it."""
        await self.changes.wait_until(lambda: len(self.connections) >= count)
        return self.connections[count - 1]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        await self.changes.wait_until(predicate)

    async def serve_tcp(
        self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the tap on a free loopback port; ``started`` with its ``ws://`` URL."""

        class _Status:
            def started(self, port: int | None = None) -> None:
                task_status.started(f"ws://127.0.0.1:{port}")

        await serve_tcp(self.app, "127.0.0.1", 0, task_status=_Status())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def open_tap(server: LocalServer) -> AsyncIterator[AgentTap]:
    async with trio.open_nursery() as nursery:
        tap = AgentTap(server, nursery)
        register_memory_endpoint(tap.name, tap)
        try:
            yield tap
        finally:
            unregister_memory_endpoint(tap.name)
            nursery.cancel_scope.cancel()


# --- a TCP relay whose links can be cut ---------------------------------------------------


class TCPProxy:
    """Relays loopback TCP connections to ``target_port``; ``cut()`` kills them abruptly."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._links: list[trio.CancelScope] = []
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, link: trio.CancelScope
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for chunk in src:
                await dst.send_all(chunk)
        link.cancel()  # one direction ended: end the link

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        try:
            async with trio.open_nursery() as nursery:
                self._links.append(nursery.cancel_scope)
                nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
        finally:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)

    def cut(self) -> int:
        """Abort every open link at once (no close frames); returns how many."""
        n = 0
        for scope in self._links:
            if not scope.cancel_called:
                scope.cancel()
                n += 1
        self._links.clear()
        return n

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._handle, listeners, task_status=task_status)


# --- a scripted server ---------------------------------------------------------------------


@attrs.define(eq=False)
class FakeConnection:
    """The server end of one worker connection, scripted by the test."""

    conn: protocol.Connection
    to_worker: trio.MemorySendChannel[bytes | str] = attrs.field(repr=False)
    received: list[protocol.Event] = attrs.field(factory=list)
    closed: trio.Event = attrs.field(factory=trio.Event)
    changes: Changes = attrs.field(factory=Changes, repr=False)

    def send(self, event: protocol.Event) -> None:
        self.to_worker.send_nowait(self.conn.send(event))

    def close(self) -> None:
        self.to_worker.close()

    async def wait_for(self, cls: type[protocol.Event], count: int = 1) -> list[Any]:
        def found() -> list[Any]:
            return [e for e in self.received if isinstance(e, cls)]

        await self.changes.wait_until(lambda: len(found()) >= count)
        return found()


#: Decides what the fake server does with a new connection: ``None`` to accept
#: it, or an exception instance to refuse it with.
Gate = Callable[[Mapping[str, str]], Exception | None]


class FakeServerEndpoint:
    """An in-memory ``/agent`` endpoint; each connection is handled by ``script``.

    ``script(fc)`` runs while the connection is open; ``fc.received`` fills
    with what the worker sends (decoded by a SERVER-role ``Connection``).
    When ``script`` returns, the server closes the connection.
    """

    def __init__(
        self,
        script: Callable[[FakeConnection], Awaitable[None]],
        *,
        gate: Gate = lambda headers: None,
    ) -> None:
        self.name = f"fake-agent-server-{next(_ids)}"
        self.url = f"memory://{self.name}"
        self._script = script
        self._gate = gate
        #: (trio time, connection or None if refused) of every attempt.
        self.attempts: list[tuple[float, FakeConnection | None]] = []
        self.changes = Changes()
        self.nursery: trio.Nursery | None = None

    @contextlib.asynccontextmanager
    async def open_memory_websocket(
        self, path: str, query: str, headers: Mapping[str, str]
    ) -> AsyncIterator[MessageStream]:
        refusal = self._gate(headers)
        if refusal is not None:
            self.attempts.append((trio.current_time(), None))
            self.changes.notify()
            raise refusal
        to_worker_send, to_worker_recv = trio.open_memory_channel[bytes | str](math.inf)
        fc = FakeConnection(
            # no register deadline: the scripts decide what the server does
            protocol.Connection(
                protocol.Role.SERVER, clock=trio.current_time, register_timeout=math.inf
            ),
            to_worker_send,
        )
        self.attempts.append((trio.current_time(), fc))
        self.changes.notify()
        stream = _FakeStream(fc, to_worker_recv)
        # the script runs in the endpoint's nursery, so that errors of the
        # client's block reach the client unwrapped
        scope = trio.CancelScope()

        async def run_script() -> None:
            with scope:
                try:
                    await self._script(fc)
                finally:
                    fc.close()

        assert self.nursery is not None
        self.nursery.start_soon(run_script)
        try:
            yield stream
        finally:
            fc.closed.set()
            fc.changes.notify()
            scope.cancel()

    async def wait_attempts(self, count: int) -> None:
        await self.changes.wait_until(lambda: len(self.attempts) >= count)


class _FakeStream:
    def __init__(self, fc: FakeConnection, inbox: trio.MemoryReceiveChannel[bytes | str]) -> None:
        self._fc = fc
        self._inbox = inbox

    async def send_message(self, data: bytes | str) -> None:
        if self._fc.closed.is_set():
            raise ConnectionClosed("fake server closed")
        await trio.lowlevel.checkpoint()
        assert isinstance(data, bytes)
        event = self._fc.conn.receive_message(data)
        if event is not None:
            self._fc.received.append(event)
        self._fc.changes.notify()

    async def get_message(self) -> bytes | str:
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed("fake server closed the connection") from None

    async def aclose(self) -> None:
        self._fc.closed.set()
        self._fc.changes.notify()


@contextlib.asynccontextmanager
async def open_fake_server(
    script: Callable[[FakeConnection], Awaitable[None]], **kwargs: Any
) -> AsyncIterator[FakeServerEndpoint]:
    endpoint = FakeServerEndpoint(script, **kwargs)
    async with trio.open_nursery() as nursery:
        endpoint.nursery = nursery
        register_memory_endpoint(endpoint.name, endpoint)
        try:
            yield endpoint
        finally:
            unregister_memory_endpoint(endpoint.name)
            nursery.cancel_scope.cancel()


async def register_then(fc: FakeConnection, worker_id: str = "AW_fake") -> None:
    """Answer the worker's Register (the first thing every script does)."""
    await fc.wait_for(protocol.Register)
    fc.send(protocol.Registered(worker_id=worker_id))


def offer(
    job_id: str, room: str = "fake-room", agent_name: str = ""
) -> protocol.AvailabilityRequest:
    job = agent.Job(id=job_id, type=agent.JT_ROOM, agent_name=agent_name)
    job.room.name = room
    job.room.sid = "RM_fake"
    return protocol.AvailabilityRequest(job=job)


def refuse_connect(message: str = "refused") -> Gate:
    return lambda headers: ConnectFailed(message)
