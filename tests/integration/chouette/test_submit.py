"""train / evaluate against a real broker and database: recorded, published, or neither."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import SecretStr

from chouette.errors import CommandFailed, UsageError
from shared import db
from shared.broker import Broker
from shared.messages import TrainingRequested
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette, drain

pytestmark = pytest.mark.integration

RANGE = ["--start-date", "2024-05-01", "--end-date", "2024-05-31"]


async def test_train_records_the_request_then_publishes_it(
    settings: Settings, broker: Broker, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await chouette(settings, "train", *RANGE, "--arch", "ResNet50V2", "--epochs", "2")
    assert code == 0
    request_id = uuid.UUID(capsys.readouterr().out.strip())
    row = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", request_id)
    assert row["kind"] == "training"
    assert row["status"] == "queued"
    assert row["params"]["training"]["architecture"] == "ResNet50V2"
    assert row["params"]["training"]["epochs"] == 2
    messages = await drain(settings, "fetcher")
    assert len(messages) == 1
    assert messages[0].correlation_id == str(request_id)
    body = json.loads(messages[0].body)
    assert body["type"] == "TrainingRequested"
    assert body == row["params"]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", *RANGE, "--arch", "ResNet34"],
        ["train", *RANGE, "--arch", "ResNet50", "--epochs", "0"],
        ["train", *RANGE, "--arch", "ResNet50", "--tags", "vine,moss"],
        ["train", *RANGE, "--arch", "ResNet50", "--val-fraction", "1.2"],
        ["train", "--start-date", "2024-05-31", "--end-date", "2024-05-01", "--arch", "ResNet50"],
        ["train", "--start-date", "2024-04-31", "--end-date", "2024-05-01", "--arch", "ResNet50"],
        ["evaluate", "--model", "999"],
    ],
)
async def test_rejected_request_publishes_nothing_and_records_nothing(
    argv: list[str], settings: Settings, broker: Broker, pool: db.Pool
) -> None:
    with pytest.raises(UsageError):
        await chouette(settings, *argv)
    assert await drain(settings, "fetcher") == []
    assert await pool.fetchval("SELECT count(*) FROM training_requests") == 0


async def test_evaluate_an_untrained_model_is_rejected(
    settings: Settings, broker: Broker, pool: db.Pool
) -> None:
    request_id = await seed.request(pool)
    model_id = await seed.model(pool, request_id, await seed.dataset(pool))
    await pool.execute("UPDATE models SET status = 'training' WHERE id = $1", model_id)
    with pytest.raises(UsageError, match="not trained"):
        await chouette(settings, "evaluate", "--model", str(model_id))
    assert await drain(settings, "fetcher") == []


async def test_evaluate_on_another_range_uses_the_model_classes(
    settings: Settings, broker: Broker, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_id, _ = await seed.finished_model(pool, 0.7)
    await pool.execute("UPDATE models SET class_names = '{vine,grass}' WHERE id = $1", model_id)
    argv = ["evaluate", "--model", str(model_id), "--start-date", "2024-07-01"]
    code = await chouette(settings, *argv, "--end-date", "2024-07-31", "--json")
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "queued"
    assert set(out) >= {"request_id", "status", "model_id", "dataset_id", "error", "evaluation"}
    (message,) = await drain(settings, "fetcher")
    body = json.loads(message.body)
    assert body["type"] == "EvaluationRequested"
    assert body["model_id"] == model_id
    assert body["dataset"]["tags"] == ["vine", "grass"]
    assert body["request_id"] == out["request_id"]


async def test_evaluate_held_out_split_sends_no_dataset(
    settings: Settings, broker: Broker, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_id, _ = await seed.finished_model(pool, 0.7)
    assert await chouette(settings, "evaluate", "--model", str(model_id)) == 0
    (message,) = await drain(settings, "fetcher")
    assert json.loads(message.body)["dataset"] is None


async def test_train_names_the_services_that_nothing_runs_yet(
    settings: Settings, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await chouette(settings, "train", *RANGE, "--arch", "ResNet50") == 0
    err = capsys.readouterr().err
    assert "no fetcher / trainer / evaluator service is running" in err
    assert "chouette worker fetcher" in err

    async def ignore(message: object) -> None:
        return None

    async def no_failures(**kwargs: object) -> None:
        raise AssertionError(kwargs)

    for queue in ("fetcher", "trainer"):
        await broker.consume(queue, (TrainingRequested,), ignore, on_failure=no_failures)
    assert await chouette(settings, "train", *RANGE, "--arch", "ResNet50") == 0
    err = capsys.readouterr().err
    assert "no evaluator service is running" in err and "fetcher" not in err

    await broker.consume("evaluator", (TrainingRequested,), ignore, on_failure=no_failures)
    assert await chouette(settings, "train", *RANGE, "--arch", "ResNet50") == 0
    assert "note" not in capsys.readouterr().err


def _declaring(settings: Settings) -> Settings:
    """A CLI that declares the queues: AUTO_MIGRATE, as the administrator (AMQP_URL). The
    conftest's CLI user of least privilege only publishes to what exists."""
    return settings.model_copy(update={"auto_migrate": True, "cli_amqp_url": SecretStr("")})


async def test_queues_declared_with_other_arguments_are_named_not_called_unreachable(
    settings: Settings, broker: Broker, pool: db.Pool
) -> None:
    # The queues say 3 (only a CLI that declares them compares their arguments).
    other = _declaring(settings).model_copy(update={"broker_delivery_limit": 7})
    with pytest.raises(CommandFailed, match="refused the pipeline's queues") as failed:
        await chouette(other, "train", *RANGE, "--arch", "ResNet50")
    assert "is it running" not in str(failed.value)
    assert "BROKER_DELIVERY_LIMIT" in str(failed.value)
    assert await pool.fetchval("SELECT count(*) FROM training_requests") == 0


async def test_ctrl_c_while_declaring_the_queues_closes_the_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (the command's task cancelled) once connected but while the queues are being
    declared: the connection is closed and nothing is left that would keep `asyncio.run`
    from returning (aio-pika's reconnecting task shrugs off a cancellation; a process once
    hung there, 3 times in 70, with its AMQP socket open)."""
    import asyncio

    import shared.broker
    from chouette.connections import open_publisher

    settings = _declaring(settings)
    declaring, channels = asyncio.Event(), []

    async def stuck(channel: object, namespace: str, delivery_limit: int) -> None:
        channels.append(channel)
        declaring.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(shared.broker, "declare_topology", stuck)

    async def command() -> None:
        async with open_publisher(settings):
            raise AssertionError("connected while declaring is stuck")

    before = asyncio.all_tasks()
    task = asyncio.create_task(command())
    await asyncio.wait_for(declaring.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (channel,) = channels
    assert channel._connection.is_closed  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], left
