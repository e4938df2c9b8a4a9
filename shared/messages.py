"""Every message the services exchange, on one screen.

    chouette train    ─TrainingRequested─▶ fetcher ─TrainingDatasetReady─▶ trainer ─ModelReady─┐
    chouette evaluate ─EvaluationRequested─▶ fetcher ─EvaluationDatasetReady─▶ evaluator ◀─────┘
    evaluator ─ModelEvaluated─▶ watchers          any service ─RequestFailed─▶ watchers

Messages are frozen, versioned pydantic models with JSON bodies. They carry ids and
parameters, never images or weights. ``request_id`` is also the AMQP correlation id;
``message_id`` is unique per message. The CLI validates user input with these same models.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.choices import (
    TAGS,
    Architecture,
    LrSchedule,
    Optimizer,
    Split,
    Tag,
)
from shared.errors import InvalidMessage

SCHEMA_VERSION: Final = 1


MIN_IMAGE_SIZE: Final = 32
MAX_IMAGE_SIZE: Final = 1024
# Ids are PostgreSQL ``bigint``s: a larger number could never be stored or found.
MAX_BIGINT: Final = 2**63 - 1
# A seed is stored as a bigint and seeds NumPy's global generator (keras.utils.set_random_seed),
# which takes at most 32 bits.
MAX_SEED: Final = 2**32 - 1
# Pixels in one training batch (batch_size * image_size**2): 16 images of 1024 px, 256 of 256 px.
# Training a ResNet keeps a few kB of activations per input pixel, so a larger batch cannot
# fit in the memory of one machine (or accelerator): it is refused here, not after the fetch.
MAX_BATCH_PIXELS: Final = 2**24
# A failure's text, in messages and in the database, is cut to this many characters.
MAX_ERROR_CHARS: Final = 2000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Frozen(BaseModel):
    # Schemas are built on first use: the CLI validates one kind of message and starts
    # ~0.1 s sooner than when all of them (and the union below) are built at import.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class DatasetSpec(_Frozen):
    """A dataset is a filter on the Chouette image API: a date range (inclusive) and tags."""

    start_date: dt.date
    end_date: dt.date
    tags: tuple[Tag, ...] = TAGS  # type: ignore[assignment]

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("tags")
    @classmethod
    def _tags_non_empty_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one tag is needed")
        # Keep the canonical order so the same set of tags is the same dataset.
        return tuple(t for t in TAGS if t in value)

    @model_validator(mode="after")
    def _ordered(self) -> DatasetSpec:
        if self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self


class TrainingParams(_Frozen):
    """The network and hyper-parameters of one training request.

    The defaults are the recipe chosen on real field photos trained on one season and
    scored on the next (``bench/bench_quality.py``; the README's ablation table shows what
    each ingredient is worth).
    """

    architecture: Architecture
    epochs: int = Field(40, gt=0, le=1000)
    batch_size: int = Field(16, gt=0, le=4096)
    # An epoch shows the training split as many times as it takes to reach this many images
    # (a new order and new augmentations each time): a dataset of a few dozen images still
    # gets enough optimizer steps. 0: one pass per epoch.
    min_images_per_epoch: int = Field(160, ge=0, le=1_000_000)
    image_size: int = Field(64, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    # The peak learning rate (after the warm-up, before the schedule's decay).
    learning_rate: float = Field(1e-3, gt=0, lt=10)
    optimizer: Optimizer = "adam"
    # "none" (from scratch), "imagenet" (Keras cache only), or a local weights file path.
    weights: str = "none"
    # Augmentations (services/trainer/augment.py): ``augment`` switches them all off.
    augment: bool = True
    augment_geometry: bool = True  # flips and 90° rotations
    augment_light: bool = False  # brightness, contrast
    augment_color: bool = False  # saturation, hue
    crop_min_area: float = Field(0.6, gt=0, le=1)  # random resized crop; 1 switches it off
    dropout: float = Field(0.3, ge=0, lt=1)
    # Decoupled weight decay (AdamW-style: each step subtracts learning rate * decay * weight).
    weight_decay: float = Field(0.02, ge=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # Learning rate: linear warm-up over ``warmup_epochs`` (at most a fifth of the epochs),
    # then cosine decay to zero, or constant.
    lr_schedule: LrSchedule = "cosine"
    warmup_epochs: int = Field(2, ge=0, le=1000)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.15, gt=0, lt=1)
    # Epochs with the pretrained base frozen (fine-tuning); 0 trains everything from the start.
    freeze_epochs: int = Field(0, ge=0, le=1000)
    # After the frozen epochs, the whole network trains at this fraction of the learning rate.
    fine_tune_lr_factor: float = Field(0.1, gt=0, le=1)
    early_stopping_patience: int = Field(10, gt=0, le=1000)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("weights must be 'none', 'imagenet' or a file path")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> TrainingParams:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError(
                f"test_fraction + val_fraction must be below 1 "
                f"(got {self.test_fraction} + {self.val_fraction})"
            )
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> TrainingParams:
        pixels = self.batch_size * self.image_size**2
        if pixels > MAX_BATCH_PIXELS:
            # "field: reason": the CLI names the flag of the field (chouette/submit.py).
            raise ValueError(
                f"training.batch_size: batch_size * image_size**2 is {pixels} pixels per"
                f" batch, above the {MAX_BATCH_PIXELS} that fit in memory (got batch_size"
                f" {self.batch_size}, image_size {self.image_size}): lower one of them"
            )
        return self


class Message(_Frozen):
    """Envelope fields every message has."""

    routing_key: ClassVar[str]

    schema_version: int = SCHEMA_VERSION
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    request_id: uuid.UUID
    created_at: dt.datetime = Field(default_factory=_now)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {value}; this build understands {SCHEMA_VERSION}"
            )
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class TrainingRequested(Message):
    """A user asks for a new model: fetch the dataset, train the network, evaluate it."""

    routing_key: ClassVar[str] = "training.requested"
    type: Literal["TrainingRequested"] = "TrainingRequested"
    dataset: DatasetSpec
    training: TrainingParams

    @model_validator(mode="after")
    def _several_classes(self) -> TrainingRequested:
        if len(self.dataset.tags) < 2:
            # "field: reason": the CLI names the flag of the field (chouette/submit.py).
            raise ValueError(
                f"dataset.tags: a classifier needs at least two classes"
                f" (got only {','.join(self.dataset.tags)})"
            )
        return self


class EvaluationRequested(Message):
    """Evaluate a stored model on its held-out test split, or on another date range."""

    routing_key: ClassVar[str] = "evaluation.requested"
    type: Literal["EvaluationRequested"] = "EvaluationRequested"
    model_id: int = Field(gt=0, le=MAX_BIGINT)
    dataset: DatasetSpec | None = None


class TrainingDatasetReady(Message):
    """The fetcher stored a training request's dataset: the trainer trains on it."""

    routing_key: ClassVar[str] = "dataset.ready.training"
    type: Literal["TrainingDatasetReady"] = "TrainingDatasetReady"
    dataset_id: int = Field(gt=0, le=MAX_BIGINT)
    training: TrainingParams


