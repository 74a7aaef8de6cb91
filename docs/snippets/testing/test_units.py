import json

from trio_agents import get_job_context
from trio_agents.testing import SimulatedRoom, fake_job_context


# --8<-- [start:fake]
def preferred_language() -> str:
    metadata = get_job_context().job.metadata
    return str(json.loads(metadata or "{}").get("lang", "en"))


async def test_language_from_metadata() -> None:
    with fake_job_context(job_metadata='{"lang": "fr"}'):
        assert preferred_language() == "fr"
    with fake_job_context():
        assert preferred_language() == "en"
# --8<-- [end:fake]


# --8<-- [start:room]
async def test_the_room_empties(simulated_room: SimulatedRoom) -> None:
    async with simulated_room.participant("alice"):
        assert simulated_room.identities() == ["alice"]
    assert simulated_room.identities() == []
# --8<-- [end:room]


# --8<-- [start:room_context]
async def test_waiting_for_a_caller(simulated_room: SimulatedRoom) -> None:
    async with simulated_room.connect() as room, simulated_room.participant("bob"):
        with fake_job_context(room=room) as ctx:
            caller = await ctx.wait_for_participant()
            assert caller.identity == "bob"
# --8<-- [end:room_context]
