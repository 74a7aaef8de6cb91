"""``LiveKitAPI``: LiveKit's Twirp server API on trio, over httpx.

Sends exactly what the official ``livekit-api`` client sends (read from its
``twirp_client.py``): ``POST {http base}/twirp/livekit.<Service>/<Method>``
with a fresh access token carrying the call's ``VideoGrants``, a protobuf
body, ``Content-Type: application/protobuf`` and an ``X-Livekit-Request-Id``.
It takes and returns the same ``livekit.protocol`` messages and raises the same
``livekit.api.TwirpError``, so code written against the official client ports
by adding nothing but ``await`` under trio.

Left out on purpose: the official client's region failover, which only
applies to LiveKit Cloud hosts.
"""

from __future__ import annotations

import os
import uuid
from types import TracebackType
from typing import Protocol, Self, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import httpx
from google.protobuf.message import DecodeError, Message
from livekit import api as lkapi
from livekit.api.version import __version__ as _lkapi_version
from livekit.protocol import agent_dispatch, models
from livekit.protocol import room as room_pb

from .. import _transport
from .._errors import ConnectFailed, TrioAgentsError
from .._tokens import quiet_dev_secret_warning
from .._version import __version__

_M = TypeVar("_M", bound=Message)

#: Identifies the official SDK (servers may key behaviour on it) and us.
USER_AGENT = f"livekit-server-sdk-python/{_lkapi_version} trio-agents/{__version__}"
REQUEST_ID_HEADER = "X-Livekit-Request-Id"
#: Longest plain-text error body kept in an exception message.
_MAX_ERROR_TEXT = 500


class APIConnectionError(TrioAgentsError):
    """The server could not be reached (refused, unreachable, timed out, no such
    in-process server), so no answer was received."""


@runtime_checkable
class _HTTPEndpoint(Protocol):
    """An in-process server registered under ``memory://NAME`` that serves HTTP."""

    def http_transport(self) -> httpx.AsyncBaseTransport: ...


def _setting(value: str | None, env: str, name: str) -> str:
    value = value or os.environ.get(env)
    if not value:
        raise ValueError(f"{name} is required: pass {name}= or set {env}")
    return value


