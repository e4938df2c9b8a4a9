"""The train/validation/test split: stratified per tag, deterministic from the image hash.

Within a tag, images are ranked by ``sha256(f"{seed}:{image_sha256}")`` and cut by the
fractions: the same images, fractions and seed always give the same split, whatever the
order the API listed them in, and adding images to a range moves few of the others.
Small tags still get what training and evaluation need: a tag with two or more images
has at least one test image, a tag with three or more at least one validation image, and
every non-empty tag keeps at least one training image.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def split_sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts for a tag of ``n`` images."""
    if n <= 1:
        return n, 0, 0
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
    while n_test + n_val > n - 1:  # keep a training image
        if n_val > (1 if n >= 3 else 0) or n_test == 1:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_test - n_val, n_val, n_test


def _rank_key(seed: int, sha256: str) -> str:
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def assign_splits(
    images: Iterable[tuple[str, str]], *, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, Split]:
    """``{sha256: split}`` for ``(sha256, tag)`` pairs (each sha256 once)."""
    by_tag: dict[str, list[str]] = defaultdict(list)
    for sha256, tag in images:
        by_tag[tag].append(sha256)
    result: dict[str, Split] = {}
    for members in by_tag.values():
        ranked = sorted(set(members), key=lambda sha: _rank_key(seed, sha))
        _, n_val, n_test = split_sizes(len(ranked), test_fraction, val_fraction)
        for i, sha in enumerate(ranked):
            result[sha] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return result


def split_counts(splits: Mapping[str, Split], tags: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{"train": {"vine": 10, ...}, "val": {...}, "test": {...}}`` for the dataset row."""
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for sha, split in splits.items():
        tag = tags[sha]
        counts[split][tag] = counts[split].get(tag, 0) + 1
    return counts
