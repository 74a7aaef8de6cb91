"""What a client can see of a server, normalized so that two servers compare.

A scenario returns an *observation*: a flat ``{path: value}`` dict.  Paths are
built like ``create.body.enabled_codecs[2].mime``; values are JSON scalars.
Whatever differs from run to run on the same server (ids, sids, timestamps,
tokens, passwords) is replaced by its shape (``<AD_…>``, ``<int>``, ``<jwt>``,
``<empty>``), so what stays is what a client may depend on: which fields are
there, their types, the values that matter, HTTP statuses, Twirp codes and
messages.

``compare`` holds two observations to an allow-list: every difference must be
listed (with the exact value on each side), and every listed difference must
still be there, so a fixed difference shows up as a stale entry to remove.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from google.protobuf import json_format
from google.protobuf.message import Message

#: A path one server has and the other has not.
ABSENT = "<absent>"

#: Fields whose value differs on every run: kept as a shape only.
VOLATILE = frozenset(
    {
        "sid",
        "id",
        "job_id",
        "worker_id",
        "agent_id",
        "dispatch_id",
        "participant_sid",
        "creation_time",
        "creation_time_ms",
        "created_at",
        "deleted_at",
        "started_at",
        "updated_at",
        "ended_at",
        "joined_at",
        "joined_at_ms",
        "turn_password",
        "unix_micro",
        "node_id",
        "timestamp",
        "last_timestamp",
        "token",
        "iat",
        "exp",
        "nbf",
        "jti",
        # protojson's camelCase names (JSON-mode worker frames)
        "workerId",
        "nodeId",
    }
)

_ID = re.compile(r"^([A-Z]{2}_)[A-Za-z0-9]+$")
#: An id inside free text (``agent-AJ_x7Yq...``); enum names (``JT_ROOM``) have no lower case.
_ID_IN_TEXT = re.compile(r"\b([A-Z]{2}_)(?=[A-Za-z0-9]*[a-z0-9])[A-Za-z0-9]{8,}\b")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: The unique names scenarios give rooms and agents (``scenarios.fresh``).
#: The stand-in listens on a free loopback port.
_LOOPBACK_PORT = re.compile(r"(127\.0\.0\.1:)\d+")
_FRESH = re.compile(r"\b(diff-[a-z]+-)[0-9a-f]{8}\b")


def shape(value: Any) -> Any:
    """The shape of a volatile value: ``<AD_…>``, ``<int>``, ``<jwt>``, ``<str>``; 0/"" kept."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return 0 if value == 0 else "<int>"
    if isinstance(value, str):
        if value in ("", "0"):
            return value or "<empty>"
        if value.isdigit():
            return "<int64>"
        m = _ID.match(value)
        if m:
            return f"<{m.group(1)}…>"
        if _JWT.fullmatch(value):
            return "<jwt>"
        return "<str>"
    return f"<{type(value).__name__}>"


def scrub(text: str) -> str:
    """Free text made stable: JWTs (error messages quote the token), ids, fresh names."""
    text = _JWT.sub("<jwt>", text)
    text = _ID_IN_TEXT.sub(lambda m: f"<{m.group(1)}…>", text)
    text = _FRESH.sub(lambda m: m.group(1) + "*", text)
    return _LOOPBACK_PORT.sub(r"\1*", text)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{path: scalar}`` of a JSON-like value; volatile fields reduced to their shape.

    Empty lists and dicts stay as ``[]`` / ``{}`` so that their presence counts.
    """
    out: dict[str, Any] = {}

    def walk(v: Any, path: str, key: str) -> None:
        if isinstance(v, Mapping):
            if not v:
                out[path] = {}
            for k in sorted(v):
                walk(v[k], f"{path}.{k}" if path else str(k), str(k))
        elif isinstance(v, list | tuple):
            if not v:
                out[path] = []
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]", key)
        elif key in VOLATILE:
            out[path] = shape(v)
        elif isinstance(v, str):
            out[path] = scrub(v)
        else:
            out[path] = v

    walk(value, prefix, prefix.rsplit(".", 1)[-1])
    return out


def proto_fields(msg: Message) -> dict[str, Any]:
    """A protobuf message as protojson with proto field names: only the fields that are set."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


@attrs.frozen
class Allowed:
    """One difference the stand-in keeps on purpose (see docs/deviations.md)."""

    path: str
    real: Any
    stand_in: Any
    why: str


def differences(real: Mapping[str, Any], stand_in: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = sorted(set(real) | set(stand_in))
    return {
        k: (real.get(k, ABSENT), stand_in.get(k, ABSENT))
        for k in keys
        if real.get(k, ABSENT) != stand_in.get(k, ABSENT)
    }


def compare(
    real: Mapping[str, Any], stand_in: Mapping[str, Any], allowed: Sequence[Allowed] = ()
) -> None:
    """Fail unless the two observations differ in exactly the ``allowed`` ways."""
    diff = differences(real, stand_in)
    listed = {a.path: a for a in allowed}
    assert len(listed) == len(allowed), "an allow-list names a path twice"
    problems = []
    for path, (r, s) in diff.items():
        a = listed.get(path)
        if a is None:
            problems.append(f"unexplained: {path}: real={r!r} stand-in={s!r}")
        elif (a.real, a.stand_in) != (r, s):
            problems.append(
                f"changed: {path}: real={r!r} stand-in={s!r}"
                f" (allow-list says real={a.real!r} stand-in={a.stand_in!r})"
            )
    for path in listed:
        if path not in diff:
            problems.append(
                f"stale allow-list entry: {path} no longer differs"
                f" (real={real.get(path, ABSENT)!r}); remove it and its docs/deviations.md line"
            )
    assert not problems, "the stand-in differs from the real server:\n" + "\n".join(problems)


def dump(obs: Mapping[str, Any]) -> str:
    """An observation, one path per line (for failure messages and exploring)."""
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in sorted(obs.items()))
