"""A trio-agents agent for the real-room tests; what it does is chosen by the job metadata.

The metadata is JSON: ``{"scenario": NAME, "report": PATH, ...}``.  The agent
appends one JSON object per line to PATH for what it saw, so the test can
check it.  Run as a worker: ``python scenario_agent.py start`` (the test sets
``LIVEKIT_AGENT_NAME`` and the server's URL and keys).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from trio_agents import AgentServer, JobContext, rtc, run_app

server = AgentServer(shutdown_process_timeout=10.0, num_idle_processes=1)


def reporter(ctx: JobContext) -> Any:
    path = json.loads(ctx.job.metadata)["report"]

    def report(**fields: Any) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(fields) + "\n")

    return report


def _watch(ctx: JobContext, report: Any) -> None:
    room = ctx.room

    @room.on("participant_attributes_changed")
    def _attrs(ev: rtc.ParticipantAttributesChanged) -> None:
        report(ev="attributes", identity=ev.participant.identity, changed=ev.changed_attributes)

    @room.on("participant_metadata_changed")
    def _meta(ev: rtc.ParticipantMetadataChanged) -> None:
        report(ev="metadata", identity=ev.participant.identity, metadata=ev.new)

    @room.on("room_metadata_changed")
    def _room_meta(ev: rtc.RoomMetadataChanged) -> None:
        report(ev="room_metadata", metadata=ev.new)

    @room.on("text_received")
    def _text(ev: rtc.TextReceived) -> None:
        who = ev.participant.identity if ev.participant else None
        report(ev="text", identity=who, topic=ev.topic, text=ev.text)


async def presence(ctx: JobContext, report: Any) -> None:
    """Participant entrypoints by kind, attributes/metadata events, send_text, SIP wait."""
    present: set[str] = set()

    async def standard(ctx: JobContext, p: rtc.RemoteParticipant) -> None:
        report(
            ev="standard_entrypoint",
            identity=p.identity,
            kind=int(p.kind),
            at_connect=p.identity in present,
            attributes=dict(p.attributes),
            metadata=p.metadata,
        )
        await ctx.room.local_participant.send_text(
            f"hello {p.identity}", topic="agent", destination_identities=[p.identity]
        )

    ctx.add_participant_entrypoint(standard, kind=rtc.ParticipantKind.STANDARD)
    _watch(ctx, report)
    await ctx.connect()
    present.update(ctx.room.remote_participants)
    report(ev="connected", present=sorted(present), room=ctx.room.name)
    await ctx.room.local_participant.set_attributes({"agent-state": "ready"})
    sip = await ctx.wait_for_participant(kind=rtc.ParticipantKind.SIP)
    report(ev="sip", identity=sip.identity, kind=int(sip.kind))


async def hook_then_shutdown(ctx: JobContext, report: Any) -> None:
    async def hook(reason: str) -> None:
        await trio.sleep(1)
        report(ev="hook_done", reason=reason)

    ctx.add_shutdown_callback(hook)
    await ctx.connect()
    report(ev="connected")
    ctx.shutdown("scenario done")


async def hook_then_wait(ctx: JobContext, report: Any) -> None:
    async def hook(reason: str) -> None:
        await trio.sleep(1)
        report(ev="hook_done", reason=reason)

    ctx.add_shutdown_callback(hook)
    await ctx.connect()
    report(ev="connected")


async def fail(ctx: JobContext, report: Any) -> None:
    await ctx.connect()
    report(ev="connected")
    raise RuntimeError("the scenario fails on purpose")


async def delete_room(ctx: JobContext, report: Any) -> None:
    await ctx.connect()
    report(ev="connected")
    p = await ctx.wait_for_participant()
    report(ev="participant", identity=p.identity)
    await ctx.delete_room()
    report(ev="deleted")


async def delete_on_close(ctx: JobContext, report: Any) -> None:
    ctx.delete_room_on_close = True
    await ctx.connect()
    report(ev="connected")
    await ctx.wait_for_participant()
    ctx.shutdown("done, delete the room")


SCENARIOS = {
    "presence": presence,
    "hook_then_shutdown": hook_then_shutdown,
    "hook_then_wait": hook_then_wait,
    "fail": fail,
    "delete_room": delete_room,
    "delete_on_close": delete_on_close,
}


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    report = reporter(ctx)
    scenario = json.loads(ctx.job.metadata)["scenario"]

    def ended(reason: str) -> None:
        report(ev="shutdown", reason=reason, job_id=ctx.job.id)

    ctx.add_shutdown_callback(ended)
    await SCENARIOS[scenario](ctx, report)


if __name__ == "__main__":
    run_app(server)
