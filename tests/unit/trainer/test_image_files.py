"""A split streamed into resized image files trains on the same pixels, in the same order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.trainer.augment import Augmentation
from services.trainer.dataset import Split, evaluation_dataset, training_dataset
from services.trainer.image_files import SplitWriter
from tests.plugins.datasets import photo

CLASSES = ("vine", "ground", "grass")
ROWS = [(photo(tag, i, width=40 + i, height=30), tag, "JPEG") for i in range(5) for tag in CLASSES]


def on_disk(tmp_path: Path, size: int, batch: int) -> Split:
    writer = SplitWriter(tmp_path / "train-images", size, CLASSES)
    for start in range(0, len(ROWS), batch):
        writer.add(ROWS[start : start + batch])
    return writer.split()


def batches(ds: object, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(x), np.asarray(y)) for _ in range(epochs) for x, y in ds]  # type: ignore[attr-defined]


def test_files_hold_no_encoded_image_and_one_file_per_image(tmp_path: Path) -> None:
    split = on_disk(tmp_path, 24, batch=4)
    assert not split.images
    assert len(split) == len(ROWS)
    files = sorted((tmp_path / "train-images").iterdir())
    assert len(files) == len(ROWS)
    assert {f.stat().st_size for f in files} == {24 * 24 * 3 * 4}
    assert list(split.labels) == [CLASSES.index(tag) for _, tag, _ in ROWS]


def test_training_batches_are_those_of_the_in_memory_split(tmp_path: Path) -> None:
    size = 24
    memory = Split.from_rows(ROWS, CLASSES)
    files = on_disk(tmp_path, size, batch=4)
    for augment in (False, Augmentation()):
        kw = {"augment": augment, "seed": 11, "passes": 2}
        expected = batches(training_dataset(memory, size, 4, **kw), epochs=2)  # type: ignore[arg-type]
        got = batches(training_dataset(files, size, 4, **kw), epochs=2)  # type: ignore[arg-type]
        assert len(got) == len(expected)
        for (x, y), (ex, ey) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(y, ey)
            np.testing.assert_array_equal(x, ex)
    expected = batches(evaluation_dataset(memory, size, 4), epochs=1)
    got = batches(evaluation_dataset(files, size, 4), epochs=1)
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(y, ey)
        np.testing.assert_array_equal(x, ex)
