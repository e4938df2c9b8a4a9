"""From command-line flags to a validated message, recorded in Postgres, then published.

Validation happens entirely before any connection is opened: a rejected request touches
neither the database nor the broker. Errors name the flag the user typed and the message
field it fills: ``--epochs (training.epochs): Input should be greater than 0 (got 0)``.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from chouette import queries
from chouette.errors import UsageError
from shared.messages import MAX_BIGINT, EvaluationRequested, Message, TrainingRequested

# Message field (dotted, as first_error writes it) → the flag that fills it.
FLAGS: dict[str, str] = {
    "dataset": "--start-date/--end-date",
    "dataset.start_date": "--start-date",
    "dataset.end_date": "--end-date",
    "dataset.tags": "--tags",
    "training.architecture": "--arch",
    "model_id": "--model",
}
_TRAINING_FLAGS = (
    "epochs",
    "batch_size",
    "min_images_per_epoch",
    "image_size",
    "learning_rate",
    "optimizer",
    "weights",
    "augment",
    "augment_geometry",
    "augment_light",
    "augment_color",
    "crop_min_area",
    "dropout",
    "weight_decay",
    "label_smoothing",
    "lr_schedule",
    "warmup_epochs",
    "seed",
    "test_fraction",
    "val_fraction",
    "freeze_epochs",
    "fine_tune_lr_factor",
    "early_stopping_patience",
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
M = TypeVar("M", bound=Message)


class Publisher(Protocol):
    """What the CLI needs of the broker (``shared.broker.Broker``; a recorder in tests)."""

    async def publish(self, message: Message) -> None: ...

    async def consumer_counts(self, queues: Sequence[str]) -> dict[str, int]: ...


def training_request(args: argparse.Namespace) -> TrainingRequested:
    dataset = _dataset(args)
    training: dict[str, Any] = {"architecture": args.arch}
    for name in _TRAINING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            training[name] = value
    return _validated(
        TrainingRequested,
        {"request_id": uuid.uuid4(), "dataset": dataset, "training": training},
    )


def evaluation_request(
    args: argparse.Namespace, model_tags: tuple[str, ...] | None = None
) -> EvaluationRequested:
    """``model_tags``: the model's classes, the default tags of another date range."""
    fields: dict[str, Any] = {"request_id": uuid.uuid4(), "model_id": parse_model_id(args.model)}
    if args.start_date is not None or args.end_date is not None:
        if args.start_date is None or args.end_date is None:
            raise UsageError(
                "--start-date/--end-date: give both dates, or neither for the test split"
            )
        dataset = _dataset(args)
        if "tags" not in dataset and model_tags:
            dataset["tags"] = list(model_tags)
        elif model_tags:
            _check_model_knows(dataset["tags"], model_tags, fields["model_id"])
        fields["dataset"] = dataset
    elif args.tags is not None:
        raise UsageError("--tags: only with --start-date/--end-date")
    return _validated(EvaluationRequested, fields)


def _check_model_knows(tags: str, model_tags: tuple[str, ...], model_id: int) -> None:
    """A model scores only its own classes: images of another tag would be left out of the
    figures without a word (and the macro F1 computed over fewer classes), so refuse them."""
    asked = [t.strip() for t in str(tags).split(",") if t.strip()]
    unknown = [t for t in asked if t not in model_tags]
    if unknown:
        raise UsageError(
            f"--tags (dataset.tags): model {model_id} was trained on {','.join(model_tags)}"
            f" only; it cannot score {','.join(unknown)} (leave --tags out for its classes)"
        )


def parse_model_id(text: str, flag: str = "--model") -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag}: expected a positive integer model id, got {text!r}") from None
    if not 0 < value <= MAX_BIGINT:
        raise UsageError(f"{flag}: expected a model id from 1 to {MAX_BIGINT}, got {value}")
    return value


def _dataset(args: argparse.Namespace) -> dict[str, Any]:
    dataset: dict[str, Any] = {}
    for flag, name in (("--start-date", "start_date"), ("--end-date", "end_date")):
        text = getattr(args, name)
        # Strict ISO: pydantic alone would also take e.g. a Unix timestamp for a date.
        if not _DATE.fullmatch(text.strip()):
            raise UsageError(f"{flag} (dataset.{name}): expected YYYY-MM-DD, got {text!r}")
        dataset[name] = text.strip()
    if args.tags is not None:
        dataset["tags"] = args.tags
    return dataset


def _validated(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line: the flag, the message field, the reason and the rejected value."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "request"
    reason = err["msg"].removeprefix("Value error, ")
    # A check across fields names the field it is about: "dataset.tags: reason".
    named, sep, rest = reason.partition(": ")
    if sep and (named in FLAGS or named.startswith("training.")):
        field, reason = named, rest
    flag = FLAGS.get(field) or (
        "--" + field.removeprefix("training.").replace("_", "-")
        if field.startswith("training.")
        else None
    )
    where = f"{flag} ({field})" if flag else field
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    return f"{where}: {reason}{shown}"


def params_json(message: Message) -> dict[str, Any]:
    """The request row's ``params``: the message as JSON."""
    return json.loads(message.model_dump_json())


def kind_of(message: Message) -> str:
    return "training" if isinstance(message, TrainingRequested) else "evaluation"


async def trained_model(con: queries.Con, model_id: int) -> queries.Row:
    """The ``models`` row of ``model_id``; a usage error (exit 2) unless it is trained."""
    row = await queries.model(con, model_id)
    if row is None:
        raise UsageError(f"--model (model_id): no model {model_id} (see `chouette models`)")
    if row["status"] != "trained":
        raise UsageError(f"--model (model_id): model {model_id} is {row['status']}, not trained")
    return row
