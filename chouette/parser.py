"""The argument grammar of ``chouette``. Parsing only: the message models validate values.

Optional request flags default to ``None`` so that only what the user typed reaches the
message models, and the defaults live in one place (``shared/messages.py``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, NoReturn

from chouette.errors import UsageError
from shared.choices import ARCHITECTURES, LR_SCHEDULES, OPTIMIZERS, TAGS

# `chouette demo`: the network it trains by default.
DEFAULT_ARCH, DEFAULT_IMAGE_SIZE, DEFAULT_EPOCHS = "ResNet50V2", 64, 6
# The real photos shipped with the project, served by the simulator's folder mode.
DEFAULT_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "field-tiles"

WORKERS = ("fetcher", "trainer", "evaluator", "simulator", "api")
_MAX_BIGINT = 2**63 - 1  # PostgreSQL's LIMIT takes a bigint


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= _MAX_BIGINT:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {_MAX_BIGINT}, got {value}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) and lets the caller exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message.replace("argument ", "", 1))


def build_parser() -> Parser:
    parser = Parser(
        prog="chouette",
        description="Train, store and evaluate vineyard image classifiers (vine, ground, grass).",
        epilog="Exit codes: 0 success, 1 failure, 2 bad input (nothing is published).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train",
        help="request a new model: fetch a date range, train a ResNet, evaluate it",
        description="Validate, record and publish a TrainingRequested; print the request id.",
    )
    _dataset_flags(train, required=True)
    net = train.add_argument_group("network and hyper-parameters (defaults: shared/messages.py)")
    net.add_argument("--arch", required=True, metavar="NAME", help=", ".join(ARCHITECTURES))
    net.add_argument("--epochs", type=int, metavar="N")
    net.add_argument("--batch-size", type=int, metavar="N")
    net.add_argument("--image-size", type=int, metavar="PX", help="square input size, >= 32")
    net.add_argument("--learning-rate", type=float, metavar="X", help="peak, after the warm-up")
    net.add_argument("--optimizer", metavar="NAME", help="|".join(OPTIMIZERS))
    net.add_argument("--weights", metavar="none|imagenet|PATH")
    net.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="all augmentations"
    )
    net.add_argument(
        "--augment-geometry",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flips and 90° rotations",
    )
    net.add_argument(
        "--augment-light",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="brightness, contrast (off by default)",
    )
    net.add_argument(
        "--augment-color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="saturation, hue (off by default)",
    )
    net.add_argument(
        "--crop-min-area", type=float, metavar="X", help="random resized crop; 1 switches it off"
    )
    net.add_argument(
        "--min-images-per-epoch",
        type=int,
        metavar="N",
        help="small datasets repeat within an epoch up to N images; 0: one pass",
    )
    net.add_argument("--dropout", type=float, metavar="X")
    net.add_argument("--weight-decay", type=float, metavar="X", help="decoupled (AdamW-style)")
    net.add_argument("--label-smoothing", type=float, metavar="X")
    net.add_argument("--lr-schedule", metavar="NAME", help="|".join(LR_SCHEDULES))
    net.add_argument("--warmup-epochs", type=int, metavar="N")
    net.add_argument("--seed", type=int, metavar="N")
    net.add_argument("--test-fraction", type=float, metavar="X", help="in (0, 1)")
    net.add_argument("--val-fraction", type=float, metavar="X", help="in (0, 1)")
    net.add_argument("--freeze-epochs", type=int, metavar="N", help="pretrained base frozen")
    net.add_argument(
        "--fine-tune-lr-factor", type=float, metavar="X", help="learning rate after the freeze"
    )
    net.add_argument("--early-stopping-patience", type=int, metavar="N")
    _follow_flags(train)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a stored model on its test split or on another date range",
        description="Without dates: the model's held-out test split. With dates: all the "
        "images of that range (the leak-free check on later photos).",
    )
    evaluate.add_argument("--model", required=True, metavar="ID", help="model id (chouette models)")
    _dataset_flags(evaluate, required=False)
    _follow_flags(evaluate)

    status = sub.add_parser("status", help="requests with stage, progress and error")
    status.add_argument("request_id", nargs="?", metavar="REQUEST_ID", help="id or unique prefix")
    status.add_argument(
        "--limit", type=positive_int, default=20, help="requests listed (default 20)"
    )
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")

    sub.add_parser("watch", help="live view of requests, epochs and evaluations (Ctrl-C stops)")

    models = sub.add_parser("models", help="the model registry, best first")
    models.add_argument("--limit", type=positive_int, default=50, help="models listed")
    models.add_argument("--json", action="store_true", help="one JSON object on stdout")

    champion = sub.add_parser(
        "champion",
        help="the champion of each class set; pin the reference date range it is chosen on",
        description="Without flags: the reference range and the champions. --reference pins"
        " a date range: champions are then chosen on its evaluations only (README: Which model"
        " is champion).",
    )
    pin = champion.add_mutually_exclusive_group()
    pin.add_argument("--reference", nargs=2, metavar=("START", "END"), help="YYYY-MM-DD dates")
    pin.add_argument(
        "--no-reference", action="store_true", help="unpin: back to the shared-dataset rule"
    )
    champion.add_argument("--json", action="store_true", help="one JSON object on stdout")

    promote = sub.add_parser("promote", help="make a model the champion of its class set by hand")
    promote.add_argument("model", metavar="MODEL", help="model id")
    promote.add_argument("--json", action="store_true", help="one JSON object on stdout")

    predict = sub.add_parser("predict", help="class probabilities for local images")
    predict.add_argument("--model", required=True, metavar="ID")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average each image's 8 flips/turns, as the evaluator does by default",
    )
    predict.add_argument("--json", action="store_true", help="one JSON object on stdout")

    explain = sub.add_parser(
        "explain", help="Grad-CAM overlays: where the model found the class in each image"
    )
    explain.add_argument("--model", required=True, metavar="ID")
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.add_argument("--out", required=True, metavar="DIR", help="OUT/<image>.gradcam.png")
    explain.add_argument(
        "--class", dest="class_name", metavar="NAME", help="class explained (default: predicted)"
    )
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")

    export = sub.add_parser(
        "export", help="write a model as a standard Keras file or TensorFlow SavedModel"
    )
    export.add_argument("model", metavar="MODEL", help="model id")
    export.add_argument("--format", required=True, choices=("keras", "savedmodel"))
    export.add_argument("--out", required=True, metavar="PATH", help="file (.keras) or folder")

    report = sub.add_parser(
        "report", help="training curves and confusion matrix (PNG) with a Markdown summary"
    )
    report.add_argument("model", metavar="MODEL", help="model id")
    report.add_argument("--out", metavar="DIR", help="default: reports/model-<ID>")
    report.add_argument(
        "--gallery",
        action="store_true",
        help="add the misclassified images with their Grad-CAM overlays (loads TensorFlow)",
    )

    sub.add_parser(
        "migrate",
        help="apply pending migrations and set each role's grants (MIGRATE_DATABASE_URL)",
    )

    services = sub.add_parser("services", help="local RabbitMQ + PostgreSQL for development")
    services.add_argument("action", choices=("up", "down", "status"))

    worker = sub.add_parser(
        "worker", help="run one service (same as python -m services.NAME)", add_help=False
    )
    worker.add_argument("name", choices=WORKERS)
    worker.add_argument("args", nargs=argparse.REMAINDER)

    demo = sub.add_parser(
        "demo", help="start everything, train, evaluate on a later range, print the results"
    )
    _demo_flags(demo)
    _weights_parser(sub)
    _prune_parser(sub)
    return parser


def _dataset_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("dataset (dates inclusive, YYYY-MM-DD)")
    group.add_argument("--start-date", required=required, metavar="D")
    group.add_argument("--end-date", required=required, metavar="D")
    group.add_argument(
        "--tags",
        metavar="T,T",
        help=f"subset of {','.join(TAGS)}" + ("" if required else " (default: model's classes)"),
    )


def _follow_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow progress until done; exit 0 only on success"
    )
    parser.add_argument("--timeout", type=seconds, metavar="S", help="give up waiting after S s")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep-services", action="store_true", help="leave RabbitMQ/PG running")
    parser.add_argument("--arch", default=DEFAULT_ARCH)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--photos",
        type=Path,
        default=DEFAULT_PHOTOS,
        metavar="DIR",
        help="labelled photos DIR/<tag>/*.jpg the simulator serves (default: data/field-tiles)",
    )
    source.add_argument(
        "--generated", action="store_true", help="the simulator's generated field dataset"
    )
    parser.add_argument("--train-start", metavar="D", help="default: the first season")
    parser.add_argument("--train-end", metavar="D")
    parser.add_argument("--eval-start", metavar="D", help="default: the next season")
    parser.add_argument("--eval-end", metavar="D")


def _weights_parser(sub: argparse._SubParsersAction[Any]) -> None:
    weights = sub.add_parser(
        "weights",
        help="ImageNet weights cache for --weights imagenet: pull (verified) and list",
        description="Fill and inspect the cache the trainer loads --weights imagenet from"
        " (TRAINER_WEIGHTS_CACHE_DIR, default $KERAS_HOME/models).",
    )
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    pull = actions.add_parser(
        "pull",
        help="download and verify the notop weights of architectures into the cache",
        description="Fetch each architecture's *_notop.h5 from the source, check its hash,"
        " and keep it in the cache. An offline site: pull on a connected machine with"
        " --cache-dir DIR, carry DIR, and pull there with --source DIR.",
    )
    pull.add_argument(
        "architectures", nargs="+", metavar="ARCH", help=", ".join(ARCHITECTURES) + " or all"
    )
    pull.add_argument(
        "--source",
        metavar="URL|DIR",
        help="base URL serving the Keras file names, or a directory holding them"
        " (default: TRAINER_WEIGHTS_SOURCE, itself Keras's public URL by default)",
    )
    _cache_flag(pull)
    listing = actions.add_parser("list", help="which weights files are cached and valid")
    _cache_flag(listing)


def _cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="default: TRAINER_WEIGHTS_CACHE_DIR, else $KERAS_HOME/models (~/.keras/models)",
    )


def _prune_parser(sub: argparse._SubParsersAction[Any]) -> None:
    prune = sub.add_parser(
        "prune",
        help="remove old checkpoints, non-champion weights and unused images (dry run)",
        description="List what retention would remove: checkpoints of trainings that ended,"
        " weights of models that are not champions and were trained more than"
        " RETENTION_WEIGHTS_DAYS ago, images no dataset references. Nothing is removed"
        " without --apply.",
    )
    prune.add_argument("--apply", action="store_true", help="remove them (default: dry run)")
    prune.add_argument(
        "--weights-older-than",
        type=float,
        metavar="DAYS",
        help="default: RETENTION_WEIGHTS_DAYS (30)",
    )
    prune.add_argument("--json", action="store_true", help="one JSON object on stdout")
