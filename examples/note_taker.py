"""A note-taker agent, with a bug that a property test finds.

Each participant gets a task of the job (a participant entrypoint) that
keeps what they say and saves their notes when they are done: when they
say "bye", when they leave, or when the job ends.

``buggy_take_notes`` saves with a plain ``await`` in its ``finally``.  That
works when the participant says "bye" (the task returns normally), and a
hand-written test of that path passes.  But when the participant leaves
without saying "bye", or the job ends, the task is being *cancelled*: the
``await`` in ``finally`` raises ``trio.Cancelled`` at once, and the notes are
lost.  ``take_notes`` shields the save, with a deadline of its own, which is
how cleanup that must await is written in trio.

``examples/test_note_taker.py`` shows the property test that finds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from trio_agents import AgentServer, JobContext, rtc, run_app

server = AgentServer()

#: How long saving the notes takes (a database write, say).
SAVE_TIME = 0.2
#: The most a save may take during cancellation; well within the job's
#: shutdown_process_timeout.
SAVE_LIMIT = 2.0


class NoteStore:
    """Where notes go (a stand-in for a database): what was heard and what was saved."""

    def __init__(self) -> None:
        self.heard: dict[str, list[str]] = {}
        self.saved: dict[str, list[str]] = {}

    async def save(self, identity: str, notes: list[str]) -> None:
        await trio.sleep(SAVE_TIME)
        self.saved[identity] = list(notes)


async def _listen(ctx: JobContext, participant: rtc.RemoteParticipant, notes: list[str]) -> None:
    """Keep what ``participant`` says until they say "bye"."""
    async with ctx.room.events(rtc.TextReceived) as texts:
        async for ev in texts:
            if ev.participant is None or ev.participant.identity != participant.identity:
                continue
            if ev.text.strip().lower() == "bye":
                return
            notes.append(ev.text)


def make_entrypoint(
    store: NoteStore, *, shielded: bool = True
) -> Callable[[JobContext], Awaitable[None]]:
    """The job entrypoint, saving into ``store``; ``shielded=False`` is the buggy one."""

    # --8<-- [start:take_notes]
    async def take_notes(ctx: JobContext, participant: rtc.RemoteParticipant) -> None:
        notes = store.heard.setdefault(participant.identity, [])
        try:
            await _listen(ctx, participant, notes)
        finally:
            if notes:
                if shielded:
                    # cancelled or not, finish the save (but never hang teardown)
                    with trio.move_on_after(SAVE_LIMIT, shield=True):
                        await store.save(participant.identity, notes)
                else:
                    await store.save(participant.identity, notes)  # BUG: not shielded
    # --8<-- [end:take_notes]

    async def entrypoint(ctx: JobContext) -> None:
        ctx.add_participant_entrypoint(take_notes)
        await ctx.connect()

    return entrypoint


store = NoteStore()
entrypoint = server.rtc_session()(make_entrypoint(store))


if __name__ == "__main__":
    run_app(server)
