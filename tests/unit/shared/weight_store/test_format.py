"""The weights stream format (shared.weight_store.format), without servers or TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared.weight_store.format import (
    CorruptWeights,
    StreamDecoder,
    WeightsMismatch,
    iter_body_parts,
    match_tensors,
)


class FakeVariable:
    def __init__(self, path: str, value: np.ndarray) -> None:
        self.path, self.value = path, value
        self.shape, self.dtype = value.shape, str(value.dtype)

    def numpy(self) -> np.ndarray:
        return self.value

    def assign(self, value: Any) -> None:
        assert value.shape == self.shape
        self.value = np.array(value)


def variables(seed: int) -> list[FakeVariable]:
    rng = np.random.default_rng(seed)
    return [
        FakeVariable("a/kernel", rng.normal(size=(3, 3, 2, 5)).astype(np.float32)),
        FakeVariable("a/bias", rng.normal(size=(5,)).astype(np.float32)),
        FakeVariable("step", np.array(7, dtype=np.int64)),
    ]


def decode(parts: list[bytes], targets: list[FakeVariable]) -> StreamDecoder:
    def resolve(header: dict[str, Any]) -> list[Any]:
        match_tensors("weights", header["tensors"], targets)
        return list(targets)

    decoder = StreamDecoder(resolve)
    for part in parts:
        decoder.feed(part)
    return decoder


@pytest.mark.parametrize("part_bytes", [1, 7, 100, 1 << 20])
def test_stream_round_trips_at_any_part_size(part_bytes: int) -> None:
    source, target = variables(0), variables(1)
    parts = list(iter_body_parts(source, kind="weights", part_bytes=part_bytes))
    assert all(len(p) <= part_bytes for p in parts)
    decoder = decode(parts, target)
    decoder.finish(sum(map(len, parts)))
    assert decoder.header is not None and decoder.header["kind"] == "weights"
    for s, t in zip(source, target, strict=True):
        np.testing.assert_array_equal(s.value, t.value)


def test_stream_errors() -> None:
    parts = list(iter_body_parts(variables(0), kind="weights", part_bytes=64))
    with pytest.raises(CorruptWeights, match="magic"):
        decode([b"X" + parts[0][1:], *parts[1:]], variables(1))
    truncated = decode(parts[:-1], variables(1))
    with pytest.raises(CorruptWeights, match="truncated"):
        truncated.finish(0)
    wrong = variables(1)[:2]
    with pytest.raises(WeightsMismatch, match="3 tensors"):
        decode(parts, wrong)


def test_stream_packs_small_tensors_and_slices_large_ones() -> None:
    rng = np.random.default_rng(2)
    source = [
        FakeVariable("small", rng.normal(size=(3,)).astype(np.float32)),  # 12 bytes: packed
        FakeVariable("large", rng.normal(size=(100,)).astype(np.float32)),  # 400: sliced
        FakeVariable("empty", np.zeros((0, 4), np.float32)),
        FakeVariable("tail", np.arange(5, dtype=np.int64)),
    ]
    parts = list(iter_body_parts(source, kind="weights", part_bytes=128))
    assert all(0 < len(p) <= 128 for p in parts)
    # The large tensor's bytes go out as views of its own array, not as copies.
    views = [p for p in parts if isinstance(p, memoryview)]
    assert sum(len(v) for v in views) >= 400
    target = [FakeVariable(v.path, np.full_like(v.value, 9)) for v in source]
    decoder = decode([bytes(p) for p in parts], target)
    decoder.finish(sum(map(len, parts)))
    for s, t in zip(source, target, strict=True):
        np.testing.assert_array_equal(s.value, t.value)


def test_decoder_skips_tensors_without_a_target() -> None:
    source = variables(0)
    parts = list(iter_body_parts(source, kind="weights", part_bytes=16))
    kept = variables(1)
    decoder = StreamDecoder(lambda header: [kept[0], None, kept[2]])
    for part in parts:
        decoder.feed(part)
    decoder.finish(0)
    np.testing.assert_array_equal(kept[0].value, source[0].value)
    assert not np.array_equal(kept[1].value, source[1].value)  # left alone
    np.testing.assert_array_equal(kept[2].value, source[2].value)


def test_decoder_rejects_bytes_after_the_last_tensor() -> None:
    parts = list(iter_body_parts(variables(0), kind="weights"))
    with pytest.raises(CorruptWeights, match="3 unexpected bytes"):
        decode([*parts, b"xyz"], variables(1))
