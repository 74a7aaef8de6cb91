import agent


async def test_greets(simulate_job):
    async def script(sim):
        async with sim.participant("alice") as alice:
            assert (await alice.wait_for_text()).text == "hello alice"

    result = await simulate_job(agent.entrypoint, script=script)
    assert result.outcome.ok
