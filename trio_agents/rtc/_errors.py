"""Errors of the room API."""

from __future__ import annotations

from .._errors import TrioAgentsError


class RoomError(TrioAgentsError):
    """Base class of the room API's errors."""


class ConnectError(RoomError):
    """The room could not be joined: rejected by the server, unreachable, or no backend.

    Attributes:
        status: the HTTP status of a rejected websocket upgrade, else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotConnectedError(RoomError):
    """The operation needs a connected room (not yet connected, or disconnected meanwhile)."""


class RequestError(RoomError):
    """The server refused a request (``RequestResponse`` with a reason other than OK).

    Attributes:
        reason: the ``RequestResponse.Reason`` name, e.g. ``"NOT_ALLOWED"``.
        message: the server's explanation.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
