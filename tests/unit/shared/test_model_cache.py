"""shared.model_cache: one owner per network, same key only, oldest idle ones evicted."""

from __future__ import annotations

import pytest

from shared.model_cache import ModelCache


def test_checkout_gives_a_released_value_once_and_only_for_its_key() -> None:
    cache: ModelCache[str, object] = ModelCache(2)
    net = object()
    assert cache.checkout("a") is None
    cache.release("a", net)
    assert cache.checkout("b") is None
    assert cache.checkout("a") is net
    assert cache.checkout("a") is None  # owned by the caller now
    assert (cache.hits, cache.misses) == (1, 3)


def test_two_values_of_one_key_serve_two_requests() -> None:
    cache: ModelCache[str, int] = ModelCache(3)
    cache.release("a", 1)
    cache.release("a", 2)
    assert {cache.checkout("a"), cache.checkout("a")} == {1, 2}


def test_capacity_evicts_the_least_recently_released() -> None:
    cache: ModelCache[str, int] = ModelCache(2)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.release(key, value)
    assert len(cache) == 2
    assert cache.checkout("a") is None
    assert (cache.checkout("b"), cache.checkout("c")) == (2, 3)


def test_capacity_zero_keeps_nothing_and_negative_is_refused() -> None:
    cache: ModelCache[str, int] = ModelCache(0)
    cache.release("a", 1)
    assert cache.checkout("a") is None
    with pytest.raises(ValueError):
        ModelCache(-1)
