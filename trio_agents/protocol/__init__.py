"""The LiveKit agent worker protocol, sans-IO.

This package contains no networking code and never imports trio: it turns
``/agent`` websocket messages into events and events into messages, and
enforces the protocol's ordering rules for both ends (``Role.WORKER`` and
``Role.SERVER``), so the worker and the stand-in server share one
implementation of the rules.  See ``_state.py`` for the rules themselves.
"""

from ._codec import MAX_MESSAGE_SIZE as MAX_MESSAGE_SIZE
from ._connection import ASSIGNMENT_TIMEOUT as ASSIGNMENT_TIMEOUT
from ._connection import AVAILABILITY_TIMEOUT as AVAILABILITY_TIMEOUT
from ._connection import REGISTER_TIMEOUT as REGISTER_TIMEOUT
from ._connection import STATUS_INTERVAL as STATUS_INTERVAL
from ._connection import Connection as Connection
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._events import AssignmentTimeout as AssignmentTimeout
from ._events import Availability as Availability
from ._events import AvailabilityRequest as AvailabilityRequest
from ._events import AvailabilityTimeout as AvailabilityTimeout
from ._events import Event as Event
from ._events import JobAssignment as JobAssignment
from ._events import JobTermination as JobTermination
from ._events import MigrateJob as MigrateJob
from ._events import Ping as Ping
from ._events import Pong as Pong
from ._events import Register as Register
from ._events import Registered as Registered
from ._events import RegisterTimeout as RegisterTimeout
from ._events import SimulateJob as SimulateJob
from ._events import StatusDue as StatusDue
from ._events import UpdateJobStatus as UpdateJobStatus
from ._events import UpdateWorkerStatus as UpdateWorkerStatus
from ._state import ConnectionState as ConnectionState
from ._state import JobState as JobState
from ._state import Role as Role

__all__ = [
    "ASSIGNMENT_TIMEOUT",
    "AVAILABILITY_TIMEOUT",
    "MAX_MESSAGE_SIZE",
    "REGISTER_TIMEOUT",
    "STATUS_INTERVAL",
    "AssignmentTimeout",
    "Availability",
    "AvailabilityRequest",
    "AvailabilityTimeout",
    "Connection",
    "ConnectionState",
    "Event",
    "JobAssignment",
    "JobState",
    "JobTermination",
    "LocalProtocolError",
    "MigrateJob",
    "Ping",
    "Pong",
    "ProtocolError",
    "Register",
    "RegisterTimeout",
    "Registered",
    "RemoteProtocolError",
    "Role",
    "SimulateJob",
    "StatusDue",
    "UpdateJobStatus",
    "UpdateWorkerStatus",
]
