"""The grouped split: sessions and near duplicates stay on one side, deterministically."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from services.fetcher.split import (
    Photo,
    _near_pairs,
    assign_splits,
    group_photos,
    hamming,
    split_counts,
    split_groups,
    split_sizes,
)
from services.fetcher.validation import perceptual_hash, validate_image
from services.simulator import field

SEED = 2020
T0 = dt.datetime(2021, 6, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
MAX_PIXELS = 10**8


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def side_of_each_group(splits: dict[str, str], groups: list[list[str]]) -> list[set[str]]:
    return [{splits[s] for s in g} for g in groups]


# -- perceptual hash --------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 75) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def field_photos(start: dt.date, end: dt.date) -> list[tuple[str, str, bytes]]:
    return [
        (image.image_id, tag, field.render(image.image_id, tag, SEED))
        for tag in field.TAGS
        for image in field.catalogue(start, end, tag, SEED)
    ]


def near_copies(data: bytes) -> dict[str, bytes]:
    """Copies the hash must find within the default distance (6 bits)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return {
        "re-encoded": encode(img, quality=60),
        "brightened": encode(ImageEnhance.Brightness(img).enhance(1.1), quality=90),
        "twice the size": encode(img.resize((img.width * 2, img.height * 2))),
    }


def harder_copies(data: bytes) -> dict[str, bytes]:
    """Copies of these noisy field photos a few bits further (about 2 % of them beyond 6)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return {
        "darker, lower quality": encode(ImageEnhance.Brightness(img).enhance(0.9), quality=45),
        "png": encode(img, "PNG"),
        "half the size": encode(img.resize((img.width // 2, img.height // 2))),
    }


def test_near_copies_have_close_hashes_and_other_photos_do_not() -> None:
    photos = field_photos(dt.date(2021, 5, 1), dt.date(2021, 6, 30))
    hashes = [validate_image(data, max_pixels=MAX_PIXELS).phash for _, _, data in photos]
    assert all(h is not None and 0 <= h < 2**64 for h in hashes)
    for _, _, data in photos[::15]:
        original = perceptual_hash(data, max_pixels=MAX_PIXELS)
        assert original is not None
        for name, copy in near_copies(data).items():
            copied = perceptual_hash(copy, max_pixels=MAX_PIXELS)
            assert copied is not None
            assert hamming(original, copied) <= 6, name
        for name, copy in harder_copies(data).items():
            copied = perceptual_hash(copy, max_pixels=MAX_PIXELS)
            assert copied is not None
            assert hamming(original, copied) <= 12, name
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]  # type: ignore[arg-type]
    close = sum(d <= 6 for d in distances)
    assert close <= 0.001 * len(distances)  # different photos: about 32 bits apart
    assert sorted(distances)[len(distances) // 2] >= 24


def test_hash_of_an_image_pillow_cannot_convert_is_none_not_a_rejection() -> None:
    assert perceptual_hash(b"not an image", max_pixels=MAX_PIXELS) is None
    info = validate_image(encode(Image.new("RGB", (40, 30), "green")), max_pixels=MAX_PIXELS)
    assert info.phash == 0  # a flat image: no neighbour brighter than the next


@given(
    values=st.lists(st.integers(0, 2**64 - 1), max_size=40, unique=True),
    flips=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 63)), max_size=60),
    distance=st.integers(-1, 20),
)
def test_near_pairs_find_what_comparing_everything_finds(
    values: list[int], flips: list[tuple[int, int]], distance: int
) -> None:
    # Close neighbours: copies of some values with a few bits flipped.
    values = list(values)
    for index, bit in flips:
        if index < len(values):
            values.append(values[index] ^ (1 << bit))
    values = sorted(set(values))
    expected = {
        (a, b)
        for a, b in itertools.combinations(range(len(values)), 2)
        if hamming(values[a], values[b]) <= distance
    }
    assert set(_near_pairs(values, distance)) == expected


# -- grouping ---------------------------------------------------------------------------------


def test_photos_minutes_apart_are_one_session_whatever_their_tag() -> None:
    photos = [
        Photo(sha(0), "vine", T0),
        Photo(sha(1), "grass", T0 + dt.timedelta(seconds=90)),
        Photo(sha(2), "vine", T0 + dt.timedelta(seconds=200)),  # 110 s after the previous
        Photo(sha(3), "vine", T0 + dt.timedelta(seconds=400)),  # 200 s: a new session
        Photo(sha(4), "ground", T0 + dt.timedelta(hours=3)),
        Photo(sha(5), "ground", None),  # no time: no session
    ]
    groups = group_photos(photos, session_gap=120, max_distance=-1)
    assert sorted(map(sorted, groups)) == sorted(
        [sorted([sha(0), sha(1), sha(2)]), [sha(3)], [sha(4)], [sha(5)]]
    )
    assert len(group_photos(photos, session_gap=0, max_distance=-1)) == 6


def test_tiles_of_one_photo_and_times_in_other_offsets_are_one_session() -> None:
    utc = T0.astimezone(dt.UTC)
    photos = [
        Photo(sha(0), "vine", T0),
        Photo(sha(1), "vine", T0),  # a tile: the same time
        Photo(sha(2), "vine", utc + dt.timedelta(seconds=30)),  # the same moment, in UTC
        Photo(sha(3), "vine", utc.replace(tzinfo=None) + dt.timedelta(seconds=60)),  # naive
    ]
    assert len(group_photos(photos, session_gap=120, max_distance=-1)) == 1


def test_near_duplicates_are_joined_and_chains_too() -> None:
    base = 0x0123_4567_89AB_CDEF
    photos = [
        Photo(sha(0), "vine", phash=base),
        Photo(sha(1), "vine", phash=base ^ 0b111),  # 3 bits from 0
        Photo(sha(2), "vine", phash=base ^ 0b111111 << 10 ^ 0b111),  # 6 bits from 1, 9 from 0
        Photo(sha(3), "vine", phash=base ^ (2**64 - 1)),  # everything flipped
        Photo(sha(4), "vine", phash=base),  # an identical hash
        Photo(sha(5), "vine", phash=None),
    ]
    groups = group_photos(photos, session_gap=120, max_distance=6)
    assert sorted(map(sorted, groups)) == sorted(
        [sorted([sha(0), sha(1), sha(2), sha(4)]), [sha(3)], [sha(5)]]
    )
    assert len(group_photos(photos, session_gap=120, max_distance=2)) == 5  # 0+4, 1, 2, 3, 5
    assert len(group_photos(photos, session_gap=120, max_distance=-1)) == 6


# -- the split over groups --------------------------------------------------------------------


@st.composite
def field_days(draw: st.DrawFn) -> list[Photo]:
    """Sessions of 1-5 photos of mostly one tag, a few near duplicates across sessions."""
    photos: list[Photo] = []
    when = T0
    for session in range(draw(st.integers(0, 40))):
        tag = draw(st.sampled_from(["vine", "ground", "grass"]))
        when += dt.timedelta(seconds=draw(st.integers(121, 5000)))
        for _ in range(draw(st.integers(1, 5))):
            mixed = draw(st.sampled_from([tag, tag, tag, "grass"]))
            h = draw(st.integers(0, 2**64 - 1))
            if photos and draw(st.integers(0, 9)) == 0:  # a near copy of an earlier photo
                h = (photos[draw(st.integers(0, len(photos) - 1))].phash or 0) ^ 1 << 5
            photos.append(Photo(sha(len(photos)), mixed, when, h))
            when += dt.timedelta(seconds=draw(st.integers(0, 100)))
        del session
    return photos


def grouped_split(photos: list[Photo], seed: int = 42, **kw: float) -> dict[str, str]:
    groups = group_photos(photos, session_gap=120, max_distance=6)
    return dict(
        assign_splits(
            [(p.sha256, p.tag) for p in photos],
            test_fraction=kw.get("test", 0.2),
            val_fraction=kw.get("val", 0.15),
            seed=seed,
            groups=groups,
        )
    )


@settings(max_examples=150, deadline=None)
@given(photos=field_days(), seed=st.integers(0, 2**31), order=st.randoms(use_true_random=False))
def test_no_group_on_two_sides_and_the_same_split_in_any_order(
    photos: list[Photo], seed: int, order: random.Random
) -> None:
    splits = grouped_split(photos, seed)
    assert set(splits) == {p.sha256 for p in photos}
    groups = group_photos(photos, session_gap=120, max_distance=6)
    assert all(len(sides) == 1 for sides in side_of_each_group(splits, groups))
    shuffled = list(photos)
    order.shuffle(shuffled)
    assert grouped_split(shuffled, seed) == splits
    # Every tag keeps a training image.
    tags = {p.sha256: p.tag for p in photos}
    assert {tags[s] for s, side in splits.items() if side == "train"} == set(tags.values())


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.dictionaries(
        st.sampled_from(["vine", "ground", "grass"]),
        st.lists(st.integers(1, 4), min_size=1, max_size=30),
    ),
    seed=st.integers(0, 2**31),
)
def test_tags_with_enough_groups_get_each_side_and_fractions_roughly(
    sizes: dict[str, list[int]], seed: int
) -> None:
    pairs: list[tuple[str, str]] = []
    groups: list[list[str]] = []
    for tag, group_sizes in sizes.items():
        for size in group_sizes:
            members = [sha(len(pairs) + i) for i in range(size)]
            pairs += [(m, tag) for m in members]
            groups.append(members)
    result = split_groups(pairs, test_fraction=0.2, val_fraction=0.15, seed=seed, groups=groups)
    assert result.n_groups == len(groups)
    counts = split_counts(result.splits, dict(pairs))
    for tag, group_sizes in sizes.items():
        k, n = len(group_sizes), sum(group_sizes)
        train, val, test = (counts[s].get(tag, 0) for s in ("train", "val", "test"))
        assert train >= 1
        if k >= 2:
            assert test >= 1
        if k >= 3:
            assert val >= 1
        # Counted in images, within a few groups of the per-image sizes.
        _, want_val, want_test = split_sizes(n, 0.2, 0.15)
        assert abs(test - want_test) <= 2 * max(group_sizes)
        assert abs(val - want_val) <= 2 * max(group_sizes)


def test_large_tags_follow_the_fractions() -> None:
    rng = random.Random(3)
    pairs: list[tuple[str, str]] = []
    groups: list[list[str]] = []
    for tag in ("vine", "ground"):
        for _ in range(150):
            members = [sha(len(pairs) + i) for i in range(rng.randint(1, 4))]
            pairs += [(m, tag) for m in members]
            groups.append(members)
    splits = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=1, groups=groups)
    counts = split_counts(splits, dict(pairs))
    for tag in ("vine", "ground"):
        n = sum(1 for _, t in pairs if t == tag)
        assert abs(counts["test"][tag] / n - 0.2) < 0.03
        assert abs(counts["val"][tag] / n - 0.15) < 0.03


def test_without_groups_it_is_the_per_image_split() -> None:
    pairs = [(sha(i), ("vine", "grass")[i % 2]) for i in range(60)]
    singletons = [[s] for s, _ in pairs]
    plain = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=5)
    grouped = assign_splits(pairs, test_fraction=0.2, val_fraction=0.15, seed=5, groups=singletons)
    assert plain == grouped


def test_too_few_groups_is_a_log_line_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    # grass: 3 photos of one session; ground: 3 photos in 2 sessions; vine: plenty.
    photos = [Photo(sha(i), "grass", T0 + dt.timedelta(seconds=10 * i)) for i in range(3)]
    photos += [Photo(sha(10), "ground", T0 + dt.timedelta(hours=2))]
    photos += [Photo(sha(11), "ground", T0 + dt.timedelta(hours=2, seconds=30))]
    photos += [Photo(sha(12), "ground", T0 + dt.timedelta(hours=4))]
    photos += [Photo(sha(20 + i), "vine", T0 + dt.timedelta(hours=5 + i)) for i in range(10)]
    groups = group_photos(photos, session_gap=120, max_distance=-1)
    with caplog.at_level(logging.INFO, logger="services.fetcher.split"):
        result = split_groups(
            [(p.sha256, p.tag) for p in photos],
            test_fraction=0.2,
            val_fraction=0.15,
            seed=42,
            groups=groups,
        )
    assert result.n_groups == 1 + 2 + 10
    assert {result.splits[sha(i)] for i in range(3)} == {"train"}
    assert result.splits[sha(10)] == result.splits[sha(11)]
    assert {result.splits[sha(10)], result.splits[sha(12)]} == {"train", "test"}
    assert any("'grass': 3 images in 1 group" in n and "no test" in n for n in result.notes)
    assert any("'ground'" in n and "no validation" in n for n in result.notes)
    assert not any("'vine'" in n for n in result.notes)
    assert "'grass': 3 images in 1 group" in caplog.text


def test_a_tag_only_held_out_with_other_tags_gets_a_training_image() -> None:
    # The only grass photo sits in a vine session, which may be drawn for the test side.
    photos = [Photo(sha(i), "vine", T0 + dt.timedelta(seconds=5 * i)) for i in range(2)]
    photos += [Photo(sha(2), "grass", T0 + dt.timedelta(seconds=15))]
    photos += [Photo(sha(3), "vine", T0 + dt.timedelta(hours=1))]
    pairs = [(p.sha256, p.tag) for p in photos]
    groups = group_photos(photos, session_gap=120, max_distance=-1)
    moved = 0
    for seed in range(20):
        result = split_groups(pairs, test_fraction=0.5, val_fraction=0.1, seed=seed, groups=groups)
        assert result.splits[sha(0)] == result.splits[sha(1)] == result.splits[sha(2)] == "train"
        moved += any("moved back to training" in note for note in result.notes)
    assert moved  # some seeds drew the session for the test side first


def test_near_copies_of_field_photos_land_on_the_side_of_their_original() -> None:
    originals = field_photos(dt.date(2021, 6, 1), dt.date(2021, 6, 14))
    photos: list[Photo] = []
    copy_of: dict[str, str] = {}
    for n, (image_id, tag, data) in enumerate(originals):
        taken = T0 + dt.timedelta(hours=3 * n)  # far apart: only the hashes can join them
        digest = hashlib.sha256(data).hexdigest()
        photos.append(Photo(digest, tag, taken, perceptual_hash(data, max_pixels=MAX_PIXELS)))
        if n % 3 == 0:
            for k, copy in enumerate(near_copies(data).values()):
                copy_digest = hashlib.sha256(copy).hexdigest()
                when = taken + dt.timedelta(days=1, minutes=7 * k)  # another day, no session
                phash = perceptual_hash(copy, max_pixels=MAX_PIXELS)
                photos.append(Photo(copy_digest, tag, when, phash))
                copy_of[copy_digest] = digest
        del image_id
    assert len(copy_of) >= 20
    for seed in range(5):
        splits = grouped_split(photos, seed)
        assert all(splits[c] == splits[o] for c, o in copy_of.items())
    # Some originals with copies are held out: the copies went with them, not into training.
    held_out = {o for o in copy_of.values() if splits[o] != "train"}
    assert held_out
