"""Model quality on real photos of a later season: the product's recipe vs a plain Keras one.

    .venv/bin/python -m bench.bench_quality [--arch ResNet50V2] [--image-size 64]
        [--epochs 40] [--seeds 3] [--sizes all,60] [--photos data/field-tiles]
        [--ablation] [--out results.json]

The photos are ``data/field-tiles`` (real field photos, see its README), dated per source
photo as the simulator's folder mode dates them (``services.simulator.photos``): ~70 % of
the source photos in a first season, the rest in the next. Each run trains on first-season
photos and is scored on every second-season photo, which it never saw:

- product: the trainer's own code (``services.trainer.training.train`` with the request's
  defaults: augmentations, weight decay, label smoothing, warm-up + cosine schedule,
  BatchNorm handling, early stopping on the validation split) on the train split the
  fetcher's split gives (grouped by source photo: 65 % train, 15 % validation, 20 % test,
  the test split unused here); then the evaluator's own scoring (``Predictor`` with its
  default test-time augmentation setting, ``BatchDecoder``, ``metrics.evaluate``) on the
  second season (the figure with the other setting is printed too);
- baseline (fixed, not tuned): ``keras.applications.<arch>`` from scratch, BatchNorm
  momentum 0.9, random flips and rotation, Adam 1e-3, class weights, the same number of
  epochs, no early stopping, trained on the same images as the product: its train split
  (the product's validation split only chooses its kept epoch).

Sizes: ``all`` (every first-season photo) and ``60`` (about 60 photos drawn by source
photo, the size of a week on the real API). Each seed draws the small subset, the split,
the initial weights and the augmentations. Prints each run's later-season macro F1 and
training time, then per size the means, the spread (min..max) and the error ratio
``(1 - F1 product) / (1 - F1 baseline)`` of the means; target <= 0.7 at every size. With
``--ablation`` the product is also trained with each ingredient off in turn (the README's
table). Last line: ``{"bench": "quality", "ratio": worst size's ratio, "target": 0.7,
"pass": ...}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.simulator.photos import Photo, PhotoFolder
from shared.settings import EvaluatorSettings

# The evaluator's default: the product is scored as it ships.
EVALUATOR_TTA: bool = EvaluatorSettings.model_fields["tta"].default
OTHER_TTA = "without test-time augmentation" if EVALUATOR_TTA else "with test-time augmentation"

TARGET = 0.7
CLASSES = ("vine", "ground", "grass")
DEFAULT_PHOTOS = Path(__file__).resolve().parent.parent / "data" / "field-tiles"
SIMULATOR_SEED = 2020  # the simulator's default: the same seasons as `chouette demo`
SMALL = 60

# The product with one ingredient off in turn (TrainingParams changes).
ABLATIONS: dict[str, dict[str, Any]] = {
    "product (all on)": {},
    "one pass per epoch (no repeats)": {"min_images_per_epoch": 0},
    "no random resized crop": {"crop_min_area": 1.0},
    "no flips / 90° turns": {"augment_geometry": False},
    "no label smoothing": {"label_smoothing": 0.0},
    "constant learning rate, no warm-up": {"lr_schedule": "constant", "warmup_epochs": 0},
    "no weight decay": {"weight_decay": 0.0},
}
# Switched on in turn with --ablation-extra (defaults off, chosen with this benchmark).
EXTRA_ABLATIONS: dict[str, dict[str, Any]] = {
    "with brightness / contrast (off by default)": {"augment_light": True},
    "with saturation / hue (off by default)": {"augment_color": True},
}


@dataclass(frozen=True)
class Run:
    size: str
    seed: int
    recipe: str
    macro_f1: float
    seconds: float
    n_train: int
    epochs_run: int
    # With the other test-time augmentation setting than the evaluator's default (the 8
    # flips/turns averaged, or not); None for the baseline, which is scored plainly.
    other_tta_f1: float | None = None


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def small_subset(photos: Sequence[Photo], n: int, seed: int) -> list[Photo]:
    """About ``n`` photos, whole source photos at a time, about ``n / 3`` per class."""
    by_source: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        by_source[p.source].append(p)
    taken: list[Photo] = []
    per_class: Counter[str] = Counter()
    for source in sorted(by_source, key=lambda s: _rank(seed, s)):
        group = by_source[source]
        tag = Counter(p.tag for p in group).most_common(1)[0][0]
        if per_class[tag] >= n // len(CLASSES):
            continue
        taken += group
        per_class[tag] += len(group)
    return taken


def product_split(photos: Sequence[Photo], seed: int) -> dict[str, list[Photo]]:
    """The fetcher's stratified split (default fractions), one source photo on one side."""
    from services.fetcher.split import assign_splits

    by_source: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        by_source[p.source].append(p)
    sources = [
        (source, Counter(p.tag for p in group).most_common(1)[0][0])
        for source, group in by_source.items()
    ]
    sides = assign_splits(sources, test_fraction=0.2, val_fraction=0.15, seed=seed)
    out: dict[str, list[Photo]] = {"train": [], "val": [], "test": []}
    for source, group in by_source.items():
        out[sides[source]] += group
    return out


