"""Exponential backoff, the one rule every retry and wait loop in the project follows.

Attempt ``n`` (0-based) waits ``base * 2**n`` seconds, never more than ``cap``. Retries
that many clients may make at once (downloads from one API) add jitter, so they do not
come back in step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``base * 2**attempt``, capped."""
    if attempt < 0:
        raise ValueError("attempt is 0-based")
    # 2**attempt overflows a float long after the cap is reached: stop doubling there.
    return min(cap, base * 2 ** min(attempt, 64))


def jittered(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """:func:`delay` with half of it random: between half and all of it."""
    ceiling = delay(attempt, base, cap)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def delays(base: float, cap: float) -> Iterator[float]:
    """The endless sequence of :func:`delay` for attempts 0, 1, 2, … (for wait loops)."""
    attempt = 0
    while True:
        yield delay(attempt, base, cap)
        attempt += 1
