"""Room.wait_for_participant at the edges of a connection (found in review)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_agents import rtc
from trio_agents.testing import open_local_server

Clock = trio.testing.MockClock
ROOM = "demo"


async def test_a_wait_through_connecting_ends_when_the_connection_fails(
    autojump_clock: Clock,
) -> None:
    """It "waits through connecting"; a failed attempt left it waiting forever."""
    async with open_local_server() as server:
        room = rtc.Room()
        got: list[BaseException] = []

        async def waiter() -> None:
            with pytest.raises(rtc.NotConnectedError, match="connection attempt failed") as info:
                await room.wait_for_participant()
            got.append(info.value)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(rtc.ConnectError):
                    await room.run(server.url, "not-a-jwt")
        assert len(got) == 1

        # a wait started afterwards waits through the next (good) attempt
        found: list[str] = []
        token = server.participant_token("agent-1", ROOM, kind="agent")
        async with server.simulated_participant("alice", room=ROOM), trio.open_nursery() as n:

            async def second_waiter() -> None:
                found.append((await room.wait_for_participant(identity="alice")).identity)

            n.start_soon(second_waiter)
            await trio.testing.wait_all_tasks_blocked()
            await n.start(room.run, server.url, token)
            await trio.testing.wait_all_tasks_blocked()
            await room.disconnect()
        assert found == ["alice"]


async def test_a_disconnected_rooms_leftovers_are_not_returned(autojump_clock: Clock) -> None:
    """As in the SDK, a disconnected room still lists its last participants;
    the wait returned one of them instead of raising."""
    async with (
        open_local_server() as server,
        server.simulated_participant("alice", room=ROOM),
    ):
        room = rtc.Room()
        async with trio.open_nursery() as nursery:
            token = server.participant_token("agent-1", ROOM, kind="agent")
            await nursery.start(room.run, server.url, token)
            assert (await room.wait_for_participant(identity="alice")).identity == "alice"
            await room.disconnect()
        assert "alice" in room.remote_participants  # kept, as the SDK keeps them
        with pytest.raises(rtc.NotConnectedError, match="disconnected"):
            await room.wait_for_participant(identity="alice")
