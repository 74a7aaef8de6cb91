"""Protocol errors: who broke the rules decides the class."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: the worker protocol's rules were broken.

    Never raised directly; catch it to handle both kinds.
    """


class LocalProtocolError(ProtocolError):
    """You asked this end of the connection to do something the protocol forbids.

    The connection state is unchanged, so the caller may carry on.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent something undecodable or out of order.

    The connection is unusable afterwards (its state becomes ``ERROR``).
    """
