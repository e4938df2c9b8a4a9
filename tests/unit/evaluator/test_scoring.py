"""Batched, overlapped scoring with plain functions in place of the model and database."""

import asyncio

import numpy as np
import pytest

from services.evaluator import scoring

SIZE = 4


def decode(blobs: list[bytes]) -> np.ndarray:
    # Each "image" is its first byte, painted over the whole array.
    return np.stack([np.full((SIZE, SIZE, 3), blob[0], np.float32) for blob in blobs])


def predict(batch: np.ndarray) -> np.ndarray:
    # Class 0 probability = pixel / 255: lets a test check rows stay in input order.
    p0 = batch[:, 0, 0, 0] / 255.0
    return np.stack([p0, 1 - p0], axis=1).astype(np.float32)


async def test_scores_every_image_in_order_across_batches() -> None:
    shas = [f"{i:064x}" for i in range(10)]
    store = {s: bytes([i * 20]) for i, s in enumerate(shas)}
    fetched: list[int] = []
    progress: list[tuple[int, int]] = []

    async def fetch(chunk: list[str]) -> list[bytes]:
        fetched.append(len(chunk))
        await asyncio.sleep(0)
        return [store[s] for s in chunk]

    async def on_progress(done: int, total: int) -> None:
        progress.append((done, total))

    scores = await scoring.score(
        predict, decode, fetch, shas, batch_size=4, on_progress=on_progress
    )

    assert fetched == [4, 4, 2]
    assert progress == [(4, 10), (8, 10), (10, 10)]
    assert scores.probabilities.shape == (10, 2)
    np.testing.assert_allclose(scores.probabilities[:, 0], [i * 20 / 255 for i in range(10)])
    assert scores.images_per_second > 0


async def test_a_failing_fetch_surfaces_as_itself() -> None:
    class Boom(Exception):
        pass

    async def fetch(chunk: list[str]) -> list[bytes]:
        raise Boom("database went away")

    with pytest.raises(Boom, match="went away"):
        await scoring.score(predict, decode, fetch, ["a" * 64], batch_size=2)


async def test_no_images_is_an_error() -> None:
    async def fetch(chunk: list[str]) -> list[bytes]:
        return []

    with pytest.raises(ValueError, match="no images"):
        await scoring.score(predict, decode, fetch, [], batch_size=2)
