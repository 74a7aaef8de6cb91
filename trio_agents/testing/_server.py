"""``LocalServer``: a stand-in LiveKit server for tests, demos and development.

One ASGI application serves every route:

* ``/agent``: the worker protocol (``_agents.AgentHub``);
* ``/twirp/livekit.<Service>/<Method>``: RoomService and AgentDispatchService
  (``_twirp``);
* ``/rtc/sim``: the simulated room link of ``trio_agents.rtc`` (``_signal``);

It is reachable over TCP (hypercorn, trio worker) and, in the same process,
through ``memory://NAME`` URLs that need no socket, so a whole system can run
under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial

import httpx
import trio
from livekit import api as lkapi
from livekit.protocol import agent

from .. import _transport
from .._errors import ConnectionClosed
from .._http import answer_lifespan, serve_tcp
from .._tokens import quiet_dev_secret_warning
from ._agents import AgentHub, JobRecord
from ._asgi import (
    Receive,
    Request,
    Scope,
    Send,
    WebSocket,
    open_memory_websocket,
    read_body,
    send_response,
)
from ._control import HostedParticipants
from ._participants import SimulatedParticipant, open_simulated_participant
from ._rooms import Room, Rooms
from ._signal import SignalHub

logger = logging.getLogger("trio_agents.testing")

#: ``livekit-server --dev`` defaults.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7880
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
MAX_BODY = 2 * 1024 * 1024

_names = itertools.count(1)


class LocalServer:
    """The stand-in server's state and its ASGI app.  Use ``open_local_server``.

    Attributes:
        rooms: the rooms (``_rooms.Rooms``).
        agents: workers and jobs (``_agents.AgentHub``).
        hosted: simulated participants driven over HTTP (``/sim/*``).
        url: where clients connect (``ws://host:port`` or ``memory://NAME``).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        api_key: str = DEV_API_KEY,
        api_secret: str = DEV_API_SECRET,
        departure_timeout: float = 20.0,
        empty_timeout: float = 300.0,
        availability_timeout: float = 10.0,
        register_timeout: float = 10.0,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must not be empty")
        self.api_key = api_key
        self.api_secret = api_secret
        self._nursery = nursery
        self.memory_name = f"local-server-{next(_names)}"
        self.url = f"memory://{self.memory_name}"
        self.agents = AgentHub(
            nursery,
            assignment_url=self._room_url,
            api_key=api_key,
            api_secret=api_secret,
            availability_timeout=availability_timeout,
            register_timeout=register_timeout,
        )
        self.rooms = Rooms(
            nursery,
            departure_timeout=departure_timeout,
            empty_timeout=empty_timeout,
            listener=self.agents,
        )
        self.signal = SignalHub(self.rooms, api_key=api_key, api_secret=api_secret)
        #: simulated participants driven over HTTP (``/sim/*``, ``trio-agents sim``)
        self.hosted = HostedParticipants(self)

    def _room_url(self) -> str:
        """The URL jobs join their rooms with (sent in JobAssignment.url).

        The stand-in hosts simulated rooms, so over TCP it hands out
        ``sim+ws://...``, which selects trio_agents' simulated room backend;
        in memory, ``memory://NAME`` does the same.
        """
        return self.url if self.url.startswith("memory://") else "sim+" + self.url

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the server's nursery (it ends with the server)."""
        self._nursery.start_soon(fn, *args)

    # --- conveniences for tests -------------------------------------------------

    @property
    def memory_url(self) -> str:
        return f"memory://{self.memory_name}"

    async def wait_for_workers(self, count: int = 1, *, agent_name: str | None = None) -> None:
        """Wait until ``count`` workers (optionally of ``agent_name``) are registered."""

        def ok() -> bool:
            ws = self.agents.workers.values()
            return sum(1 for w in ws if agent_name is None or w.agent_name == agent_name) >= count

        await self.agents.changes.wait_until(ok)

    async def wait_for_job(self, *, room: str | None = None) -> JobRecord:
        """Wait until a job (optionally for ``room``) is assigned to a worker; return it.

        Raises:
            RuntimeError: the job was launched but no worker took it (the
                stand-in records why, e.g. "no workers available").
        """
        found: list[JobRecord] = []

        def ok() -> bool:
            for j in self.agents.jobs.values():
                if room is not None and j.job.room.name != room:
                    continue
                if j.worker_id is not None or j.status in (agent.JS_SUCCESS, agent.JS_FAILED):
                    found[:] = [j]
                    return True
            return False

        await self.agents.changes.wait_until(ok)
        record = found[0]
        if record.worker_id is None and record.status == agent.JS_FAILED:
            raise RuntimeError(f"job {record.job.id} was not assigned: {record.error}")
        return record

    async def wait_for_job_status(self, job_id: str, *statuses: int) -> JobRecord:
        """Wait until job ``job_id`` reaches one of ``statuses``."""
        await self.agents.changes.wait_until(
            lambda: job_id in self.agents.jobs and self.agents.jobs[job_id].status in statuses
        )
        return self.agents.jobs[job_id]

    def create_room(self, name: str, **kwargs: object) -> Room:
        """Create (or get) a room, dispatching agents as LiveKit does."""
        room, _ = self.rooms.create(name, **kwargs)  # type: ignore[arg-type]
        return room

    def participant_token(
        self,
        identity: str,
        room: str,
        *,
        kind: str = "standard",
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        can_publish: bool = True,
        can_subscribe: bool = True,
        can_publish_data: bool = True,
        can_update_own_metadata: bool = True,
        ttl: datetime.timedelta = datetime.timedelta(hours=1),
    ) -> str:
        """A room-join JWT for ``identity`` in ``room``, signed with this server's keys.

        ``kind`` is the token's participant kind: standard, agent, sip,
        ingress, egress, connector.
        """
        grants = lkapi.VideoGrants(
            room_join=True,
            room=room,
            can_publish=can_publish,
            can_subscribe=can_subscribe,
            can_publish_data=can_publish_data,
            can_update_own_metadata=can_update_own_metadata,
            agent=kind == "agent",
        )
        quiet_dev_secret_warning(self.api_secret)
        return (
            lkapi.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(name)
            .with_metadata(metadata)
            .with_attributes(dict(attributes or {}))
            .with_kind(kind)  # type: ignore[arg-type]
            .with_grants(grants)
            .with_ttl(ttl)
            .to_jwt()
        )

    def simulated_participant(
        self,
        identity: str,
        *,
        room: str,
        kind: str = "standard",
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        auto_subscribe: bool = True,
    ) -> contextlib.AbstractAsyncContextManager[SimulatedParticipant]:
        """``async with server.simulated_participant("alice", room="demo") as alice:``

        Joins ``room`` (created if needed, dispatching agents) through this
        server's memory URL, so it works under a mock clock; leaves on exit.
        """
        token = self.participant_token(
            identity, room, kind=kind, name=name, metadata=metadata, attributes=attributes
        )
        return open_simulated_participant(
            self.memory_url, token, identity, auto_subscribe=auto_subscribe
        )

    # --- ASGI ----------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        path: str = scope["path"]
        if kind == "websocket":
            ws = WebSocket(scope, receive, send)
            try:
                if path == "/agent":
                    await self.agents.serve(ws)
                elif path == "/rtc/sim":
                    await self.signal.serve(ws)
                else:
                    await ws.reject(404, "404 page not found")
            except ConnectionClosed:
                pass
            return
        if kind != "http":  # pragma: no cover
            return
        if path == "/agent":
            # a plain GET on the websocket path: LiveKit answers 404
            await send_response(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        if path.startswith("/twirp/"):
            from ._twirp import handle_twirp

            try:
                body = await read_body(receive, limit=MAX_BODY)
            except ValueError:
                await send_response(
                    send,
                    413,
                    b'{"code":"malformed","msg":"request body too large"}',
                    "application/json",
                )
                return
            except ConnectionClosed:
                return
            status, payload, ctype = await handle_twirp(
                self, scope.get("method", "GET"), Request.from_scope(scope), body
            )
            await send_response(send, status, payload, ctype)
            return
        if path.startswith("/sim/") and scope.get("method") == "POST":
            try:
                body = await read_body(receive, limit=MAX_BODY)
            except (ValueError, ConnectionClosed):
                return
            status, payload = await self.hosted.handle(
                path[len("/sim/") :], Request.from_scope(scope), body
            )
            await send_response(send, status, payload, "application/json")
            return
        if path == "/" and scope.get("method") == "GET":
            await send_response(send, 200, b"OK", "text/plain; charset=utf-8")
            return
        await send_response(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")

    # --- memory transport ----------------------------------------------------------

    def open_memory_websocket(
        self, path: str, query: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractAsyncContextManager[_transport.MessageStream]:
        return open_memory_websocket(self.app, self._nursery, path, query, headers)

    def http_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that reaches this server in memory (no socket)."""
        return httpx.ASGITransport(app=self.app)


@contextlib.asynccontextmanager
async def open_local_server(
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    api_key: str = DEV_API_KEY,
    api_secret: str = DEV_API_SECRET,
    departure_timeout: float = 20.0,
    empty_timeout: float = 300.0,
    availability_timeout: float = 10.0,
    register_timeout: float = 10.0,
) -> AsyncIterator[LocalServer]:
    """Run a ``LocalServer`` for the duration of the block.

    With ``port=None`` (the default) it is reachable only in this process, at
    ``server.url == "memory://..."``, and works under a mock clock.  With a port
    (0 picks a free one) it also listens on ``host``, and ``server.url`` is the
    ``ws://host:port`` address.
    """
    async with trio.open_nursery() as nursery:
        server = LocalServer(
            nursery,
            api_key=api_key,
            api_secret=api_secret,
            departure_timeout=departure_timeout,
            empty_timeout=empty_timeout,
            availability_timeout=availability_timeout,
            register_timeout=register_timeout,
        )
        _transport.register_memory_endpoint(server.memory_name, server)
        try:
            if port is not None:
                bound = await nursery.start(
                    partial(serve_tcp, websocket_ping_interval=10.0), server.app, host, port
                )
                server.url = f"ws://{host}:{bound}"
                logger.info("local LiveKit stand-in listening on %s", server.url)
            yield server
        finally:
            _transport.unregister_memory_endpoint(server.memory_name)
            nursery.cancel_scope.cancel()
