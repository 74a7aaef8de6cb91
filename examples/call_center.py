"""Participant entrypoints filtered by kind, a SIP caller, and job metadata.

* The dispatch's metadata (JSON, e.g. ``{"language": "fr"}``) picks the greeting.
* Each SIP participant (a phone caller) is greeted by ``greet_caller``; each
  STANDARD participant (a supervisor in a browser) gets ``brief_supervisor``.
  Each runs once per matching participant, as a task of the job, cancelled
  when that participant leaves.
* ``wait_for_participant(kind=SIP)`` waits for the first caller (already in
  the room or joining later); it raises instead of hanging if the room closes
  first.
* ``log_context_fields`` adds the caller to every log line of the job.

    python examples/call_center.py dev
    trio-agents dispatch --room line-1 --agent-name call-center --metadata '{"language": "fr"}'
    trio-agents sim join --room line-1 --identity +33123456789 --kind sip
"""

from __future__ import annotations

import json
import logging

from trio_agents import AgentServer, JobContext, rtc, run_app

logger = logging.getLogger("call-center")
server = AgentServer()

GREETINGS = {"en": "hello", "fr": "bonjour", "de": "hallo"}


def greeting(ctx: JobContext) -> str:
    try:
        language = json.loads(ctx.job.metadata or "{}").get("language", "en")
    except ValueError:  # metadata is the dispatcher's free text; never crash on it
        language = "en"
    return GREETINGS.get(language, GREETINGS["en"])


async def greet_caller(ctx: JobContext, caller: rtc.RemoteParticipant) -> None:
    await ctx.room.local_participant.send_text(
        f"{greeting(ctx)}, caller {caller.identity}",
        topic="chat",
        destination_identities=[caller.identity],
    )


async def brief_supervisor(ctx: JobContext, supervisor: rtc.RemoteParticipant) -> None:
    await ctx.room.local_participant.send_text(
        f"you are supervising {ctx.room.name}",
        topic="chat",
        destination_identities=[supervisor.identity],
    )


@server.rtc_session(agent_name="call-center")
async def entrypoint(ctx: JobContext) -> None:
    ctx.add_participant_entrypoint(greet_caller, kind=rtc.ParticipantKind.SIP)
    ctx.add_participant_entrypoint(brief_supervisor, kind=rtc.ParticipantKind.STANDARD)
    await ctx.connect()
    caller = await ctx.wait_for_participant(kind=rtc.ParticipantKind.SIP)
    ctx.log_context_fields["caller"] = caller.identity
    logger.info("a caller is on the line")  # carries caller=..., job_id=..., room=...


if __name__ == "__main__":
    run_app(server)
