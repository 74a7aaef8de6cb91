"""``Changes``: wait until some state satisfies a predicate."""

from __future__ import annotations

from collections.abc import Callable

import trio


class Changes:
    """Whoever changes the state calls ``notify()``; waiters re-check their predicate.

    Re-armable: each ``notify`` wakes the current waiters and arms a fresh event.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true (at once if it already is)."""
        while not predicate():
            await self._event.wait()