class EvaluationDatasetReady(Message):
    """The fetcher stored an evaluation's dataset: the evaluator scores ``model_id`` on
    ``split`` of it (``all`` for a later date range, ``test`` for the held-out split)."""

    routing_key: ClassVar[str] = "dataset.ready.evaluation"
    type: Literal["EvaluationDatasetReady"] = "EvaluationDatasetReady"
    dataset_id: int = Field(gt=0, le=MAX_BIGINT)
    model_id: int = Field(gt=0, le=MAX_BIGINT)
    split: Split = "test"


DatasetReady = TrainingDatasetReady | EvaluationDatasetReady
# Before the two types above, one ``DatasetReady`` type said its consumer in ``purpose``;
# such bodies (in queues during an upgrade) still parse, as the matching new type.
_LEGACY_DATASET_READY = {"training": "TrainingDatasetReady", "evaluation": "EvaluationDatasetReady"}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("type") != "DatasetReady":
        return data
    purpose = data.get("purpose")
    if purpose not in _LEGACY_DATASET_READY:
        return data  # left for validation to refuse with its own reason
    upgraded = {k: v for k, v in data.items() if k != "purpose"}
    upgraded["type"] = _LEGACY_DATASET_READY[purpose]
    drop = ("model_id", "split") if purpose == "training" else ("training",)
    return {k: v for k, v in upgraded.items() if k not in drop}


class ModelReady(Message):
    """The trainer committed a trained model and its weights."""

    routing_key: ClassVar[str] = "model.ready"
    type: Literal["ModelReady"] = "ModelReady"
    model_id: int = Field(gt=0, le=MAX_BIGINT)
    dataset_id: int = Field(gt=0, le=MAX_BIGINT)


class ModelEvaluated(Message):
    """The evaluator committed an evaluation."""

    routing_key: ClassVar[str] = "model.evaluated"
    type: Literal["ModelEvaluated"] = "ModelEvaluated"
    model_id: int = Field(gt=0, le=MAX_BIGINT)
    dataset_id: int = Field(gt=0, le=MAX_BIGINT)
    evaluation_id: int = Field(gt=0, le=MAX_BIGINT)
    accuracy: float
    macro_f1: float


class RequestFailed(Message):
    """A request ended in failure; the same text is in ``training_requests.error``."""

    routing_key: ClassVar[str] = "request.failed"
    type: Literal["RequestFailed"] = "RequestFailed"
    stage: str
    error: str

    @field_validator("error", mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return truncate(value) if isinstance(value, str) else value


AnyMessage = Annotated[
    TrainingRequested
    | EvaluationRequested
    | TrainingDatasetReady
    | EvaluationDatasetReady
    | ModelReady
    | ModelEvaluated
    | RequestFailed,
    Field(discriminator="type"),
]


@functools.cache
def _any_message() -> TypeAdapter[Message]:
    return TypeAdapter(AnyMessage)  # type: ignore[arg-type]


def truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text) - limit} more characters)"
    return text[: max(0, limit - len(note))] + note


def first_error(exc: ValidationError) -> str:
    """One line naming the field: ``training.epochs: Input should be greater than 0``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "request"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}"


def parse_message(body: bytes | str) -> Message:
    """Parse any message body; raise :class:`InvalidMessage` with a clear one-line reason.

    Whatever the body, nothing but :class:`InvalidMessage` comes out: deep nesting makes
    ``json`` raise ``RecursionError``, which would otherwise escape every caller.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"body is not JSON: {shorten(str(exc))}") from exc
    except RecursionError as exc:
        raise InvalidMessage("body is nested too deeply to parse") from exc
    if not isinstance(data, dict):
        raise InvalidMessage("body is not a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidMessage(
            f"unsupported schema_version {shorten(repr(version))};"
            f" this build understands {SCHEMA_VERSION}"
        )
    try:
        return _any_message().validate_python(_upgrade(data))
    except ValidationError as exc:
        kind = shorten(str(data.get("type", "message")))
        raise InvalidMessage(f"invalid {kind}: {shorten(first_error(exc))}") from exc
    except RecursionError as exc:
        raise InvalidMessage("body is nested too deeply to validate") from exc


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (an error quoting a huge value stays one line)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