class LiveKitAPI:
    """LiveKit's server API (RoomService, AgentDispatchService) for trio.

    Args:
        url: the LiveKit URL (``ws(s)://``, ``http(s)://``, or ``memory://NAME``
            for an in-process ``trio_agents.testing.LocalServer``); default
            ``LIVEKIT_URL``.
        api_key, api_secret: default ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``.
        transport: an httpx transport to send every request through (tests);
            by default TCP, or the in-process server for ``memory://``.
        timeout: seconds for each request (connect, read, write, pool).

    Raises:
        ValueError: a setting is missing or malformed; the message names it.

    Use it as ``async with LiveKitAPI(...) as lk:`` or call ``aclose()``.
    Every call is a checkpoint; it raises ``livekit.api.TwirpError`` when the
    server answers with an error and ``APIConnectionError`` when there is no
    answer.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        url = _setting(url, "LIVEKIT_URL", "url")
        self._api_key = _setting(api_key, "LIVEKIT_API_KEY", "api_key")
        self._api_secret = _setting(api_secret, "LIVEKIT_API_SECRET", "api_secret")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                f"transport must be an httpx.AsyncBaseTransport, not {type(transport).__name__}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        try:
            base = _transport.http_base_url(url)
        except ValueError:
            raise ValueError(
                f"url must be ws://, wss://, http(s):// or memory://, got {url!r}"
            ) from None
        parts = urlsplit(base)
        if not parts.netloc:
            raise ValueError(f"url has no host: {url!r}")
        self.url = url
        self._memory_name = parts.netloc if parts.scheme == "memory" else None
        # httpx needs an http URL even for the in-process server
        self._base = f"http://{parts.netloc}{parts.path}" if self._memory_name else base
        self._transport = transport
        self._timeout = float(timeout)
        self._client: httpx.AsyncClient | None = None
        self._client_endpoint: object = None
        self._stale: list[httpx.AsyncClient] = []
        self._closed = False
        self.room = RoomService(self)
        self.agent_dispatch = AgentDispatchService(self)

    # --- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client; the object cannot be used afterwards."""
        self._closed = True
        clients = [*self._stale, *([self._client] if self._client is not None else [])]
        self._stale.clear()
        self._client = None
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- transport ------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("this LiveKitAPI is closed")
        endpoint: object = None
        transport = self._transport
        if self._memory_name is not None and transport is None:
            # looked up on every call: the server may have stopped (or been
            # replaced) since the last one
            try:
                endpoint = _transport.memory_endpoint(self._memory_name)
            except ConnectFailed as exc:
                raise APIConnectionError(str(exc)) from None
            if not isinstance(endpoint, _HTTPEndpoint):
                raise APIConnectionError(f"memory://{self._memory_name} does not serve HTTP")
            if self._client is not None and self._client_endpoint is not endpoint:
                self._stale.append(self._client)
                self._client = None
            if self._client is None:
                transport = endpoint.http_transport()
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=transport, timeout=self._timeout, follow_redirects=False
            )
            self._client_endpoint = endpoint
        return self._client

    async def request(
        self,
        service: str,
        method: str,
        msg: Message,
        grants: lkapi.VideoGrants,
        response_type: type[_M],
    ) -> _M:
        """One Twirp call: ``msg`` to ``livekit.<service>/<method>``; the decoded answer.

        Raises:
            livekit.api.TwirpError: the server answered with an error.
            APIConnectionError: no answer (connection refused or broken, timeout).
        """
        client = self._http()
        quiet_dev_secret_warning(self._api_secret)
        token = lkapi.AccessToken(self._api_key, self._api_secret).with_grants(grants).to_jwt()
        headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
            "Content-Type": "application/protobuf",
            REQUEST_ID_HEADER: str(uuid.uuid4()),
        }
        url = f"{self._base}/twirp/livekit.{service}/{method}"
        try:
            resp = await client.post(url, content=msg.SerializeToString(), headers=headers)
        except httpx.TimeoutException as exc:
            raise APIConnectionError(
                f"{service}.{method}: no answer from {self.url} within {self._timeout} s"
            ) from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(
                f"{service}.{method}: cannot reach {self.url}: {exc or type(exc).__name__}"
            ) from exc
        if resp.status_code == 200:
            try:
                return response_type.FromString(resp.content)
            except DecodeError:
                raise lkapi.TwirpError(
                    "malformed",
                    f"{service}.{method}: the server sent an undecodable "
                    f"{response_type.DESCRIPTOR.full_name}",
                    status=200,
                ) from None
        raise _twirp_error(resp)


def _twirp_error(resp: httpx.Response) -> lkapi.TwirpError:
    """The error of a non-200 answer, read as the official client reads it.

    Twirp errors are JSON; anything else (LiveKit's plain-text 401 for a bad
    token, a proxy's page) has code ``unknown``, and, unlike the official
    client, keeps the body text as the message so the cause is visible.
    """
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        msg = data.get("msg")
        meta = data.get("meta")
        return lkapi.TwirpError(
            code if isinstance(code, str) and code else "unknown",
            msg if isinstance(msg, str) else "",
            status=resp.status_code,
            metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else None,
        )
    text = resp.text.strip()
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "..."
    return lkapi.TwirpError("unknown", text, status=resp.status_code)


