"""The teaching view: a job's nursery tree and teardown, drawn from its lifecycle log.

``simulate_job`` records what the job tree did and when (virtual time under a
mock clock).  ``render_timeline(result)`` draws it for a terminal::

    job AJ_sim1 in 'demo'  (outcome: clean - room disconnected)
    0s                                                                  2.00s
    ├── entrypoint                 [██████████████████████████████████] 0.00-2.00 returned
    ├── participants
    │   └── alice: serve           [█]                                  0.00-0.00 ended
    ├── shutdown: room disconnected                                    ▲ 2.00  (deadline 12.00)
    └── teardown
        ├── cancel_work            done at 2.00
        ...

and ``timeline_svg(result)`` draws the same as an SVG picture (lanes for the
tasks, a line where shutdown started, one for the deadline, a mark per
teardown step and hook).
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

import attrs

from ._simulate import LifecycleEvent, SimulationResult


@attrs.frozen
class Span:
    """A task's life: from ``start`` to ``end`` (None: still running at the end)."""

    label: str
    start: float
    end: float | None
    how: str  # returned, failed: ..., ended, cut, running


@attrs.frozen
class Mark:
    """A moment in the teardown: a step done, a hook done, failed or cut."""

    label: str
    time: float
    how: str


@attrs.frozen
class Timeline:
    """What ``render_timeline`` and ``timeline_svg`` draw, for tests and tools."""

    job_id: str
    room: str
    entrypoint: Span | None
    participants: tuple[Span, ...]
    shutdown_at: float | None
    shutdown_reason: str
    deadline: float | None
    steps: tuple[Mark, ...]
    hooks: tuple[Mark, ...]
    outcome: str
    end: float

    @classmethod
    def from_result(cls, result: SimulationResult, *, budget: float | None = None) -> Timeline:
        """Build the timeline; ``budget`` (the job's ``shutdown_process_timeout``) adds the
        deadline line."""
        return _build(result.events, result.job.id, result.job.room.name, budget)


def _build(
    events: Sequence[LifecycleEvent], job_id: str, room: str, budget: float | None
) -> Timeline:
    entry_start: float | None = None
    entry: Span | None = None
    open_participants: dict[str, tuple[str, float]] = {}
    participants: list[Span] = []
    shutdown_at: float | None = None
    reason = ""
    steps: list[Mark] = []
    hooks: list[Mark] = []
    outcome = ""
    end = 0.0
    for ev in events:
        end = max(end, ev.time)
        args = [str(a) for a in ev.args]
        if ev.kind == "entrypoint_started":
            entry_start = ev.time
        elif ev.kind in ("entrypoint_returned", "entrypoint_failed") and entry_start is not None:
            how = "returned" if ev.kind == "entrypoint_returned" else f"failed: {args[0]}"
            entry = Span("entrypoint", entry_start, ev.time, how)
        elif ev.kind == "participant_entrypoint_started":
            open_participants[args[0]] = (_short(args[1]), ev.time)
        elif ev.kind in ("participant_entrypoint_ended", "participant_entrypoint_failed"):
            if args[0] in open_participants:
                fn, start = open_participants.pop(args[0])
                how = "ended" if ev.kind.endswith("ended") else f"failed: {args[1]}"
                participants.append(Span(f"{args[0]}: {fn}", start, ev.time, how))
        elif ev.kind == "shutdown":
            shutdown_at, reason = ev.time, args[0] if args else ""
        elif ev.kind == "phase_done":
            steps.append(Mark(args[0], ev.time, "done"))
        elif ev.kind == "reported":  # the outcome, sent before the room is left
            steps.append(Mark(f"reported: {args[0]}", ev.time, "sent"))
        elif ev.kind in ("callback_done", "callback_failed", "callback_cut"):
            how = ev.kind.removeprefix("callback_")
            if ev.kind == "callback_failed" and len(args) > 1:
                how = f"failed: {args[1]}"
            hooks.append(Mark(_short(args[0]), ev.time, how))
        elif ev.kind == "outcome":
            outcome = " - ".join(a for a in args if a)
    if (
        entry is not None
        and entry.how == "returned"
        and shutdown_at is not None
        and entry.end is not None
        and entry.end >= shutdown_at
    ):
        entry = attrs.evolve(entry, how="cancelled at shutdown")
    if entry is None and entry_start is not None:
        # cancelled with the work (a cut entrypoint records no end of its own)
        cut = next((m.time for m in steps if m.label == "cancel_work"), None)
        entry = Span("entrypoint", entry_start, cut, "cancelled" if cut is not None else "running")
    for identity, (fn, start) in open_participants.items():
        cut = next((m.time for m in steps if m.label == "cancel_work"), None)
        participants.append(Span(f"{identity}: {fn}", start, cut, "cancelled"))
    deadline = shutdown_at + budget if shutdown_at is not None and budget is not None else None
    return Timeline(
        job_id=job_id,
        room=room,
        entrypoint=entry,
        participants=tuple(participants),
        shutdown_at=shutdown_at,
        shutdown_reason=reason,
        deadline=deadline,
        steps=tuple(steps),
        hooks=tuple(hooks),
        outcome=outcome,
        end=end if deadline is None else max(end, deadline),
    )


def _short(qualname: str) -> str:
    """``demo_entrypoint.<locals>.serve_participant`` -> ``serve_participant``."""
    return qualname.rsplit(".", 1)[-1]


def _cell(text: str, width: int) -> str:
    """``text`` padded to ``width``, cut with an ellipsis so that one space stays."""
    if len(text) > width - 1:
        text = text[: width - 2] + "…"
    return f"{text:{width}}"