def _split(photos: Sequence[Photo], folder: PhotoFolder) -> Any:
    from services.trainer.dataset import Split

    return Split.from_rows([(folder.data(p), p.tag, "JPEG") for p in photos], CLASSES)


class _Hooks:
    """Checkpoints kept in memory, as the trainer's recorder keeps them in PostgreSQL."""

    def __init__(self) -> None:
        self.checkpoints: dict[int, list[np.ndarray]] = {}

    def restore(self, model: Any, optimizer_variables: Any, epoch: int) -> bool:
        raise AssertionError("nothing to resume in a benchmark")

    def epoch_end(self, result: Any, model: Any, optimizer_variables: Any, best: int) -> None:
        self.checkpoints = {e: w for e, w in self.checkpoints.items() if e == best}
        self.checkpoints[result.epoch] = [v.numpy().copy() for v in model.weights]

    def load_best(self, model: Any, epoch: int) -> None:
        for variable, value in zip(model.weights, self.checkpoints[epoch], strict=True):
            variable.assign(value)


def score(
    model: Any, photos: Sequence[Photo], folder: PhotoFolder, image_size: int, tta: bool = False
) -> float:
    """Later-season macro F1 through the evaluator's own scoring code (``tta``: its
    test-time augmentation, the 8 flips/90° turns of each image averaged)."""
    from services.evaluator.metrics import evaluate
    from services.evaluator.scoring import BatchDecoder, Predictor

    predict, decode = Predictor(model, image_size, tta=tta), BatchDecoder(image_size)
    blobs = [folder.data(p) for p in photos]
    batches = [predict(decode(blobs[i : i + 64])) for i in range(0, len(blobs), 64)]
    truth = [CLASSES.index(p.tag) for p in photos]
    return evaluate(truth, np.concatenate(batches), CLASSES).macro_f1


class Product:
    def __init__(self, args: argparse.Namespace) -> None:
        from shared.model_cache import ModelCache

        self.args = args
        self.models: ModelCache[Any, Any] = ModelCache(2)

    def run(
        self, sides: dict[str, list[Photo]], folder: PhotoFolder, seed: int, changes: dict[str, Any]
    ) -> tuple[Any, float, int]:
        from services.trainer import training
        from shared.messages import TrainingParams
        from shared.modeling import ModelSpec

        a = self.args
        params = TrainingParams(
            architecture=a.arch, image_size=a.image_size, seed=seed,
            **({"epochs": a.epochs} if a.epochs else {}), **changes,
        )  # fmt: skip
        spec = ModelSpec(
            architecture=a.arch, image_size=a.image_size, class_names=CLASSES,
            dropout=params.dropout,
        )  # fmt: skip
        job = training.Job(
            spec=spec, params=params, train=_split(sides["train"], folder),
            val=_split(sides["val"], folder), models=self.models,
        )  # fmt: skip
        started = time.monotonic()
        outcome = training.train(job, _Hooks(), threading.Event())
        seconds = time.monotonic() - started
        if outcome.model_key is not None:
            self.models.release(outcome.model_key, outcome.model)
        return outcome.model, seconds, int(outcome.final_metrics["epochs_run"] or 0)