class RoomService:
    """``livekit.RoomService``, as ``livekit.api.RoomService`` (reached as ``LiveKitAPI.room``)."""

    _SVC = "RoomService"

    def __init__(self, api: LiveKitAPI) -> None:
        self._api = api

    async def create_room(self, create: room_pb.CreateRoomRequest) -> models.Room:
        """Create a room, or get it if it exists (needs ``roomCreate``)."""
        return await self._api.request(
            self._SVC, "CreateRoom", create, lkapi.VideoGrants(room_create=True), models.Room
        )

    async def list_rooms(self, list: room_pb.ListRoomsRequest) -> room_pb.ListRoomsResponse:
        """Active rooms, all or those in ``list.names`` (needs ``roomList``)."""
        return await self._api.request(
            self._SVC,
            "ListRooms",
            list,
            lkapi.VideoGrants(room_list=True),
            room_pb.ListRoomsResponse,
        )

    async def delete_room(self, delete: room_pb.DeleteRoomRequest) -> room_pb.DeleteRoomResponse:
        """Close a room and disconnect everyone (needs ``roomCreate``)."""
        return await self._api.request(
            self._SVC,
            "DeleteRoom",
            delete,
            lkapi.VideoGrants(room_create=True),
            room_pb.DeleteRoomResponse,
        )

    async def update_room_metadata(self, update: room_pb.UpdateRoomMetadataRequest) -> models.Room:
        return await self._api.request(
            self._SVC,
            "UpdateRoomMetadata",
            update,
            lkapi.VideoGrants(room_admin=True, room=update.room),
            models.Room,
        )

    async def list_participants(
        self, list: room_pb.ListParticipantsRequest
    ) -> room_pb.ListParticipantsResponse:
        return await self._api.request(
            self._SVC,
            "ListParticipants",
            list,
            lkapi.VideoGrants(room_admin=True, room=list.room),
            room_pb.ListParticipantsResponse,
        )

    async def get_participant(self, get: room_pb.RoomParticipantIdentity) -> models.ParticipantInfo:
        return await self._api.request(
            self._SVC,
            "GetParticipant",
            get,
            lkapi.VideoGrants(room_admin=True, room=get.room),
            models.ParticipantInfo,
        )

    async def remove_participant(
        self, remove: room_pb.RoomParticipantIdentity
    ) -> room_pb.RemoveParticipantResponse:
        return await self._api.request(
            self._SVC,
            "RemoveParticipant",
            remove,
            lkapi.VideoGrants(room_admin=True, room=remove.room),
            room_pb.RemoveParticipantResponse,
        )

    async def update_participant(
        self, update: room_pb.UpdateParticipantRequest
    ) -> models.ParticipantInfo:
        return await self._api.request(
            self._SVC,
            "UpdateParticipant",
            update,
            lkapi.VideoGrants(room_admin=True, room=update.room),
            models.ParticipantInfo,
        )

    async def send_data(self, send: room_pb.SendDataRequest) -> room_pb.SendDataResponse:
        """Send data to the room; a 16-byte nonce is added when ``send`` has none."""
        if not send.nonce:
            copy = room_pb.SendDataRequest()
            copy.CopyFrom(send)
            copy.nonce = uuid.uuid4().bytes
            send = copy
        return await self._api.request(
            self._SVC,
            "SendData",
            send,
            lkapi.VideoGrants(room_admin=True, room=send.room),
            room_pb.SendDataResponse,
        )


class AgentDispatchService:
    """``livekit.AgentDispatchService``, as ``livekit.api.AgentDispatchService``."""

    _SVC = "AgentDispatchService"

    def __init__(self, api: LiveKitAPI) -> None:
        self._api = api

    async def create_dispatch(
        self, req: agent_dispatch.CreateAgentDispatchRequest
    ) -> agent_dispatch.AgentDispatch:
        """Dispatch an agent to ``req.room`` (created if needed); its jobs start at once."""
        return await self._api.request(
            self._SVC,
            "CreateDispatch",
            req,
            lkapi.VideoGrants(room_admin=True, room=req.room),
            agent_dispatch.AgentDispatch,
        )

    async def delete_dispatch(
        self, dispatch_id: str, room_name: str
    ) -> agent_dispatch.AgentDispatch:
        """Delete a dispatch; its running jobs are terminated."""
        return await self._api.request(
            self._SVC,
            "DeleteDispatch",
            agent_dispatch.DeleteAgentDispatchRequest(dispatch_id=dispatch_id, room=room_name),
            lkapi.VideoGrants(room_admin=True, room=room_name),
            agent_dispatch.AgentDispatch,
        )

    async def list_dispatch(self, room_name: str) -> list[agent_dispatch.AgentDispatch]:
        res = await self._api.request(
            self._SVC,
            "ListDispatch",
            agent_dispatch.ListAgentDispatchRequest(room=room_name),
            lkapi.VideoGrants(room_admin=True, room=room_name),
            agent_dispatch.ListAgentDispatchResponse,
        )
        return list(res.agent_dispatches)

    async def get_dispatch(
        self, dispatch_id: str, room_name: str
    ) -> agent_dispatch.AgentDispatch | None:
        """The dispatch ``dispatch_id`` of ``room_name``, or None."""
        res = await self._api.request(
            self._SVC,
            "ListDispatch",
            agent_dispatch.ListAgentDispatchRequest(dispatch_id=dispatch_id, room=room_name),
            lkapi.VideoGrants(room_admin=True, room=room_name),
            agent_dispatch.ListAgentDispatchResponse,
        )
        return res.agent_dispatches[0] if res.agent_dispatches else None
