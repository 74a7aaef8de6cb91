"""Checked by ``mypy --strict`` in CI (not run by pytest): decorators keep the types.

A regression here is a type error in CI, like one in a user's own agent file:
``--strict`` refuses an untyped decorator, and a ``type: ignore`` that is no
longer needed (because a decorated function became ``Any``) is an error too.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

from trio_agents import AgentServer, JobContext, JobRequest, rtc

server = AgentServer()


@server.rtc_session(agent_name="typed")
async def entrypoint(ctx: JobContext) -> None:
    room = ctx.room

    @room.on("participant_connected")
    def on_join(participant: rtc.RemoteParticipant) -> None:
        assert_type(participant.identity, str)

    # a function, not Any:
    room_handler: int = on_join  # type: ignore[assignment]
    del room_handler


async def on_request(req: JobRequest) -> None:
    await req.accept()


other = AgentServer()


async def bare(ctx: JobContext) -> None:
    pass


kept: Callable[[JobContext], Coroutine[Any, Any, None]] = other.rtc_session(
    bare, on_request=on_request
)
# a function, not Any:
not_an_int: int = entrypoint  # type: ignore[assignment]
