"""shared.backoff: the one retry rule."""

from __future__ import annotations

import itertools
import random

import pytest

from shared import backoff


def test_delay_doubles_from_base_up_to_the_cap() -> None:
    assert [backoff.delay(n, 0.5, 10.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.delay(10_000, 0.5, 10.0) == 10.0  # no overflow on long outages
    with pytest.raises(ValueError, match="0-based"):
        backoff.delay(-1, 0.5, 10.0)


def test_delays_is_the_same_rule_as_a_sequence() -> None:
    assert list(itertools.islice(backoff.delays(1.0, 30.0), 7)) == [1, 2, 4, 8, 16, 30, 30]


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    rng = random.Random(0)
    values = [backoff.jittered(3, 0.5, 30.0, rng) for _ in range(200)]
    assert all(2.0 <= v <= 4.0 for v in values)
    assert max(values) - min(values) > 1.0  # really random, not a constant
