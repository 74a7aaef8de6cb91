"""PyJWT's short-key warning: silenced for the dev secret only."""

from __future__ import annotations

import warnings

import trio

from trio_agents.testing import DEV_API_SECRET, open_local_server


def _short_key_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "HMAC key" in str(w.message)]


async def test_the_dev_secret_gives_no_warning_other_short_secrets_do() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with open_local_server() as server:
            assert server.api_secret == DEV_API_SECRET
            server.participant_token("alice", "room")
        assert _short_key_warnings(caught) == []

        async with open_local_server(api_secret="short-key!") as server:
            server.participant_token("alice", "room")
        assert _short_key_warnings(caught), "a real short secret must still warn"


def test_a_user_simulation_prints_no_pyjwt_warning() -> None:
    from trio_agents.testing import simulate_job

    async def entrypoint(ctx: object) -> None:
        await ctx.connect()  # type: ignore[attr-defined]
        ctx.shutdown()  # type: ignore[attr-defined]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trio.run(simulate_job, entrypoint)
    assert result.outcome.ok
    assert _short_key_warnings(caught) == []
