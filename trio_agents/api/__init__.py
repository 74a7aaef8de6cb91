"""LiveKit's server API (Twirp) for trio: ``LiveKitAPI`` over httpx.

The services take and return the ``livekit.protocol`` messages, and errors are
the official client's ``TwirpError``, re-exported here::

    async with api.LiveKitAPI("ws://127.0.0.1:7880", "devkey", "secret") as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name="demo"))

The request messages most calls need are re-exported as well.
"""

from livekit.api import ServerError as ServerError
from livekit.api import TwirpError as TwirpError
from livekit.api import VideoGrants as VideoGrants
from livekit.protocol.agent_dispatch import AgentDispatch as AgentDispatch
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest as CreateAgentDispatchRequest
from livekit.protocol.agent_dispatch import RoomAgentDispatch as RoomAgentDispatch
from livekit.protocol.models import ParticipantInfo as ParticipantInfo
from livekit.protocol.models import Room as Room
from livekit.protocol.room import CreateRoomRequest as CreateRoomRequest
from livekit.protocol.room import DeleteRoomRequest as DeleteRoomRequest
from livekit.protocol.room import ListParticipantsRequest as ListParticipantsRequest
from livekit.protocol.room import ListRoomsRequest as ListRoomsRequest
from livekit.protocol.room import RoomParticipantIdentity as RoomParticipantIdentity
from livekit.protocol.room import SendDataRequest as SendDataRequest
from livekit.protocol.room import UpdateParticipantRequest as UpdateParticipantRequest
from livekit.protocol.room import UpdateRoomMetadataRequest as UpdateRoomMetadataRequest

from ._client import USER_AGENT as USER_AGENT
from ._client import AgentDispatchService as AgentDispatchService
from ._client import APIConnectionError as APIConnectionError
from ._client import LiveKitAPI as LiveKitAPI
from ._client import RoomService as RoomService

__all__ = [
    "USER_AGENT",
    "APIConnectionError",
    "AgentDispatch",
    "AgentDispatchService",
    "CreateAgentDispatchRequest",
    "CreateRoomRequest",
    "DeleteRoomRequest",
    "ListParticipantsRequest",
    "ListRoomsRequest",
    "LiveKitAPI",
    "ParticipantInfo",
    "Room",
    "RoomAgentDispatch",
    "RoomParticipantIdentity",
    "RoomService",
    "SendDataRequest",
    "ServerError",
    "TwirpError",
    "UpdateParticipantRequest",
    "UpdateRoomMetadataRequest",
    "VideoGrants",
]
