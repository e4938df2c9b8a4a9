"""The train/validation/test split: grouped, stratified per tag, deterministic from the hashes.

Photos that look alike stay on one side, else a model is tested on near copies of its
training images and its scores flatter it. :func:`group_photos` joins (union-find) photos

- of one capture session: sorted by time, photos of any tag taken less than
  ``session_gap`` seconds after the previous one (tiles cut from one photo share its time);
- that are near duplicates: perceptual hashes at most ``max_distance`` bits apart.

:func:`assign_splits` then splits *groups*, stratified per tag: a group belongs to its
majority tag; within a tag, groups are ranked by ``sha256(f"{seed}:{smallest image sha256}")``
and cut by the fractions counted in images. The same images, fractions and seed always give
the same split, whatever the order the API listed them in, and adding images to a range
moves few of the others. Small tags still get what training and evaluation need where their
groups allow it: a tag with two or more groups has a test group, with three or more a
validation group, and every non-empty tag keeps a training image. Without groups (every image
its own group) this is exactly the per-image split.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
HASH_BITS = 64


@dataclass(frozen=True)
class Photo:
    """What the grouping needs of one image of the manifest."""

    sha256: str
    tag: str
    taken_at: dt.datetime | None = None
    phash: int | None = None  # 64-bit perceptual hash, unsigned


@dataclass
class SplitResult:
    splits: dict[str, Split]
    n_groups: int
    notes: list[str] = field(default_factory=list)  # what the split could not honour


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


# -- grouping ---------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _utc(value: dt.datetime) -> dt.datetime:
    # A timestamp without offset is taken as UTC, so that it can be compared with the others.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _near_pairs(values: Sequence[int], max_distance: int) -> Iterable[tuple[int, int]]:
    """Index pairs of distinct ``values`` at most ``max_distance`` bits apart (a pair may
    come more than once).

    Pigeonhole: cut the 64 bits into ``max_distance + 1`` chunks; two hashes that close agree
    on at least one whole chunk, so only hashes sharing a chunk value are compared."""
    if max_distance < 0 or len(values) < 2:
        return
    n_chunks = max_distance + 1
    if n_chunks > 16:  # chunks of under 4 bits select little: compare everything
        for a, b in itertools.combinations(range(len(values)), 2):
            if hamming(values[a], values[b]) <= max_distance:
                yield a, b
        return
    bounds = [HASH_BITS * k // n_chunks for k in range(n_chunks + 1)]
    for lo, hi in itertools.pairwise(bounds):
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for index, value in enumerate(values):
            buckets[(value >> lo) & mask].append(index)
        for members in buckets.values():
            for a, b in itertools.combinations(members, 2):
                if hamming(values[a], values[b]) <= max_distance:
                    yield a, b


def group_photos(
    photos: Iterable[Photo], *, session_gap: float, max_distance: int
) -> list[list[str]]:
    """Groups of image sha256 that must stay on one side, each sorted, sorted by first member.

    Photos sorted by time join the previous one when taken less than ``session_gap`` seconds
    after it (0 disables sessions); photos without a time join no session. Photos whose
    hashes are at most ``max_distance`` bits apart are joined too (-1 disables it)."""
    unique = {p.sha256: p for p in photos}
    shas = sorted(unique)
    uf = _UnionFind(len(shas))
    if session_gap > 0:
        timed: list[tuple[dt.datetime, int]] = []
        for i, sha in enumerate(shas):
            taken_at = unique[sha].taken_at
            if taken_at is not None:
                timed.append((_utc(taken_at), i))
        timed.sort()
        for (t0, i0), (t1, i1) in itertools.pairwise(timed):
            if (t1 - t0).total_seconds() < session_gap:
                uf.union(i0, i1)
    if max_distance >= 0:
        # Equal hashes are joined at once; only distinct values are compared.
        by_value: dict[int, list[int]] = defaultdict(list)
        for i, sha in enumerate(shas):
            phash = unique[sha].phash
            if phash is not None:
                by_value[phash].append(i)
        for members in by_value.values():
            for other in members[1:]:
                uf.union(members[0], other)
        values = sorted(by_value)
        for a, b in _near_pairs(values, max_distance):
            uf.union(by_value[values[a]][0], by_value[values[b]][0])
    groups: dict[int, list[str]] = defaultdict(list)
    for i, sha in enumerate(shas):
        groups[uf.find(i)].append(sha)
    return sorted(groups.values(), key=lambda g: g[0])


# -- the split --------------------------------------------------------------------------------


def _rank_key(seed: int, sha256: str) -> str:
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def _fits(current: int, size: int, target: int) -> bool:
    """Whether a group of ``size`` images goes to a side holding ``current`` of ``target``:
    while the side is short, if adding it overshoots less than it leaves missing."""
    return current < target and current + size - target <= target - current


def _cut(ranked: Sequence[list[str]], n_images: int, test: float, val: float) -> list[Split]:
    """The side of each ranked group of one tag."""
    _, n_val, n_test = split_sizes(n_images, test, val)
    sides: list[Split] = []
    held = {"test": 0, "val": 0}
    for group in ranked:
        size = len(group)
        side: Split = "train"
        if _fits(held["test"], size, n_test):
            side = "test"
        elif _fits(held["val"], size, n_val):
            side = "val"
        if side != "train":
            held[side] += size
        sides.append(side)
    k = len(ranked)

    def smallest(among: Split, exclude_last: bool = False) -> int | None:
        """The smallest group on side ``among`` (the later ranked on a tie)."""
        found = [i for i, s in enumerate(sides) if s == among]
        if exclude_last and len(found) <= 1:
            return None
        return min(found, key=lambda i: (len(ranked[i]), -i), default=None)

    # At least one group per side when the tag has enough groups: taken from training while
    # it keeps a group, else from the other held-out side (a test side matters most).
    if k >= 2 and "test" not in sides:
        i = smallest("train", exclude_last=True)
        i = smallest("val") if i is None else i
        if i is not None:
            sides[i] = "test"
    if k >= 3 and "val" not in sides:
        i = smallest("train", exclude_last=True)
        i = smallest("test", exclude_last=True) if i is None else i
        if i is not None:
            sides[i] = "val"
    if "train" not in sides:  # big groups swallowed everything: give one back to training
        for side in ("val", "test"):
            if (i := smallest(side, exclude_last=True)) is not None:
                sides[i] = "train"
                break
        else:
            sides[-1] = "train"  # one group: it trains
    return sides


def assign_splits(
    images: Iterable[tuple[str, str]],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    groups: Iterable[Iterable[str]] | None = None,
) -> dict[str, Split]:
    """``{sha256: split}`` for ``(sha256, tag)`` pairs (each sha256 once); ``groups`` (from
    :func:`group_photos`) stay on one side, images in no group are a group of their own."""
    return split_groups(
        images,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        groups=groups,
    ).splits


def split_groups(
    images: Iterable[tuple[str, str]],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    groups: Iterable[Iterable[str]] | None = None,
) -> SplitResult:
    """:func:`assign_splits` with the number of groups and notes on what it could not honour
    (too few groups for a validation or test side, a tag left without training image);
    each note is also logged."""
    tags = dict(images)
    member_of: dict[str, int] = {}
    all_groups: list[list[str]] = []
    for group in groups or ():
        members = sorted({sha for sha in group if sha in tags and sha not in member_of})
        if members:
            member_of.update(dict.fromkeys(members, len(all_groups)))
            all_groups.append(members)
    for sha in sorted(tags):
        if sha not in member_of:
            member_of[sha] = len(all_groups)
            all_groups.append([sha])

    by_tag: dict[str, list[list[str]]] = defaultdict(list)
    for members in all_groups:
        votes = Counter(tags[sha] for sha in members)
        majority = min(votes, key=lambda tag: (-votes[tag], tag))
        by_tag[majority].append(members)

    result = SplitResult(splits={}, n_groups=len(all_groups))
    for tag in sorted(by_tag):
        ranked = sorted(by_tag[tag], key=lambda g: _rank_key(seed, g[0]))
        n_images = sum(len(g) for g in ranked)
        sides = _cut(ranked, n_images, test_fraction, val_fraction)
        for members, side in zip(ranked, sides, strict=True):
            result.splits.update(dict.fromkeys(members, side))
        _, n_val, n_test = split_sizes(n_images, test_fraction, val_fraction)
        missing = [
            name
            for name, wanted, side in (("test", n_test, "test"), ("validation", n_val, "val"))
            if wanted and side not in sides
        ]
        if missing:
            result.notes.append(
                f"tag {tag!r}: {n_images} images in {len(ranked)} group(s) of photos that "
                f"look alike: no {' and no '.join(missing)} side"
            )

    # Every tag keeps a training image: a tag whose images all sit in groups of another tag
    # gets its smallest such group back in training.
    trained = {tags[sha] for sha, side in result.splits.items() if side == "train"}
    for tag in sorted(set(tags.values()) - trained):
        candidates = [g for g in all_groups if any(tags[sha] == tag for sha in g)]
        moved = min(candidates, key=lambda g: (len(g), _rank_key(seed, g[0])))
        result.splits.update(dict.fromkeys(moved, "train"))
        result.notes.append(
            f"tag {tag!r}: its only images were held out with photos of other tags; "
            f"a group of {len(moved)} moved back to training"
        )
    for note in result.notes:
        logger.info("split: %s", note)
    return result


def split_counts(splits: Mapping[str, Split], tags: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{"train": {"vine": 10, ...}, "val": {...}, "test": {...}}`` for the dataset row."""
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for sha, split in splits.items():
        tag = tags[sha]
        counts[split][tag] = counts[split].get(tag, 0) + 1
    return counts
