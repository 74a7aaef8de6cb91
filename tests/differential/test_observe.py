"""The comparison the differential tests rest on (no server needed)."""

from __future__ import annotations

import pytest

from tests.differential.observe import ABSENT, Allowed, compare, flatten, scrub


def test_volatile_values_keep_only_their_shape() -> None:
    obs = flatten(
        {
            "sid": "RM_A3HT35Qpwdcg",
            "creation_time": "1796322823",
            "deleted_at": "0",
            "turn_password": "",
            "name": "diff-room-7584b7f8",
            "identity": "agent-AJ_8ByFjYWVHrSf",
            "status": "JS_RUNNING",
            "codecs": [{"mime": "audio/opus"}],
            "attributes": {},
            "jobs": [],
        },
        "x",
    )
    assert obs == {
        "x.sid": "<RM_…>",
        "x.creation_time": "<int64>",
        "x.deleted_at": "0",
        "x.turn_password": "<empty>",
        "x.name": "diff-room-*",
        "x.identity": "agent-<AJ_…>",
        "x.status": "JS_RUNNING",  # an enum name is no id
        "x.codecs[0].mime": "audio/opus",
        "x.attributes": {},
        "x.jobs": [],
    }
    assert scrub("invalid token: eyJa.eyJb.c-d_e, error: x") == "invalid token: <jwt>, error: x"


def test_same_observations_pass_and_any_unlisted_difference_fails() -> None:
    compare({"a": 1, "b": "x"}, {"a": 1, "b": "x"})
    with pytest.raises(AssertionError, match="unexplained: b: real='x' stand-in='y'"):
        compare({"a": 1, "b": "x"}, {"a": 1, "b": "y"})
    with pytest.raises(AssertionError, match="unexplained: c: real='<absent>' stand-in=2"):
        compare({"a": 1}, {"a": 1, "c": 2})


def test_an_allowed_difference_must_be_exactly_as_listed_and_still_there() -> None:
    allowed = [Allowed("b", "x", ABSENT, "why")]
    compare({"b": "x"}, {}, allowed)
    with pytest.raises(AssertionError, match="changed: b"):
        compare({"b": "x"}, {"b": "z"}, allowed)
    with pytest.raises(AssertionError, match="stale allow-list entry: b"):
        compare({"b": "x"}, {"b": "x"}, allowed)
