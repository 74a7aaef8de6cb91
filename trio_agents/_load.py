"""Default worker load: CPU use averaged over about 2.5 s (psutil)."""

from __future__ import annotations

import collections

import psutil


class CPULoad:
    """Callable returning the machine's CPU use in [0, 1], smoothed over 5 samples.

    Call it every 0.5 s; ``psutil.cpu_percent(None)`` measures since the
    previous call, so it never blocks.
    """

    def __init__(self, window: int = 5) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=window)
        psutil.cpu_percent(None)

    def __call__(self) -> float:
        self._samples.append(psutil.cpu_percent(None) / 100.0)
        return sum(self._samples) / len(self._samples)
