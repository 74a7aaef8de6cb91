"""trio-agents jobs in real rooms of the real livekit-server (the livekit backend).

Each test runs a trio-agents worker (``examples/echo_agent.py`` or
``scenario_agent.py``) and official-SDK participants, every one in its own
process inside the server's network namespace; it dispatches the agent
through the server's API and checks what the participants and the agent saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from livekit.protocol import models
from livekit.protocol import room as room_pb

from tests.real_rooms.helpers import (
    ROOT,
    WAIT,
    agent_worker,
    dispatch,
    read_report,
    sdk_participant,
    server_api,
    unique,
    wait_until,
)
from tests.real_server.harness import ServerProcess

pytestmark = [pytest.mark.real_server, pytest.mark.slow]

ECHO_AGENT = ROOT / "examples" / "echo_agent.py"
SCENARIO_AGENT = Path(__file__).resolve().parent / "scenario_agent.py"


async def test_the_echo_example_echoes_a_440_hz_sine(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("echo")
    async with agent_worker(livekit_server, ECHO_AGENT, tmp_path) as worker:
        async with sdk_participant(livekit_server, room, "alice", topics=("chat", "echo")) as alice:
            await dispatch(livekit_server, room, worker.agent_name)
            agent_id = (await alice.wait_for("participant_connected"))["identity"]
            # greeting (participant entrypoint) and text echo
            greeting = await alice.wait_for("text", topic="chat")
            assert greeting["text"] == "hello alice"
            await alice.command("send_text", text="ping", topic="chat")
            echo = await alice.wait_for("text", topic="echo")
            assert echo["text"] == "ping"
            # voice echo: alice publishes a sine, hears it back on the agent's track
            await alice.command("publish_sine", freq=440, seconds=4)
            await alice.wait_for("track_subscribed", identity=agent_id, name="echo")
            await alice.wait_for("sine_done")
            await alice.command("report_audio", identity=agent_id)
            heard = [e for e in alice.events if e["ev"] == "audio"][-1]
        assert heard["frames"] > 100, heard
        assert heard["rms"] > 1000, heard
        assert abs(heard["freq"] - 440) < 10, heard
        # alice left: after the server's departure timeout the room closes, the job
        # ends (the real server also terminates the job as it closes the room: the
        # reason is whichever of the two the job saw first)
        await wait_until(lambda: "ended: clean" in worker.log_text(), "the job to end")
        log = worker.log_text()
        assert "room disconnected" in log or "job terminated by the server" in log


async def test_the_graceful_shutdown_example_says_goodbye_before_it_leaves(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("graceful")
    async with (
        agent_worker(
            livekit_server,
            ROOT / "examples" / "graceful_shutdown.py",
            tmp_path,
            agent_name="graceful",
        ) as worker,
        sdk_participant(livekit_server, room, "guest", topics=("chat",)) as guest,
    ):
        await dispatch(livekit_server, room, "graceful")
        assert (await guest.wait_for("text", topic="chat"))["text"] == "goodbye"
        await wait_until(lambda: "ended: clean (conversation over)" in worker.log_text(), "end")
        assert "saved 1 lines (conversation over)" in worker.log_text()


async def test_the_prewarm_example_uses_what_setup_fnc_loaded(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("prewarm")
    async with (
        agent_worker(
            livekit_server, ROOT / "examples" / "prewarm.py", tmp_path, agent_name="prewarmed"
        ),
        sdk_participant(livekit_server, room, "guest", topics=("",)) as guest,
    ):
        await dispatch(livekit_server, room, "prewarmed")
        assert (await guest.wait_for("text", topic=""))["text"] == "I know 2 words"


async def test_participants_kinds_attributes_metadata_text_and_sip(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("presence")
    report = tmp_path / "report.jsonl"

    def seen(ev: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in read_report(report)
            if e["ev"] == ev and all(e.get(k) == v for k, v in match.items())
        ]

    async with (
        agent_worker(livekit_server, SCENARIO_AGENT, tmp_path) as worker,
        sdk_participant(livekit_server, room, "early", topics=("agent",)) as early,
    ):
        await early.command("set_attributes", attributes={"role": "first"})
        await dispatch(
            livekit_server,
            room,
            worker.agent_name,
            {"scenario": "presence", "report": str(report)},
        )
        await wait_until(lambda: bool(seen("connected")), "the agent to connect")
        assert seen("connected")[0]["present"] == ["early"]
        async with (
            sdk_participant(livekit_server, room, "late", topics=("agent",)) as late,
            sdk_participant(livekit_server, room, "bot", kind="agent"),
        ):
            # the STANDARD entrypoint ran for both, not for the other agent
            await wait_until(lambda: len(seen("standard_entrypoint")) == 2, "entrypoints")
            entries = {e["identity"]: e for e in seen("standard_entrypoint")}
            assert entries["early"]["at_connect"] is True
            assert entries["early"]["attributes"] == {"role": "first"}
            assert entries["late"]["at_connect"] is False
            assert all(e["kind"] == 0 for e in entries.values())
            # send_text reached each on its topic
            assert (await early.wait_for("text", topic="agent"))["text"] == "hello early"
            assert (await late.wait_for("text", topic="agent"))["text"] == "hello late"
            # the agent's own attributes reached the server (and its own event fired)
            await wait_until(lambda: bool(seen("attributes", changed={"agent-state": "ready"})), "")
            agent_identity = seen("attributes", changed={"agent-state": "ready"})[0]["identity"]
            async with server_api(livekit_server) as lk:
                info = await lk.room.get_participant(
                    room_pb.RoomParticipantIdentity(room=room, identity=agent_identity)
                )
            assert info.attributes["agent-state"] == "ready"
            assert info.kind == models.ParticipantInfo.AGENT
            # change events
            await late.command("set_attributes", attributes={"mood": "happy"})
            await late.command("set_metadata", metadata="meta-1")
            await late.command("send_text", text="to the agent", topic="chat")
            await wait_until(
                lambda: (
                    bool(seen("attributes", identity="late"))
                    and bool(seen("metadata", identity="late"))
                    and bool(seen("text", identity="late"))
                ),
                "change events",
            )
            assert seen("attributes", identity="late")[0]["changed"] == {"mood": "happy"}
            assert seen("metadata", identity="late")[0]["metadata"] == "meta-1"
            assert seen("text", identity="late")[0] == {
                "ev": "text",
                "identity": "late",
                "topic": "chat",
                "text": "to the agent",
            }
            # a participant whose token says SIP ends wait_for_participant(kind=SIP)
            assert not seen("sip")
            async with sdk_participant(livekit_server, room, "phone", kind="sip"):
                await wait_until(lambda: bool(seen("sip")), "the SIP participant")
            assert seen("sip")[0] == {"ev": "sip", "identity": "phone", "kind": 3}
            assert len(seen("standard_entrypoint")) == 2  # SIP is not STANDARD


async def test_the_job_ends_when_the_last_standard_participant_leaves(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("leave")
    report = tmp_path / "report.jsonl"
    async with agent_worker(livekit_server, SCENARIO_AGENT, tmp_path) as worker:
        async with sdk_participant(livekit_server, room, "solo"):
            await dispatch(
                livekit_server,
                room,
                worker.agent_name,
                {"scenario": "hook_then_wait", "report": str(report)},
            )
            await wait_until(
                lambda: any(e["ev"] == "connected" for e in read_report(report)), "connect"
            )
            assert not any(e["ev"] == "shutdown" for e in read_report(report))
        # departure_timeout is 1 s on the test server: the room closes, the job ends
        await wait_until(
            lambda: any(e["ev"] == "hook_done" for e in read_report(report)), "the job's end"
        )
    events = read_report(report)
    assert [e["reason"] for e in events if e["ev"] == "shutdown"] == ["room disconnected"]
    assert {"ev": "hook_done", "reason": "room disconnected"} in events


@pytest.mark.parametrize("scenario", ["delete_room", "delete_on_close"])
async def test_the_job_deletes_its_room(
    livekit_server: ServerProcess, tmp_path: Path, scenario: str
) -> None:
    room = unique(scenario.replace("_", "-"))
    report = tmp_path / "report.jsonl"
    async with agent_worker(livekit_server, SCENARIO_AGENT, tmp_path) as worker:
        async with sdk_participant(livekit_server, room, "guest") as guest:
            await dispatch(
                livekit_server,
                room,
                worker.agent_name,
                {"scenario": scenario, "report": str(report)},
            )
            disconnected = await guest.wait_for("disconnected")
            assert disconnected["reason"] == 5  # ROOM_DELETED
        async with server_api(livekit_server) as lk:
            with trio.fail_after(WAIT):
                while True:
                    rooms = await lk.room.list_rooms(room_pb.ListRoomsRequest(names=[room]))
                    if not rooms.rooms:
                        break
                    await trio.sleep(0.2)
        await wait_until(
            lambda: any(e["ev"] == "shutdown" for e in read_report(report)), "the job's end"
        )


# What the server records of a job's end is the status its worker reports
# (UpdateJobStatus), logged by the server as "job ended"; ListDispatch keeps
# the job state as it was at assignment (LiveKit v1.13), so the log is where
# the recorded status shows.


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("hook_then_shutdown", "JS_SUCCESS"),
        ("fail", "JS_FAILED"),
    ],
)
async def test_the_server_records_the_jobs_status(
    livekit_server: ServerProcess, tmp_path: Path, scenario: str, status: str
) -> None:
    room = unique(scenario.replace("_", "-"))
    report = tmp_path / "report.jsonl"
    # a participant keeps the room alive meanwhile
    async with (
        agent_worker(livekit_server, SCENARIO_AGENT, tmp_path) as worker,
        sdk_participant(livekit_server, room, "witness"),
    ):
        await dispatch(
            livekit_server,
            room,
            worker.agent_name,
            {"scenario": scenario, "report": str(report)},
        )
        await wait_until(
            lambda: any(e["ev"] == "shutdown" for e in read_report(report)), "the job's end"
        )
        (ended,) = [e for e in read_report(report) if e["ev"] == "shutdown"]
        pattern = rf'job ended.*"jobID": "{ended["job_id"]}", "status": "(\w+)"'
        found = await trio.to_thread.run_sync(
            lambda: livekit_server.wait_for_log(pattern, timeout=20)
        )
    assert found.group(1) == status, read_report(report)


async def test_the_server_records_success_for_a_job_ended_by_the_room_closing(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("room-closes")
    report = tmp_path / "report.jsonl"
    async with agent_worker(livekit_server, SCENARIO_AGENT, tmp_path) as worker:
        async with sdk_participant(livekit_server, room, "visitor"):
            await dispatch(
                livekit_server,
                room,
                worker.agent_name,
                {"scenario": "hook_then_wait", "report": str(report)},
            )
            await wait_until(
                lambda: any(e["ev"] == "connected" for e in read_report(report)), "connect"
            )
        # the visitor left: the room closes after the departure timeout
        await wait_until(
            lambda: any(e["ev"] == "hook_done" for e in read_report(report)), "the job's end"
        )
        (ended,) = [e for e in read_report(report) if e["ev"] == "shutdown"]
        pattern = rf'job ended.*"jobID": "{ended["job_id"]}", "status": "(\w+)"'
        found = await trio.to_thread.run_sync(
            lambda: livekit_server.wait_for_log(pattern, timeout=20)
        )
    assert found.group(1) == "JS_SUCCESS", read_report(report)


# --- the seed's feature examples, each as a job in a real room ------------------------


async def test_the_call_center_example_greets_callers_and_supervisors_by_kind(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("line")
    async with (
        agent_worker(
            livekit_server, ROOT / "examples" / "call_center.py", tmp_path, agent_name="call-center"
        ) as worker,
        sdk_participant(livekit_server, room, "supervisor", topics=("chat",)) as supervisor,
    ):
        await dispatch(livekit_server, room, "call-center", {"language": "fr"})
        text = await supervisor.wait_for("text", topic="chat")
        assert text["text"] == f"you are supervising {room}"
        async with sdk_participant(
            livekit_server, room, "+33123456789", kind="sip", topics=("chat",)
        ) as caller:
            text = await caller.wait_for("text", topic="chat")
            assert text["text"] == "bonjour, caller +33123456789"
            await wait_until(lambda: "a caller is on the line" in worker.log_text(), "log")
    assert "caller=+33123456789" in worker.log_text()
    # each was greeted once, by its own entrypoint
    assert [e["text"] for e in supervisor.events if e["ev"] == "text"] == [
        f"you are supervising {room}"
    ]


async def test_the_hang_up_example_deletes_the_room_for_everyone(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("call")
    async with agent_worker(livekit_server, ROOT / "examples" / "hang_up.py", tmp_path) as worker:
        async with (
            sdk_participant(livekit_server, room, "alice", topics=("chat",)) as alice,
            sdk_participant(livekit_server, room, "bob", topics=("chat",)) as bob,
        ):
            await dispatch(livekit_server, room, worker.agent_name)
            await alice.wait_for("participant_connected")
            await alice.command("send_text", text="bye", topic="chat")
            assert (await alice.wait_for("text", topic="chat"))["text"] == "bye, hanging up"
            assert (await alice.wait_for("disconnected"))["reason"] == 5  # ROOM_DELETED
            assert (await bob.wait_for("disconnected"))["reason"] == 5
        await wait_until(lambda: "ended: clean" in worker.log_text(), "the job's end")


async def test_the_room_state_example_sees_room_metadata_and_attribute_changes(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("state")
    async with (
        agent_worker(livekit_server, ROOT / "examples" / "room_state.py", tmp_path) as worker,
        sdk_participant(livekit_server, room, "alice", topics=("chat",)) as alice,
    ):
        await dispatch(livekit_server, room, worker.agent_name)
        await alice.wait_for("participant_connected")
        await wait_until(lambda: "(livekit backend)" in worker.log_text(), "the agent's join")
        async with server_api(livekit_server) as lk:
            await lk.room.update_room_metadata(
                room_pb.UpdateRoomMetadataRequest(room=room, metadata="topic-1")
            )
        await wait_until(lambda: "room topic: '' -> 'topic-1'" in worker.log_text(), "topic")
        await alice.command("set_attributes", attributes={"status": "done"})
        text = await alice.wait_for("text", topic="chat")
        assert text["text"] == "thanks alice; topics so far: ['topic-1']"


async def test_the_audio_on_connect_example_publishes_and_listens(
    livekit_server: ServerProcess, tmp_path: Path
) -> None:
    room = unique("audio")
    async with (
        agent_worker(livekit_server, ROOT / "examples" / "audio_on_connect.py", tmp_path) as worker,
        sdk_participant(livekit_server, room, "alice", topics=("chat",)) as alice,
    ):
        await alice.command("publish_sine", freq=440, seconds=3)
        await dispatch(livekit_server, room, worker.agent_name)
        assert (await alice.wait_for("text", topic="chat"))["text"] == "the agent is here"
        await alice.wait_for("track_subscribed", name="agent-voice")
        await alice.wait_for("sine_done")
        # AUDIO_ONLY: the job subscribed to alice's audio itself, and counted frames
        await alice.command("send_text", text="count", topic="chat")
        heard = [e for e in alice.events if e["ev"] == "text" and e["text"].startswith("heard")]
        with trio.fail_after(WAIT):
            while not heard:
                await alice.changed.wait()
                heard = [
                    e for e in alice.events if e["ev"] == "text" and e["text"].startswith("heard")
                ]
        frames = int(heard[0]["text"].split()[1])
        assert frames > 50, heard
