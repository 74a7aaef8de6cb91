"""The demo: a stand-in server, a worker and simulated participants, all local.

``trio-agents demo`` (or ``python -m trio_agents demo``) runs it.  The agent
below is an ordinary agent: greet each participant, echo their text, count
their audio, and report on shutdown.  Its job runs in a prewarmed job process
(PROCESS executor) that joins the stand-in's simulated room over loopback.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import TYPE_CHECKING

import click
import trio
from livekit.protocol import agent
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.room import CreateRoomRequest

from . import rtc
from ._job._context import JobContext, JobProcess
from ._types import JobExecutorType

if TYPE_CHECKING:
    from .testing import Simulation, SimulationResult

logger = logging.getLogger("demo-agent")

AGENT_NAME = "demo-agent"
#: The demo job's teardown budget (``shutdown_process_timeout``), seconds.
DEMO_BUDGET = 5.0
ROOM = "demo-room"


def demo_setup(proc: JobProcess) -> None:
    """Prewarm: what a real agent would load once per process (a model, say)."""
    proc.userdata["greeting"] = "welcome to the demo"


async def demo_entrypoint(ctx: JobContext) -> None:
    """The demo agent's job."""
    ctx.log_context_fields["topic"] = json.loads(ctx.job.metadata or "{}").get("topic", "")
    frames: dict[str, int] = {}
    echoed = [0]

    async def serve_participant(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
        greeting = ctx.proc.userdata.get("greeting", "hello")
        await ctx.room.local_participant.send_text(
            f"{greeting}, {participant.identity}",
            topic="greeting",
            destination_identities=[participant.identity],
        )
        async with ctx.room.events(rtc.TrackSubscribed) as subscribed:
            async for ev in subscribed:
                if ev.participant.identity == participant.identity:
                    async with rtc.AudioStream(ev.track) as stream:
                        async for frame_event in stream:
                            frames[participant.identity] = frames.get(participant.identity, 0) + 1
                            del frame_event

    async def report(reason: str) -> None:
        logger.info(
            "job summary: ended because %r; echoed %d messages; audio frames %s",
            reason,
            echoed[0],
            frames,
        )

    ctx.add_participant_entrypoint(serve_participant)
    ctx.add_shutdown_callback(report)
    await ctx.connect()
    logger.info("connected to %s; metadata %s", ctx.room.name, ctx.job.metadata)
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.topic == "chat" and ev.participant is not None:
                echoed[0] += 1
                await ctx.room.local_participant.send_text(
                    ev.text.upper(), topic="echo", destination_identities=[ev.participant.identity]
                )


async def run_demo(participants: int = 2, executor: str = "process") -> int:
    """Run the demo; 0 when the job ended with JS_SUCCESS."""
    if participants < 0:
        raise ValueError(f"participants must be >= 0, got {participants}")
    from ._worker._server import AgentServer
    from .api import LiveKitAPI
    from .testing import open_local_server

    def say(msg: str) -> None:
        click.secho(f"[demo] {msg}", fg="cyan", err=True)

    async with open_local_server(port=0, departure_timeout=1.0) as local:
        say(f"stand-in LiveKit server on {local.url}")
        worker = AgentServer(
            local.url,
            local.api_key,
            local.api_secret,
            job_executor_type=JobExecutorType(executor),
            num_idle_processes=1,
            load_threshold=math.inf,
            # a busy 2-core machine can read 100% CPU while the demo starts, and
            # LiveKit (and the stand-in) never picks a worker whose load is 1.0
            load_fnc=lambda: 0.1,
            shutdown_process_timeout=DEMO_BUDGET,
            port=0,
            setup_fnc=demo_setup,
        )
        worker.rtc_session(agent_name=AGENT_NAME)(demo_entrypoint)
        async with trio.open_nursery() as nursery:
            t0 = time.monotonic()
            await nursery.start(worker.run)
            await worker.wait_registered()
            say(
                f"worker {worker.worker_id} registered in {time.monotonic() - t0:.2f} s "
                f"(health: http://127.0.0.1:{worker.health_port}/worker)"
            )
            async with LiveKitAPI(local.url, local.api_key, local.api_secret) as lk:
                if not participants:
                    # Nobody will join: a room no one joined closes after its empty
                    # timeout (LiveKit's default, 300 s, is too long for a demo).
                    await lk.room.create_room(CreateRoomRequest(name=ROOM, empty_timeout=2))
                dispatch = await lk.agent_dispatch.create_dispatch(
                    CreateAgentDispatchRequest(
                        agent_name=AGENT_NAME,
                        room=ROOM,
                        metadata=json.dumps({"topic": "structured concurrency"}),
                    )
                )
            say(f"dispatched {AGENT_NAME} to {ROOM} ({dispatch.id})")
            record = await local.wait_for_job(room=ROOM)
            say(f"job {record.job.id} assigned")

            async def visitor(i: int) -> None:
                identity = f"visitor-{i}"
                async with local.simulated_participant(identity, room=ROOM) as p:
                    greeting = await p.wait_for_text(topic="greeting")
                    say(f"{identity} heard: {greeting.text!r}")
                    await p.send_text(f"hi from {identity}", topic="chat")
                    await p.publish_audio(duration=0.3, frequency=220 * (i + 1))
                    echo = await p.wait_for_text(topic="echo")
                    say(f"{identity} heard: {echo.text!r}; leaving")

            async with trio.open_nursery() as visitors:
                for i in range(participants):
                    visitors.start_soon(visitor, i)
            if participants:
                say("everyone left; the room closes after its departure timeout, ending the job")
            else:
                say("no visitors: the room closes after its 2 s empty timeout, ending the job")
            final = None
            with trio.move_on_after(30):
                final = await local.wait_for_job_status(
                    record.job.id, agent.JS_SUCCESS, agent.JS_FAILED
                )
            status = agent.JobStatus.Name(final.status) if final else "unknown"
            error = f" {final.error}" if final is not None and final.error else ""
            say(f"job {record.job.id} ended: {status}{error}")
            await worker.aclose()
            nursery.cancel_scope.cancel()
    return 0 if status == "JS_SUCCESS" else 1


async def simulate_demo_job(visitors: int = 2) -> SimulationResult:
    """The demo's job again, simulated (run under a mock clock: no real time)."""
    from .testing import simulate_job

    async def script(sim: Simulation) -> None:
        async def visitor(i: int) -> None:
            async with sim.participant(f"visitor-{i}") as p:
                await p.wait_for_text(topic="greeting")
                await p.send_text(f"hi from visitor-{i}", topic="chat")
                await p.wait_for_text(topic="echo")

        async with trio.open_nursery() as nursery:
            for i in range(visitors):
                nursery.start_soon(visitor, i)

    return await simulate_job(
        demo_entrypoint,
        script=script,
        room=ROOM,
        metadata=json.dumps({"topic": "structured concurrency"}),
        userdata={"greeting": "welcome to the demo"},
        departure_timeout=1.0,
        empty_timeout=2.0,
        shutdown_process_timeout=DEMO_BUDGET,
    )


def show_timeline(visitors: int, svg_path: str | None) -> None:
    """Print the simulated demo job's tree and teardown (and write it as SVG)."""
    from trio.testing import MockClock

    from .testing import render_timeline, timeline_svg

    result = trio.run(simulate_demo_job, visitors, clock=MockClock(autojump_threshold=0))
    click.secho(
        "\n[demo] the same job as a nursery tree (simulated, virtual seconds):", fg="cyan", err=True
    )
    click.echo(render_timeline(result, budget=DEMO_BUDGET), err=True)
    if svg_path:
        with open(svg_path, "w") as f:
            f.write(timeline_svg(result, budget=DEMO_BUDGET))
        click.secho(f"[demo] timeline written to {svg_path}", fg="cyan", err=True)


__all__: list[str] = [
    "demo_entrypoint",
    "demo_setup",
    "run_demo",
    "show_timeline",
    "simulate_demo_job",
]
