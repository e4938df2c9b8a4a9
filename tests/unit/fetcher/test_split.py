"""The split: stratified per tag, deterministic from the image hash, fractions and seed."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given
from hypothesis import strategies as st

from services.fetcher.split import assign_splits, split_counts, split_sizes


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def dataset(sizes: dict[str, int]) -> list[tuple[str, str]]:
    pairs, i = [], 0
    for tag, n in sizes.items():
        for _ in range(n):
            pairs.append((sha(i), tag))
            i += 1
    return pairs


fractions = st.floats(0.01, 0.6)


@given(n=st.integers(0, 300), test=fractions, val=fractions)
def test_sizes_keep_a_train_image_and_a_test_image(n: int, test: float, val: float) -> None:
    train, n_val, n_test = split_sizes(n, test, val)
    assert train + n_val + n_test == n
    assert min(train, n_val, n_test) >= 0
    if n >= 1:
        assert train >= 1
    if n >= 2:
        assert n_test >= 1
    if n >= 3:
        assert n_val >= 1


def test_sizes_follow_the_fractions_on_large_tags() -> None:
    assert split_sizes(100, 0.2, 0.15) == (65, 15, 20)
    assert split_sizes(1, 0.2, 0.15) == (1, 0, 0)
    assert split_sizes(2, 0.2, 0.15) == (1, 0, 1)
    assert split_sizes(3, 0.2, 0.15) == (1, 1, 1)


@given(
    sizes=st.dictionaries(st.sampled_from(["vine", "ground", "grass"]), st.integers(0, 40)),
    seed=st.integers(0, 2**31),
    order=st.randoms(use_true_random=False),
)
def test_split_is_stratified_and_independent_of_order(
    sizes: dict[str, int], seed: int, order: random.Random
) -> None:
    pairs = dataset(sizes)
    splits = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=seed)
    shuffled = list(pairs)
    order.shuffle(shuffled)
    assert assign_splits(shuffled, test_fraction=0.2, val_fraction=0.15, seed=seed) == splits
    counts = split_counts(splits, dict(pairs))
    for tag, n in sizes.items():
        got = tuple(counts[s].get(tag, 0) for s in ("train", "val", "test"))
        assert got == split_sizes(n, 0.2, 0.15)


def test_seed_changes_the_split_and_fractions_matter() -> None:
    pairs = dataset({"vine": 50, "grass": 30})
    a = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=1)
    b = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=2)
    c = assign_splits(pairs, test_fraction=0.3, val_fraction=0.15, seed=1)
    assert a != b
    assert sum(s == "test" for s in c.values()) > sum(s == "test" for s in a.values())


def test_adding_images_moves_few_of_the_others() -> None:
    small = dataset({"vine": 60})
    large = small + [(sha(1000 + i), "vine") for i in range(6)]
    a = assign_splits(small, test_fraction=0.2, val_fraction=0.15, seed=7)
    b = assign_splits(large, test_fraction=0.2, val_fraction=0.15, seed=7)
    moved = sum(a[s] != b[s] for s in a)
    assert moved <= 8
