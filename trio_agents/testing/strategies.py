"""Hypothesis strategies for property-testing your own agents.

Needs hypothesis (``pip install 'trio-agents[testing]'``)::

    from hypothesis import given, settings
    from trio_agents.testing import run_script
    from trio_agents.testing import strategies as ts

    @settings(deadline=None)
    @given(ts.scripts())
    def test_my_agent_ends_cleanly(script):
        result = run_script(my_agent.entrypoint, script)
        assert result.outcome.ok, result.outcome

A generated ``Script`` is valid by construction (nobody leaves, speaks or
changes attributes before joining; nobody joins twice) and shrinks towards
fewer, simpler steps, so a failure reads as a short story.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "trio_agents.testing.strategies needs hypothesis; "
        "install it with: pip install 'trio-agents[testing]'"
    ) from exc

from collections.abc import Sequence

from ._script import (
    PARTICIPANT_KINDS,
    DeleteRoom,
    Drain,
    Join,
    Leave,
    Script,
    SendText,
    SetAttributes,
    SetMetadata,
    SetName,
    Step,
    Terminate,
    Trigger,
    Wait,
)

__all__ = [
    "attribute_maps",
    "identities",
    "joins",
    "participant_kinds",
    "scripts",
    "shutdown_triggers",
    "steps",
    "texts",
    "waits",
]

#: The kinds a job's participant entrypoints see by default (LiveKit's
#: ``DEFAULT_PARTICIPANT_KINDS``): standard, sip, connector.
DEFAULT_KINDS: tuple[str, ...] = ("standard", "sip", "connector")

_POOL = ("alice", "bob", "carol", "dave", "erin")


def identities(pool: Sequence[str] = _POOL) -> st.SearchStrategy[str]:
    """Participant identities, mostly from a small ``pool`` (so that the same
    person leaves and comes back), sometimes any short non-empty text."""
    return st.one_of(
        st.sampled_from(list(pool)),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8),
    )


def participant_kinds(kinds: Sequence[str] = DEFAULT_KINDS) -> st.SearchStrategy[str]:
    """Participant kinds among ``kinds`` (names as in tokens: standard, sip, ...)."""
    unknown = set(kinds) - set(PARTICIPANT_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {PARTICIPANT_KINDS}, got {kinds}")
    return st.sampled_from(list(kinds))


def texts(*, max_size: int = 40) -> st.SearchStrategy[str]:
    """Chat text, empty and whitespace-only included."""
    return st.text(max_size=max_size)


def attribute_maps(*, keys: Sequence[str] = ("lang", "role", "mood")) -> st.SearchStrategy[
    dict[str, str]
]:
    """Attribute updates over a few ``keys`` (an empty value deletes the key)."""
    return st.dictionaries(st.sampled_from(list(keys)), st.text(max_size=8), max_size=len(keys))


def waits(*, max_seconds: float = 30.0) -> st.SearchStrategy[Wait]:
    """Time passing: whole tenths of a second up to ``max_seconds``."""
    return st.integers(0, int(max_seconds * 10)).map(lambda tenths: Wait(tenths / 10))


def joins(
    identity: st.SearchStrategy[str] | None = None, *, kinds: Sequence[str] = DEFAULT_KINDS
) -> st.SearchStrategy[Join]:
    """A participant joining: identity, kind, name, metadata and attributes."""
    return st.builds(
        Join,
        identity=identities() if identity is None else identity,
        kind=participant_kinds(kinds),
        name=st.text(max_size=8),
        metadata=st.text(max_size=8),
        attributes=attribute_maps(),
    )


def shutdown_triggers() -> st.SearchStrategy[Trigger]:
    """What ends (or winds down) a job from outside: termination, drain, room deletion."""
    return st.sampled_from([Terminate(), Drain(), DeleteRoom()])


@st.composite
def steps(
    draw: st.DrawFn,
    *,
    present: Sequence[str] = (),
    kinds: Sequence[str] = DEFAULT_KINDS,
    pool: Sequence[str] = _POOL,
) -> Step:
    """One step that is valid when ``present`` are in the room."""
    absent = [p for p in pool if p not in present]
    choices = ["wait"]
    if absent:
        choices.append("join")
    if present:
        choices += ["leave", "text", "attributes", "metadata", "name"]
    choice = draw(st.sampled_from(choices))
    if choice == "wait":
        return draw(waits())
    if choice == "join":
        return draw(joins(st.sampled_from(absent), kinds=kinds))
    who = draw(st.sampled_from(list(present)))
    if choice == "leave":
        return Leave(who)
    if choice == "text":
        return SendText(who, draw(texts()), topic=draw(st.sampled_from(["", "chat"])))
    if choice == "attributes":
        return SetAttributes(who, draw(attribute_maps()))
    if choice == "metadata":
        return SetMetadata(who, draw(st.text(max_size=8)))
    return SetName(who, draw(st.text(max_size=8)))


@st.composite
def scripts(
    draw: st.DrawFn,
    *,
    max_steps: int = 12,
    kinds: Sequence[str] = DEFAULT_KINDS,
    pool: Sequence[str] = _POOL,
    triggers: st.SearchStrategy[Trigger | None] | None = None,
) -> Script:
    """A valid ``Script`` of up to ``max_steps`` steps among ``pool``'s identities.

    ``triggers`` draws the optional shutdown trigger at the end (default:
    none, or one of ``shutdown_triggers()``); pass ``st.none()`` for scripts
    that end only by everyone leaving.
    """
    if not pool:
        raise ValueError("pool must name at least one identity")
    count = draw(st.integers(0, max_steps))
    present: list[str] = []
    out: list[Step] = []
    for _ in range(count):
        step = draw(steps(present=present, kinds=kinds, pool=pool))
        if isinstance(step, Join):
            present.append(step.identity)
        elif isinstance(step, Leave):
            present.remove(step.identity)
        out.append(step)
    trigger = draw(st.none() | shutdown_triggers() if triggers is None else triggers)
    return Script(steps=tuple(out), trigger=trigger)

