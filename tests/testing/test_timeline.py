"""The teaching view: a simulated job's tree and teardown as text and SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import trio

from trio_agents import JobContext, rtc
from trio_agents.testing import Simulation, Timeline, render_timeline, simulate_job, timeline_svg

SVG = "{http://www.w3.org/2000/svg}"


async def agent(ctx: JobContext) -> None:
    async def serve(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        if p.identity == "bob":
            raise RuntimeError("bob's task broke")
        await trio.sleep_forever()

    async def slow_hook() -> None:
        await trio.sleep(100)  # cut at the deadline

    ctx.add_participant_entrypoint(serve)
    ctx.add_shutdown_callback(slow_hook)
    ctx.add_shutdown_callback(lambda: None)
    await ctx.connect()


async def script(sim: Simulation) -> None:
    async with sim.participant("alice"), sim.participant("bob"):
        await trio.sleep(1)
    # both left: the room closes after the departure timeout


async def test_the_timeline_shows_tasks_shutdown_deadline_and_teardown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await simulate_job(
        agent, script=script, departure_timeout=2, shutdown_process_timeout=3
    )
    tl = Timeline.from_result(result, budget=3)
    assert tl.shutdown_reason == "room disconnected"
    assert tl.shutdown_at == 3.0
    assert tl.deadline == 6.0
    by_label = {p.label.split(":")[0]: p for p in tl.participants}
    assert by_label["bob"].how.startswith("failed: RuntimeError")
    assert by_label["alice"].how == "ended"  # cancelled when alice left
    # the outcome is reported before the room is left, then the hooks run
    assert [m.label for m in tl.steps][:4] == [
        "cancel_work",
        "reported: clean",
        "report",
        "disconnect",
    ]
    hooks = {m.label: m.how for m in tl.hooks}
    assert hooks["slow_hook"] == "cut"
    assert "<lambda>" in hooks

    text = render_timeline(result, budget=3)
    assert "shutdown: room disconnected at 3.00  (deadline 6.00)" in text
    assert "slow_hook" in text
    assert "cut at 6.00" in text
    assert text.splitlines()[0].startswith(f"job {result.job.id}")

    root = ET.fromstring(timeline_svg(result, budget=3))
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}rect")) == 1 + 2  # entrypoint + two participant tasks
    assert len(root.findall(f"{SVG}line")) == 2  # shutdown and deadline
    assert len(root.findall(f"{SVG}circle")) == len(tl.steps) + len(tl.hooks)
