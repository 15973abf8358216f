"""One retry clock for every broker operation (connect, poll, produce, commit).

A failure waits ``delay`` seconds before the next attempt, doubling from
``BACKOFF_MIN_S`` to ``BACKOFF_MAX_S``; a success resets it. 30 s at most so
a broker back after a long outage is noticed within half a minute; 0.5 s at
least so a broker that refuses connections is not hammered.
"""

from __future__ import annotations

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


class Backoff:
    """Exponential backoff: :meth:`failed` returns the delay to wait, :meth:`reset` on success."""

    def __init__(self, low: float = BACKOFF_MIN_S, high: float = BACKOFF_MAX_S) -> None:
        self.low = low
        self.high = high
        self.delay = low

    def failed(self) -> float:
        """The delay before the next attempt; the one after it doubles (up to ``high``)."""
        d = self.delay
        self.delay = min(self.high, self.delay * 2)
        return d

    def reset(self) -> None:
        self.delay = self.low
