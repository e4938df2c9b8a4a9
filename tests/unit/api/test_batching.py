"""The API's batcher without a model: rows back to their callers, batches bounded,
a failed call's requests retried alone so that only the faulty one fails, callers that
went away skipped."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.api.batching import Batcher, Concurrency


def rows_of(n: int, start: float) -> list[np.ndarray]:
    """``n`` images (rows of 3 numbers) starting at ``start``."""
    return list((np.arange(n, dtype=np.float32) + start)[:, None].repeat(3, axis=1))


async def test_concurrent_calls_share_model_calls_and_get_their_own_rows() -> None:
    calls: list[int] = []

    def predict(batch: list[np.ndarray]) -> np.ndarray:
        calls.append(len(batch))
        return np.asarray(batch)[:, :2] * 10

    batcher = Batcher(predict, max_batch=8, wait_s=0.05)
    inputs = [rows_of(n, 100 * i) for i, n in enumerate([1, 3, 2, 1, 5, 1])]
    outputs = await asyncio.gather(*(batcher(x) for x in inputs))
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, np.asarray(x)[:, :2] * 10)
    assert sum(calls) == 13 and all(n <= 8 for n in calls)
    assert len(calls) < len(inputs)
    # One call larger than max_batch is scored alone, whole.
    out = await batcher(rows_of(11, 0))
    assert len(out) == 11 and calls[-1] == 11


async def test_a_failing_model_call_fails_its_callers_and_the_next_calls_run() -> None:
    fail = threading.Event()
    fail.set()

    def predict(batch: list[np.ndarray]) -> np.ndarray:
        if fail.is_set():
            raise RuntimeError("model exploded")
        return np.asarray(batch)

    batcher = Batcher(predict, max_batch=4, wait_s=0.02)
    results = await asyncio.gather(
        batcher(rows_of(1, 0)), batcher(rows_of(1, 1)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    fail.clear()
    np.testing.assert_array_equal(await batcher(rows_of(2, 5)), rows_of(2, 5))


async def test_a_caller_that_went_away_is_skipped() -> None:
    started = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def predict(batch: list[np.ndarray]) -> np.ndarray:
        seen.append(len(batch))
        started.set()
        release.wait(5)
        return np.asarray(batch)

    batcher = Batcher(predict, max_batch=2, wait_s=0)
    first = asyncio.create_task(batcher(rows_of(2, 0)))  # occupies the model
    await asyncio.to_thread(started.wait, 5)
    gone = asyncio.create_task(batcher(rows_of(1, 10)))
    kept = asyncio.create_task(batcher(rows_of(1, 20)))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()
    await first
    np.testing.assert_array_equal(await kept, rows_of(1, 20))
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert seen == [2, 1]  # the cancelled caller's image was never scored


async def test_a_faulty_image_fails_its_own_request_not_the_others_batched_with_it() -> None:
    calls: list[int] = []

    def predict(batch: list[np.ndarray]) -> np.ndarray:
        calls.append(len(batch))
        if any(row[0] < 0 for row in batch):
            raise ValueError("an image that does not decode")
        return np.asarray(batch)

    batcher = Batcher(predict, max_batch=8, wait_s=0.05)
    good, bad, other = rows_of(2, 0), rows_of(1, -5), rows_of(1, 7)
    results = await asyncio.gather(
        batcher(good), batcher(bad), batcher(other), return_exceptions=True
    )
    np.testing.assert_array_equal(results[0], good)
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[2], other)
    assert calls == [4, 2, 1, 1]  # together, then each alone


async def test_an_idle_model_waits_for_as_many_images_as_requests_were_open_lately() -> None:
    calls: list[int] = []

    def predict(batch: list[np.ndarray]) -> np.ndarray:
        calls.append(len(batch))
        return np.asarray(batch)

    now = [0.0]
    concurrency = Concurrency(window_s=1.0, clock=lambda: now[0])
    batcher = Batcher(predict, max_batch=32, wait_s=30.0, concurrency=concurrency)
    # A lone client: its request is scored at once, not held back for company.
    concurrency.enter()
    await asyncio.wait_for(batcher(rows_of(1, 0)), 5)
    concurrency.exit()
    assert calls == [1]

    # Three requests open: the first waits for the other two.
    for _ in range(3):
        concurrency.enter()
    first = asyncio.create_task(batcher(rows_of(1, 10)))
    await asyncio.sleep(0.05)
    assert calls == [1], "the model started before the requests open had come"
    second = asyncio.create_task(batcher(rows_of(2, 20)))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert calls == [1, 3]
    for _ in range(3):
        concurrency.exit()

    # Within the window the peak is still expected (clients answered together come back
    # together); after it, only the requests open now.
    assert concurrency.expected() == 3
    now[0] += 1.5
    concurrency.enter()
    assert concurrency.expected() == 1
    await asyncio.wait_for(batcher(rows_of(1, 30)), 5)
    assert calls == [1, 3, 1]


async def test_the_wait_for_company_is_bounded() -> None:
    concurrency = Concurrency()
    for _ in range(8):
        concurrency.enter()  # eight open, one of them ever sends images
    batcher = Batcher(lambda b: np.asarray(b), max_batch=32, wait_s=0.2, concurrency=concurrency)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(batcher(rows_of(1, 0)), 5)
    assert 0.15 < asyncio.get_running_loop().time() - started < 2