def _fmt(t: float | None) -> str:
    return "…" if t is None else f"{t:.2f}"


def render_timeline(
    result: SimulationResult, *, budget: float | None = None, width: int = 40
) -> str:
    """The job's tree and teardown as text, with a bar per task on one time axis."""
    tl = Timeline.from_result(result, budget=budget)
    span = tl.end or 1.0
    label_w = 30

    def bar(start: float, end: float | None) -> str:
        a = round(start / span * width)
        b = round((tl.end if end is None else end) / span * width)
        b = max(b, a + 1)
        return " " * a + "█" * (b - a) + " " * max(0, width - b)

    lines = [f"job {tl.job_id} in {tl.room!r}  (outcome: {tl.outcome or 'unknown'})"]
    lines.append(f"{'':{label_w + 4}} 0s{'':{max(0, width - 6)}}{span:.2f}s")
    if tl.entrypoint is not None:
        e = tl.entrypoint
        lines.append(
            f"├── {'entrypoint':{label_w}}[{bar(e.start, e.end)}] "
            f"{_fmt(e.start)}-{_fmt(e.end)} {e.how}"
        )
    lines.append("├── participants" + ("" if tl.participants else " (none)"))
    for i, p in enumerate(tl.participants):
        branch = "└──" if i == len(tl.participants) - 1 else "├──"
        lines.append(
            f"│   {branch} {_cell(p.label, label_w - 4)}[{bar(p.start, p.end)}] "
            f"{_fmt(p.start)}-{_fmt(p.end)} {p.how}"
        )
    if tl.shutdown_at is not None:
        deadline = f"  (deadline {tl.deadline:.2f})" if tl.deadline is not None else ""
        lines.append(
            f"├── shutdown: {tl.shutdown_reason[: label_w + width - 12]} "
            f"at {tl.shutdown_at:.2f}{deadline}"
        )
    lines.append("└── teardown (every step reads the one deadline)")
    for i, m in enumerate(tl.steps):
        last = i == len(tl.steps) - 1
        branch = "└──" if last else "├──"
        late = "  LATE" if tl.deadline is not None and m.time > tl.deadline + 1e-9 else ""
        lines.append(f"    {branch} {_cell(m.label, label_w - 4)}{m.how} at {m.time:.2f}{late}")
        if m.label == "callbacks":
            pad = "    " if last else "│   "
            for j, h in enumerate(tl.hooks):
                hb = "└──" if j == len(tl.hooks) - 1 else "├──"
                lines.append(f"    {pad}{hb} {_cell(h.label, label_w - 8)}{h.how} at {h.time:.2f}")
    return "\n".join(lines)


def timeline_svg(result: SimulationResult, *, budget: float | None = None) -> str:
    """The same timeline as an SVG document (a lane per task, lines for shutdown and deadline)."""
    tl = Timeline.from_result(result, budget=budget)
    span = tl.end or 1.0
    left, right, lane, top = 190, 30, 26, 40
    plot = 600
    lanes: list[tuple[str, Span]] = []
    if tl.entrypoint is not None:
        lanes.append(("entrypoint", tl.entrypoint))
    lanes += [(f"participant {p.label}", p) for p in tl.participants]
    marks = [*tl.steps, *tl.hooks]
    height = top + lane * (len(lanes) + len(marks) + 1) + 30

    def x(t: float) -> float:
        return left + t / span * plot

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + plot + right}" '
        f'height="{height}" font-family="monospace" font-size="12">',
        f"<title>job {escape(tl.job_id)}: {escape(tl.outcome)}</title>",
        f'<text x="10" y="20">job {escape(tl.job_id)} in {escape(tl.room)} - '
        f"outcome: {escape(tl.outcome or 'unknown')}</text>",
    ]
    y = top
    for label, s in lanes:
        end = tl.end if s.end is None else s.end
        w = max(x(end) - x(s.start), 2.0)
        colour = "#d9534f" if s.how.startswith("failed") else "#5b8def"
        out.append(f'<text x="10" y="{y + 14}">{escape(label[:26])}</text>')
        out.append(
            f'<rect class="task" x="{x(s.start):.1f}" y="{y + 3}" width="{w:.1f}" '
            f'height="{lane - 8}" fill="{colour}"><title>{escape(label)}: {escape(s.how)}'
            "</title></rect>"
        )
        y += lane
    for m in marks:
        colour = {"done": "#2e7d32", "cut": "#d9534f"}.get(m.how, "#ef6c00")
        out.append(f'<text x="10" y="{y + 14}">{escape(m.label[:26])}</text>')
        out.append(
            f'<circle class="step" cx="{x(m.time):.1f}" cy="{y + lane / 2:.1f}" r="5" '
            f'fill="{colour}"><title>{escape(m.label)}: {escape(m.how)} at {m.time:.2f}'
            "</title></circle>"
        )
        y += lane
    if tl.shutdown_at is not None:
        out.append(
            f'<line class="shutdown" x1="{x(tl.shutdown_at):.1f}" y1="{top - 5}" '
            f'x2="{x(tl.shutdown_at):.1f}" y2="{y}" stroke="#000" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{x(tl.shutdown_at) + 3:.1f}" y="{y + 14}">shutdown: '
            f"{escape(tl.shutdown_reason)}</text>"
        )
    if tl.deadline is not None:
        out.append(
            f'<line class="deadline" x1="{x(tl.deadline):.1f}" y1="{top - 5}" '
            f'x2="{x(tl.deadline):.1f}" y2="{y}" stroke="#d9534f"/>'
        )
        out.append(f'<text x="{x(tl.deadline) - 60:.1f}" y="{top - 8}">deadline</text>')
    out.append("</svg>")
    return "\n".join(out)
