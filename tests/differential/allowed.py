"""Every difference between the stand-in and the real server that stays, and why.

Each entry names the observation path, the exact value on each side, and the
reason; docs/deviations.md ("Stand-in vs the real server") says the same for
users.  ``observe.compare`` fails on any difference not listed here, and on
any entry whose difference has gone (then remove the entry and its line in
docs/deviations.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tests.differential.observe import ABSENT, Allowed

NO_ROOM_NODE = (
    "the real server forwards the call to the room's node and answers 503 only when that RPC "
    "times out (seconds); the stand-in gives the same answer at once"
)
EMPTY_NAME = (
    "the real server accepts an empty room name and makes a room called ''; the stand-in "
    "refuses it (400 invalid_argument 'no room name'), since such a room is almost surely a bug"
)
SIM_URL = (
    "the stand-in's jobs join its simulated rooms through JobAssignment.url; "
    "LiveKit OSS leaves it empty"
)
DELETED_AT = (
    "the stand-in fills state.deleted_at in DeleteDispatch's answer; LiveKit OSS leaves it 0"
)
REASON = (
    "livekit-protocol for Python knows JobState.reason, which livekit-server v1.13.5 does not; "
    "the stand-in's protojson writes it (unset: JSR_UNSPECIFIED), the real server cannot"
)
JOBS_LATER = (
    "the real server lists a job under its dispatch only when its internal job request "
    "returns, about 5 s after the worker got JobAssignment; the stand-in lists it at assignment"
)

MIGRATE = (
    "the stand-in re-adopts the jobs a reconnected worker lists in MigrateJob (so their later "
    "status updates and terminations reach it); LiveKit OSS ignores MigrateJob"
)
COUNT_LAG = (
    "the real server refreshes a room's participant count at most every 5 s; the stand-in "
    "counts a participant as soon as it joins"
)

CLOSE_CODE = (
    "both close the connection of a worker that breaks the protocol; the real server drops "
    "the TCP connection (the client reports 1006), the stand-in sends a close frame (1000)"
)
STRICT = (
    "the stand-in enforces the worker protocol's order rules: an answer to an offer the worker "
    "never got closes the connection, so a worker bug fails the test; the real server ignores "
    "the answer"
)


def _empty_name_dispatch() -> list[Allowed]:
    """CreateDispatch with room '': the real server makes the dispatch (and the room)."""
    real_fields = {
        "agent_name": "a",
        "attributes": {},
        "deployment": "",
        "id": "<AD_…>",
        "metadata": "",
        "restart_policy": "JRP_ON_FAILURE",
        "room": "",
        "state.created_at": "<int64>",
        "state.deleted_at": "0",
        "state.jobs": [],
    }
    out = [
        Allowed(f"dispatch_empty_room.body.{k}", v, ABSENT, EMPTY_NAME)
        for k, v in real_fields.items()
    ]
    out += [
        Allowed("dispatch_empty_room.status", 200, 400, EMPTY_NAME),
        Allowed("dispatch_empty_room.body.code", ABSENT, "invalid_argument", EMPTY_NAME),
        Allowed("dispatch_empty_room.body.msg", ABSENT, "no room name", EMPTY_NAME),
    ]
    return out


def _reason(*paths: str) -> list[Allowed]:
    return [Allowed(f"{p}.state.reason", ABSENT, "JSR_UNSPECIFIED", REASON) for p in paths]


ALLOWED: Mapping[str, Sequence[Allowed]] = {
    "missing_things": [
        Allowed(f"{call}.answered_at_once", False, True, NO_ROOM_NODE)
        for call in ("send_data_no_room", "list_dispatch_no_room", "delete_dispatch_no_room")
    ],
    "empty_and_odd_names": [
        Allowed("create_empty.status", 200, 400, EMPTY_NAME),
        Allowed("create_empty.code", None, "invalid_argument", EMPTY_NAME),
        Allowed("create_empty.name", "", None, EMPTY_NAME),
        *_empty_name_dispatch(),
    ],
    "dispatch_lifecycle": [
        Allowed("delete.body.state.deleted_at", "0", "<int64>", DELETED_AT),
    ],
    "worker_room_job": [
        Allowed("assignment.assignment.url", ABSENT, "sim+ws://127.0.0.1:*", SIM_URL),
        Allowed("jobs_listed_at_once", 0, 1, JOBS_LATER),
        *_reason("dispatch_assigned.state.jobs[0]", "dispatch_running.state.jobs[0]"),
    ],
    "worker_explicit_dispatch": [
        Allowed("assignment.assignment.url", ABSENT, "sim+ws://127.0.0.1:*", SIM_URL),
        Allowed("jobs_listed_at_once", 0, 1, JOBS_LATER),
        Allowed("delete.body.state.deleted_at", "0", "<int64>", DELETED_AT),
        *_reason("delete.body.state.jobs[0]", "list.body.agent_dispatches[0].state.jobs[0]"),
    ],
    "migrated_job": [
        Allowed("new_connection_gets", None, "termination", MIGRATE),
    ],
    "participant_view": [
        Allowed("room.counts_alice_at_once", False, True, COUNT_LAG),
    ],
    "worker_protocol_errors": [
        *(
            Allowed(f"{m}.code", 1006, 1000, CLOSE_CODE)
            for m in ("garbage", "empty", "register_again")
        ),
        Allowed("answer_unknown_job.closed", ABSENT, True, STRICT),
        Allowed("answer_unknown_job.code", ABSENT, 1000, STRICT),
        Allowed("answer_unknown_job.nothing", True, ABSENT, STRICT),
        Allowed("answer_unknown_job.then.binary.pong.last_timestamp", "<int64>", ABSENT, STRICT),
        Allowed("answer_unknown_job.then.binary.pong.timestamp", "<int64>", ABSENT, STRICT),
    ],
    "worker_termination": [
        Allowed("jobs_listed_at_once", 0, 1, JOBS_LATER),
        Allowed("delete.body.state.deleted_at", "0", "<int64>", DELETED_AT),
        *_reason("delete.body.state.jobs[0]"),
    ],
}
