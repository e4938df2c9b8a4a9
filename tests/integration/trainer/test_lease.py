"""One request is never trained twice at once, whoever gets it redelivered."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from services.trainer.handler import TrainerHandler
from services.trainer.records import EpochResult, Hooks, Outcome, TrainingAbandoned
from services.trainer.training import Job
from shared.errors import RetryableError
from tests.integration.trainer.test_handler import SMALL, ready, trainer_settings
from tests.plugins.datasets import create_dataset

pytestmark = pytest.mark.integration


def tiny_training(job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
    """A stand-in for ``train``: one epoch of a tiny network, committed through the hooks.

    What these tests check is who trains, not how: a ResNet would only make them slow.
    """
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(len(job.spec.class_names))])
    result = EpochResult(1, 1.0, 0.5, 1.0, 0.5, 1e-3, 0.1, len(job.train))
    hooks.epoch_end(result, model, [], 1)
    return Outcome(model, [result], 1, "epochs", 0.9, 0, {"loss": 1.0}, {})


class CountingRun:
    """A training, counted, optionally held at the start until ``go`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.go = threading.Event()
        if not hold:
            self.go.set()

    def __call__(self, job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
        self.calls += 1
        self.started.set()
        self.go.wait(120)
        return tiny_training(job, hooks, stop)


async def test_a_redelivery_in_the_same_process_joins_the_running_training(pool: Any) -> None:
    """What a consumer timeout causes: the same message again while it is being trained."""
    dataset_id = await create_dataset(pool, per_class=SMALL)
    run = CountingRun(hold=True)
    handler = TrainerHandler(pool, trainer_settings(), run=run)
    msg = ready(dataset_id, epochs=1)
    first = asyncio.create_task(handler(msg))
    await asyncio.to_thread(run.started.wait, 60)
    second = asyncio.create_task(handler(msg))
    await asyncio.sleep(0.5)
    run.go.set()
    a, b = await asyncio.gather(first, second)
    assert run.calls == 1
    assert a == b
    assert await pool.fetchval("SELECT count(*) FROM models") == 1
    assert await pool.fetchval("SELECT count(*) FROM training_epochs") == 1


async def test_another_trainer_waits_for_the_lease_holder(pool: Any) -> None:
    dataset_id = await create_dataset(pool, per_class=SMALL)
    holder_run, waiter_run = CountingRun(hold=True), CountingRun()
    holder = TrainerHandler(pool, trainer_settings(lease_seconds=3), run=holder_run)
    waiter = TrainerHandler(pool, trainer_settings(lease_seconds=3), run=waiter_run)
    assert holder.worker_id != waiter.worker_id
    msg = ready(dataset_id, epochs=1)
    first = asyncio.create_task(holder(msg))
    await asyncio.to_thread(holder_run.started.wait, 60)
    second = asyncio.create_task(waiter(msg))
    # Longer than the lease: the holder renews it, so the waiter keeps waiting.
    await asyncio.sleep(4)
    assert not second.done()
    holder_run.go.set()
    a, b = await asyncio.gather(first, second)
    assert (holder_run.calls, waiter_run.calls) == (1, 0)
    assert a.model_id == b.model_id
    assert await pool.fetchval("SELECT count(*) FROM training_epochs") == 1


async def test_a_dead_holder_is_taken_over_at_once_and_a_lapsed_lease_after_it_lapses(
    pool: Any,
) -> None:
    dataset_id = await create_dataset(pool, per_class=SMALL)
    msg = ready(dataset_id, epochs=1)

    def abandoned(job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
        raise TrainingAbandoned("stop requested")

    with pytest.raises(RetryableError):
        await TrainerHandler(pool, trainer_settings(), run=abandoned)(msg)
    # The abandoning trainer released its lease.
    assert await pool.fetchval("SELECT lease_owner FROM models") is None

    # A holder on this host whose process is gone (kill -9): no need to wait an hour.
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    await pool.execute(
        "UPDATE models SET lease_owner = $1, lease_until = now() + interval '1 hour'",
        f"{socket.gethostname()}:{gone.pid}:dead",
    )
    run = CountingRun(hold=True)
    handler = TrainerHandler(pool, trainer_settings(lease_seconds=3), run=run)
    task = asyncio.create_task(handler(msg))
    assert await asyncio.to_thread(run.started.wait, 30), "the dead holder was not taken over"
    run.go.set()
    await task

    # A holder elsewhere is trusted until its lease lapses.
    msg2 = ready(dataset_id, epochs=1)
    with pytest.raises(RetryableError):
        await TrainerHandler(pool, trainer_settings(), run=abandoned)(msg2)
    await pool.execute(
        "UPDATE models SET lease_owner = 'elsewhere:1:x', lease_until = now() + interval '2 s'"
        " WHERE request_id = $1",
        msg2.request_id,
    )
    started = time.monotonic()
    await TrainerHandler(pool, trainer_settings(lease_seconds=3), run=CountingRun())(msg2)
    assert time.monotonic() - started >= 1.5
