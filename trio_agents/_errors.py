"""Exceptions shared across trio_agents."""

from __future__ import annotations


class TrioAgentsError(Exception):
    """Base class of the library's own errors."""


class ConnectionClosed(TrioAgentsError):
    """The websocket was closed (by the peer, or because the transport failed)."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class HandshakeRejected(TrioAgentsError):
    """The server answered the websocket upgrade with an HTTP error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}" if body else f"HTTP {status}")
        self.status = status
        self.body = body


class ConnectFailed(TrioAgentsError):
    """The websocket could not be opened (refused, unreachable, timed out)."""