def baseline(
    photos: Sequence[Photo], folder: PhotoFolder, seed: int, args: argparse.Namespace, epochs: int
) -> tuple[Any, float]:
    """The fixed plain Keras recipe (see the module docstring)."""
    import keras

    from services.trainer.dataset import class_weights
    from shared.images import decode_images

    keras.utils.set_random_seed(seed)
    size = args.image_size
    x = decode_images([folder.data(p) for p in photos], size)
    y = np.array([CLASSES.index(p.tag) for p in photos], np.int32)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.RandomFlip("horizontal_and_vertical", seed=seed)(inputs)
    h = keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1)(h)
    if args.arch.endswith("V2"):
        h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(h)
    else:
        h = keras.layers.Lambda(keras.applications.resnet.preprocess_input)(h)
    base = getattr(keras.applications, args.arch)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg"
    )
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(base(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    started = time.monotonic()
    try:
        model.fit(
            x, y, batch_size=16, epochs=epochs, shuffle=True, verbose=0,
            class_weight=class_weights(y, len(CLASSES)),
        )  # fmt: skip
    finally:
        # The global seed would reach the product's next run: tf.data's seeded shuffle mixes
        # it in, so the product's shuffle would depend on which baseline ran before it.
        import tensorflow as tf

        tf.random.set_seed(None)
    return model, time.monotonic() - started


def _save(path: Path | None, runs: Sequence[Run]) -> None:
    """Every run so far, as JSON (rewritten after each run: an interrupted bench keeps them)."""
    if path is not None:
        path.write_text(json.dumps([r.__dict__ for r in runs], indent=1))


def summarize(runs: Sequence[Run], size: str, recipe: str) -> tuple[float, float, float]:
    scores = [r.macro_f1 for r in runs if r.size == size and r.recipe == recipe]
    return statistics.fmean(scores), min(scores), max(scores)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.messages import TrainingParams

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ResNet50V2")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=0, help="default: the product's default")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", default=f"all,{SMALL}")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--ablation", action="store_true", help="each ingredient off in turn")
    parser.add_argument(
        "--ablation-extra", action="store_true", help="also each default-off ingredient on"
    )
    parser.add_argument("--no-baseline", action="store_true", help="ablation only")
    parser.add_argument("--variants-only", action="store_true", help="not the product itself")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="JSON",
        help="also the product with these request changes, e.g. '{\"batch_size\": 8}'",
    )
    parser.add_argument("--out", type=Path, help="write every run as JSON")
    args = parser.parse_args(argv)
    epochs = args.epochs or TrainingParams.model_fields["epochs"].default

    folder = PhotoFolder(args.photos, SIMULATOR_SEED)
    first = [p for p in folder.photos if p.season == 0]
    later = [p for p in folder.photos if p.season == 1]
    print(
        f"{len(first)} first-season photos ({len({p.source for p in first})} sources), "
        f"{len(later)} later-season photos {dict(Counter(p.tag for p in later))}; "
        f"{args.arch} at {args.image_size} px, {epochs} epochs",
        flush=True,
    )
    recipes = ABLATIONS if args.ablation else {"product (all on)": {}}
    if args.ablation_extra:
        recipes = {**recipes, **EXTRA_ABLATIONS}
    recipes = {**recipes, **{v: json.loads(v) for v in args.variant}}
    if args.variants_only:
        recipes = {v: json.loads(v) for v in args.variant}
        args.no_baseline = True  # the ratio is the product's
    product = Product(args)
    runs: list[Run] = []
    sizes = args.sizes.split(",")

    def sides_of(size: str, seed: int) -> dict[str, list[Photo]]:
        pool = first if size == "all" else small_subset(first, int(size), seed)
        return product_split(pool, seed)

    def run_product(size: str, seed: int, recipe: str) -> None:
        sides = sides_of(size, seed)
        model, seconds, ran = product.run(sides, folder, seed, recipes[recipe])
        f1 = score(model, later, folder, args.image_size, tta=EVALUATOR_TTA)  # as shipped
        other = score(model, later, folder, args.image_size, tta=not EVALUATOR_TTA)
        runs.append(Run(size, seed, recipe, f1, seconds, len(sides["train"]), ran, other))
        _save(args.out, runs)
        print(
            f"size {size:>3} seed {seed} {recipe:<36} later macro F1 {f1:.3f}  "
            f"{seconds:6.1f} s  ({len(sides['train'])} train, "
            f"{len(sides['val'])} val, {ran} epochs; {OTHER_TTA} {other:.3f})",
            flush=True,
        )

    def run_baseline(size: str, seed: int) -> None:
        seen = sides_of(size, seed)["train"]
        model, seconds = baseline(seen, folder, seed, args, epochs)
        f1 = score(model, later, folder, args.image_size)
        runs.append(Run(size, seed, "baseline", f1, seconds, len(seen), epochs))
        _save(args.out, runs)
        print(
            f"size {size:>3} seed {seed} {'baseline (plain Keras)':<36} later macro F1 "
            f"{f1:.3f}  {seconds:6.1f} s  ({len(seen)} train, {epochs} epochs)",
            flush=True,
        )

    # The comparison first (every size and seed), then the other recipes: an interrupted
    # ablation still leaves the target's figures complete.
    names = list(recipes)
    for size in sizes:
        for seed in range(args.seeds):
            run_product(size, seed, names[0])
            if not args.no_baseline:
                run_baseline(size, seed)
    for size in sizes:
        for seed in range(args.seeds):
            for recipe in names[1:]:
                run_product(size, seed, recipe)

    ratios: dict[str, float] = {}
    print("\nlater-season macro F1, mean (min..max) over seeds:")
    for size in sizes:
        for recipe in [*recipes, *([] if args.no_baseline else ["baseline"])]:
            mean, low, high = summarize(runs, size, recipe)
            secs = max(r.seconds for r in runs if r.size == size and r.recipe == recipe)
            print(
                f"  size {size:>3}  {recipe:<36} {mean:.3f} ({low:.3f}..{high:.3f})"
                f"  longest training {secs / 60:.1f} min"
            )
        if not args.no_baseline:
            product_f1 = summarize(runs, size, "product (all on)")[0]
            baseline_f1 = summarize(runs, size, "baseline")[0]
            ratios[size] = (1 - product_f1) / max(1e-9, 1 - baseline_f1)
            print(f"  size {size:>3}  error ratio product/baseline {ratios[size]:.3f}")
        other = [
            r.other_tta_f1
            for r in runs
            if r.size == size and r.recipe == "product (all on)" and r.other_tta_f1 is not None
        ]
        if other:
            print(
                f"  size {size:>3}  product {OTHER_TTA} "
                f"{statistics.fmean(other):.3f} ({min(other):.3f}..{max(other):.3f})"
            )
    if not ratios:
        return 0
    worst = max(ratios.values())
    print(
        json.dumps(
            {
                "bench": "quality",
                "ratio": round(worst, 3),
                "ratios": {k: round(v, 3) for k, v in ratios.items()},
                "target": TARGET,
                "pass": worst <= TARGET,
            }
        )
    )
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
