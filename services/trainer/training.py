"""The training loop: blocking, run in a worker thread, reporting through :class:`Hooks`.

    network: a compiled one of the same shape kept from an earlier request, or built
      (spec) and compiled ─▶ fresh initial weights from the seed ─▶ BatchNorm momentum
      for the epoch length
      ─▶ restore the last checkpoint (resume) ─▶ fit, phase by phase (frozen base, then all)
           each batch start: the learning rate of the schedule (warm-up, cosine decay)
           each batch end: stop flag (SIGTERM) and the hard time limit
           each epoch end: BatchNorm statistics re-estimated, validation in inference
             mode, hooks.epoch_end (row + checkpoint + progress, one transaction)
      ─▶ restore the best epoch's weights ─▶ re-estimate BatchNorm statistics ─▶ Outcome

Reusing a network (``shared.model_cache``) skips building it and, above all, tracing its
training step again (ResNet50: 25-45 s on two CPU cores). Its weights are drawn again from
the request's seed (``initialize_weights``), its optimizer state zeroed, its BatchNorm
momentum is a variable read at run time; only networks trained from scratch without a
frozen phase are reused (ImageNet weights are loaded by building).

Nothing here touches the database or the event loop: :class:`Hooks` does, from this
thread, through ``asyncio.run_coroutine_threadsafe`` (``services/trainer/recorder.py``).

BatchNorm: trained from scratch on a few hundred images, a ResNet's moving statistics
lag behind its weights at Keras' default momentum (0.99 needs ~300 steps), so inference
mode predicts nearly one class. Three remedies, all applied: the momentum is set so the
statistics settle within an epoch; at each epoch end the statistics are re-estimated from
(up to ``STATS_IMAGES``) training images before validating, so the validation figure that
early stopping and the choice of the kept epoch use is the one inference will see with the
statistics stored in that epoch's checkpoint; and after training they are re-estimated
over the whole training split ("precise BN").

The loss is cross-entropy with label smoothing; the optimizer has decoupled weight decay;
the learning rate warms up linearly, then follows a cosine to zero (:func:`learning_rate_at`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from services.trainer.augment import Augmentation
from services.trainer.dataset import (
    Split,
    class_weights,
    evaluation_dataset,
    passes_per_epoch,
    steps_per_epoch,
    training_dataset,
)
from services.trainer.records import (
    MAXIMISED,
    EpochResult,
    Hooks,
    Outcome,
    TrainingAbandoned,
    monitor_of,
)
from shared.errors import PermanentError
from shared.messages import TrainingParams
from shared.model_cache import ModelCache
from shared.modeling import (
    ModelSpec,
    base_of,
    batchnorm_layers,
    build_model,
    initialize_weights,
    is_tf_variable,
    momentum_for_steps,
    set_batchnorm_momentum,
    use_runtime_batchnorm_momentum,
)

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

# Training images whose batch statistics set BatchNorm's before each epoch's validation.
STATS_IMAGES = 256


class _TimeUp(Exception):
    """The hard time limit was reached in the middle of an epoch."""


@dataclass(frozen=True)
class Accelerator:
    """How to train on this machine (see :func:`configure_accelerator`)."""

    strategy: Any = None
    jit_compile: bool = False
    mixed_precision: bool = False
    n_gpus: int = 0


_ACCELERATOR: Accelerator | None = None


def configure_accelerator(*, mixed_precision: bool = True, xla: bool = True) -> Accelerator:
    """Mixed precision and XLA when a GPU is present; MirroredStrategy with several.

    Process-wide (the Keras dtype policy is global); the first call decides.
    """
    global _ACCELERATOR
    if _ACCELERATOR is not None:
        return _ACCELERATOR
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised
            pass
    use_mp = bool(gpus) and mixed_precision
    if use_mp:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    _ACCELERATOR = Accelerator(
        strategy=strategy, jit_compile=bool(gpus) and xla, mixed_precision=use_mp, n_gpus=len(gpus)
    )
    logger.info(
        "accelerator: %d GPU(s), mixed precision %s, XLA %s, strategy %s",
        len(gpus), use_mp, _ACCELERATOR.jit_compile, type(strategy).__name__,
    )  # fmt: skip
    return _ACCELERATOR


@dataclass
class Job:
    """Everything one training needs; built by the handler, run by :func:`train`."""

    spec: ModelSpec
    params: TrainingParams
    train: Split
    val: Split
    # Epochs finished by earlier deliveries (from training_epochs), and the last checkpoint.
    history: list[EpochResult] = field(default_factory=list)
    checkpoint_epoch: int = 0
    max_seconds: float = math.inf
    cache_dir: str = ""
    accelerator: Accelerator = field(default_factory=Accelerator)
    # Compiled networks kept between requests; the caller releases ``Outcome.model`` back.
    models: ModelCache[Hashable, Any] | None = None


def reuse_key(job: Job) -> Hashable | None:
    """What a kept network must match to train ``job`` (None: build one for this job only).

    Everything baked into the traced training step: the spec (architecture, size, classes,
    dropout), the optimizer and its weight decay, the label smoothing and XLA. Not the
    learning rate (a variable), nor the seed.
    """
    params = job.params
    if job.spec.weights != "none" or params.weights != "none" or frozen_epochs(params):
        return None
    return (
        job.spec,
        params.optimizer,
        params.weight_decay,
        params.label_smoothing,
        job.accelerator.jit_compile,
    )


def make_optimizer(name: str, learning_rate: float, weight_decay: float = 0.0) -> Any:
    """The optimizer ``name``; ``weight_decay`` > 0 adds Keras's decoupled weight decay."""
    import keras

    from services.trainer.optimizers import (  # lazy: TensorFlow ops
        FusedAdam,
        FusedSGD,
    )

    decay = weight_decay or None
    if name == "sgd":
        return FusedSGD(learning_rate, momentum=0.9, weight_decay=decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, weight_decay=decay)
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate, weight_decay=decay)
    return FusedAdam(learning_rate, weight_decay=decay)


def augmentation_of(params: TrainingParams) -> Augmentation | None:
    """The request's augmentations, or None when ``augment`` is off."""
    if not params.augment:
        return None
    return Augmentation(
        geometry=params.augment_geometry,
        light=params.augment_light,
        color=params.augment_color,
        crop_min_area=params.crop_min_area,
    )


def learning_rate_at(
    step: int, *, total_steps: int, warmup_steps: int, peak: float, schedule: str
) -> float:
    """The learning rate of training step ``step`` (0-based) out of ``total_steps``.

    Linear warm-up from ``peak / warmup_steps`` to ``peak`` over the first ``warmup_steps``
    (large updates on freshly initialised weights are what makes the first epochs of a
    small dataset erratic), then ``peak`` ("constant") or a cosine from ``peak`` down to
    zero at the last step ("cosine").
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(params: TrainingParams, steps_per_epoch: int) -> int:
    """``warmup_epochs`` in steps, at most a fifth of the training (a short training warms up
    briefly instead of spending most of its steps below the peak rate)."""
    return min(params.warmup_epochs * steps_per_epoch, params.epochs * steps_per_epoch // 5)


def smoothed_loss(label_smoothing: float, n_classes: int) -> Any:
    """Sparse categorical cross-entropy against labels smoothed by ``label_smoothing``."""
    import keras

    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        target = keras.ops.one_hot(labels, n_classes)
        return keras.losses.categorical_crossentropy(
            target, y_pred, label_smoothing=label_smoothing
        )

    return loss


def frozen_epochs(params: TrainingParams) -> int:
    """Epochs with a frozen base: only meaningful on top of pretrained weights."""
    return params.freeze_epochs if params.weights != "none" else 0


def _float(value: Any) -> float | None:
    if value is None:
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _learning_rate(model: keras.Model) -> float | None:
    import keras

    try:
        return _float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # a schedule or an exotic optimizer: not worth failing over
        return None


def _make_callback(loop: _Loop) -> Any:
    """A Keras callback forwarding to ``loop``: epoch timing, learning rate and limits per
    batch, epoch ends."""
    import keras

    class EpochCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            loop.epoch_started = time.monotonic()
            loop.epoch_index = epoch

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            loop.set_learning_rate(batch)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loop.check_limits()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            loop.epoch_finished(epoch + 1, logs or {})

    return EpochCallback()


class _Loop:
    """State of one :func:`train` call, shared with its Keras callback."""

    def __init__(self, job: Job, hooks: Hooks, stop: threading.Event) -> None:
        self.job = job
        self.hooks = hooks
        self.stop = stop
        self.deadline = time.monotonic() + job.max_seconds
        self.history = list(job.history)
        self.monitor = monitor_of(len(job.val))
        # One validation image of slack on the accuracy (none on a loss).
        self.tolerance = 1 / len(job.val) if self.monitor in MAXIMISED else 0.0
        self.best_epoch, self.best_value = 0, math.inf
        for row in self.history:
            self.consider(row)
        self.epoch_started = time.monotonic()
        self.epoch_index = 0
        self.timed_out = False
        self.model: keras.Model | None = None
        self.validator: Validator | None = None
        self.steps_per_epoch = 1
        self.passes = 1  # times an epoch shows the training split
        self.lr_factor = 1.0  # fine_tune_lr_factor once a frozen base is unfrozen

    def consider(self, result: EpochResult) -> None:
        """``result`` becomes the kept epoch when it is within ``tolerance`` of the best
        figure seen so far (``best_value``, kept as the best, so slack does not drift)."""
        value = result.monitored(self.monitor)
        if value == math.inf:  # no figure: kept only when nothing else is
            self.best_epoch = self.best_epoch or result.epoch
            return
        self.best_value = min(self.best_value, value)
        if value <= self.best_value + self.tolerance + 1e-9:
            self.best_epoch = result.epoch

    @property
    def last_epoch(self) -> int:
        return self.history[-1].epoch if self.history else 0

    @property
    def patience_exhausted(self) -> bool:
        waited = self.last_epoch - self.best_epoch
        return self.best_epoch > 0 and waited >= self.job.params.early_stopping_patience

    def check_limits(self) -> None:
        if self.stop.is_set():
            raise TrainingAbandoned("stop requested")
        if time.monotonic() > self.deadline:
            self.timed_out = True
            raise _TimeUp

    def set_learning_rate(self, batch: int) -> None:
        assert self.model is not None
        params = self.job.params
        rate = learning_rate_at(
            self.epoch_index * self.steps_per_epoch + batch,
            total_steps=params.epochs * self.steps_per_epoch,
            warmup_steps=warmup_steps(params, self.steps_per_epoch),
            peak=params.learning_rate,
            schedule=params.lr_schedule,
        )
        self.model.optimizer.learning_rate.assign(rate * self.lr_factor)

    def epoch_finished(self, epoch: int, logs: dict[str, Any]) -> None:
        assert self.model is not None
        if self.stop.is_set():
            raise TrainingAbandoned("stop requested")
        if self.validator is not None:
            logs = {**logs, **self.validator(self.model)}
        result = EpochResult(
            epoch=epoch,
            loss=_float(logs.get("loss")),
            accuracy=_float(logs.get("accuracy")),
            val_loss=_float(logs.get("val_loss")),
            val_accuracy=_float(logs.get("val_accuracy")),
            learning_rate=_learning_rate(self.model),
            seconds=time.monotonic() - self.epoch_started,
            images=len(self.job.train) * self.passes,
        )
        self.consider(result)
        self.history.append(result)
        self.hooks.epoch_end(result, self.model, self.model.optimizer.variables, self.best_epoch)
        logger.info(
            "epoch %d/%d: loss %.4f, val_loss %s, val_accuracy %s (%.1fs)",
            epoch, self.job.params.epochs, result.loss or float("nan"),
            _fmt(result.val_loss), _fmt(result.val_accuracy), result.seconds,
        )  # fmt: skip
        if self.patience_exhausted or time.monotonic() > self.deadline:
            self.model.stop_training = True


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _reset_optimizer(model: keras.Model, learning_rate: float) -> None:
    """A kept network's optimizer as new: zero state, step 0, this request's learning rate."""
    import tensorflow as tf

    zero = _ZEROS.get(model)
    if zero is None:
        variables = list(model.optimizer.variables)

        def zero_all() -> None:
            for variable in variables:
                variable.assign(tf.zeros(variable.shape, dtype=variable.dtype))

        zero = _ZEROS[model] = tf.function(zero_all)
    zero()
    model.optimizer.learning_rate = learning_rate


_ZEROS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _compile(model: keras.Model, job: Job) -> None:
    params = job.params
    model.compile(
        optimizer=make_optimizer(params.optimizer, params.learning_rate, params.weight_decay),
        loss=smoothed_loss(params.label_smoothing, model.output_shape[-1]),
        metrics=["accuracy"],
        jit_compile=job.accelerator.jit_compile,
    )
    # Build the optimizer now so a checkpoint's optimizer state can be loaded into it.
    model.optimizer.build(model.trainable_variables)
    # And the metrics: without a distribution strategy Keras creates their variables while
    # tracing the first training step, and TensorFlow then traces that step a second time
    # (a function that created variables is retraced without them): ~15 s more for the
    # first request of a ResNet50 on 2 CPU cores. Built eagerly here, it is traced once.
    n_classes = model.output_shape[-1]
    model.compute_metrics(
        None, np.zeros((1,), np.int64), np.full((1, n_classes), 1 / n_classes, np.float32), None
    )
    model.reset_metrics()


def recalibrate_batchnorm(model: keras.Model, dataset: Any) -> int:
    """Set every trainable BatchNorm layer's moving statistics to the average batch statistics.

    Runs the model in training mode over ``dataset`` with momentum 0, so after each batch
    the moving statistics *are* that batch's, and averages them weighted by batch size.
    Weights are not changed. Returns the number of layers re-estimated.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    shared = momenta[0] if is_tf_variable(momenta[0]) else None
    sums = [
        [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers],
        [np.zeros(layer.moving_variance.shape, np.float64) for layer in layers],
    ]
    seen = 0
    try:
        if shared is not None:  # read at run time: the traced forward pass is kept
            shared_momentum = float(shared.numpy())
            shared.assign(0.0)
        else:
            for layer in layers:
                layer.momentum = 0.0
        forward = _training_forward(model, keep=shared is not None)
        for batch in dataset:
            images = batch[0] if isinstance(batch, tuple | list) else batch
            n = int(images.shape[0])
            forward(images)
            for i, layer in enumerate(layers):
                sums[0][i] += n * np.asarray(layer.moving_mean.numpy(), np.float64)
                sums[1][i] += n * np.asarray(layer.moving_variance.numpy(), np.float64)
            seen += n
        if seen:
            for i, layer in enumerate(layers):
                layer.moving_mean.assign((sums[0][i] / seen).astype(np.float32))
                layer.moving_variance.assign((sums[1][i] / seen).astype(np.float32))
    finally:
        if shared is not None:
            shared.assign(shared_momentum)
        else:
            for layer, momentum in zip(layers, momenta, strict=True):
                layer.momentum = momentum
    return len(layers) if seen else 0


_FORWARD: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _training_forward(model: keras.Model, *, keep: bool) -> Any:
    """``model(x, training=True)`` as a graph; kept with the model when ``keep``."""
    import tensorflow as tf

    forward = _FORWARD.get(model) if keep else None
    if forward is None:
        forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
        if keep:
            _FORWARD[model] = forward
    return forward


@contextlib.contextmanager
def seeded_globally(seed: int) -> Iterator[None]:
    """Python's, NumPy's and TensorFlow's global seeds set to ``seed`` inside, reset after.

    TensorFlow derives every op seed given explicitly (the training shuffle's) from the
    global seed too, when one is set: left set, it would change the shuffles of every later
    request of the process, so that the same seed gave another model after an ImageNet one.
    """
    import random

    import keras
    import tensorflow as tf

    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        tf.random.set_seed(None)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def train(job: Job, hooks: Hooks, stop: threading.Event) -> Outcome:
    """Train ``job`` (resuming after ``job.checkpoint_epoch``); blocking, for a worker thread.

    Raises :class:`TrainingAbandoned` when ``stop`` is set, :class:`PermanentError` when
    no epoch finished within the time limit.
    """

    params, spec = job.params, job.spec
    n_classes = len(spec.class_names)
    weights = class_weights(job.train.labels, n_classes)
    batch_size = min(params.batch_size, len(job.train))
    passes = passes_per_epoch(len(job.train), params.min_images_per_epoch)
    steps = steps_per_epoch(len(job.train) * passes, batch_size)
    momentum = momentum_for_steps(steps)
    train_ds = training_dataset(
        job.train, spec.image_size, batch_size, augment=augmentation_of(params) or False,
        seed=params.seed, cache_dir=job.cache_dir, passes=passes,
    )  # fmt: skip
    stats_ds = evaluation_dataset(
        job.train, spec.image_size, batch_size, cache_dir=job.cache_dir, cache_name="stats"
    )
    loop = _Loop(job, hooks, stop)
    loop.steps_per_epoch, loop.passes = steps, passes
    if len(job.val):
        val_ds = evaluation_dataset(job.val, spec.image_size, batch_size, cache_dir=job.cache_dir)
        stats_batches = max(1, STATS_IMAGES // batch_size)
        loop.validator = Validator(val_ds, stats_ds.take(stats_batches), n_classes)
    freeze = frozen_epochs(params)
    resuming = job.checkpoint_epoch > 0
    # A resumed model gets all its weights from the checkpoint: no need for the initial ones.
    build_spec = spec.model_copy(update={"weights": "none"}) if resuming else spec
    strategy = job.accelerator.strategy

    def scope() -> Any:
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    started = time.monotonic()
    key = reuse_key(job)
    model = job.models.checkout(key) if job.models is not None and key is not None else None
    reused = model is not None
    with scope():
        if model is None:
            # The initializers of a network built for this request only (the head of an
            # ImageNet one) take the request's seed. Not a kept one's: TensorFlow clears its
            # kernel caches on every global seed, so a kept network would run its first
            # steps ~10x slower; initialize_weights seeds its weights explicitly instead.
            with seeded_globally(params.seed) if key is None else contextlib.nullcontext():
                model = build_model(build_spec)
            use_runtime_batchnorm_momentum(model)
            base_of(model).trainable = loop.last_epoch >= freeze
            _compile(model, job)
        if key is not None:  # traced now on a new network: the next request finds it ready
            _reset_optimizer(model, params.learning_rate)
        set_batchnorm_momentum(model, momentum)
        if not resuming and spec.weights == "none":
            initialize_weights(model, params.seed)
    loop.model = model
    if resuming:
        restored = hooks.restore(model, model.optimizer.variables, job.checkpoint_epoch)
        logger.info(
            "resumed after epoch %d (optimizer state %s)",
            job.checkpoint_epoch, "restored" if restored else "fresh",
        )  # fmt: skip
    logger.info(
        "training %s at %d px on %d images (%d val), %d pass(es) and %d steps/epoch, "
        "BatchNorm momentum %.3f%s",
        spec.architecture, spec.image_size, len(job.train), len(job.val), passes, steps, momentum,
        f" (network kept from an earlier request, ready in {time.monotonic() - started:.2f} s)"
        if reused
        else f" (network built in {time.monotonic() - started:.2f} s)",
    )  # fmt: skip

    callback = _make_callback(loop)
    stopped = "epochs"
    dirty = False
    try:
        for phase_end, trainable in ((min(freeze, params.epochs), False), (params.epochs, True)):
            if loop.last_epoch >= phase_end:
                continue
            if loop.patience_exhausted:
                break
            base = base_of(model)
            if base.trainable != trainable:
                base.trainable = trainable
                with scope():  # a new optimizer for the new set of trainable weights
                    _compile(model, job)
            loop.lr_factor = params.fine_tune_lr_factor if trainable and freeze else 1.0
            model.fit(
                train_ds,
                epochs=phase_end,
                initial_epoch=loop.last_epoch,
                class_weight=weights,
                callbacks=[callback],
                verbose=0,
            )
            if loop.patience_exhausted or time.monotonic() > loop.deadline:
                break
    except _TimeUp:
        # The interrupted epoch changed the weights after its last checkpoint.
        dirty = True
    if loop.timed_out or (time.monotonic() > loop.deadline and loop.last_epoch < params.epochs):
        stopped = "time_limit"
    elif loop.patience_exhausted and loop.last_epoch < params.epochs:
        stopped = "early_stopping"
    if not loop.history:
        raise PermanentError(
            f"no epoch finished within the time limit of {job.max_seconds:.0f} s "
            "(TRAINER_MAX_SECONDS); use fewer images, a smaller network or image size"
        )
    if stop.is_set():
        raise TrainingAbandoned("stop requested")

    best = loop.best_epoch or loop.last_epoch
    if best != loop.last_epoch or dirty:
        hooks.load_best(model, best)
        logger.info("restored the weights of epoch %d (best %s)", best, loop.monitor)
    finishing = time.monotonic()
    recalibrated = 0
    if base_of(model).trainable:  # the base was trained in at least one epoch
        recalibrated = recalibrate_batchnorm(model, stats_ds)
    recalibrated_at = time.monotonic()
    final = _final_metrics(model, loop, best)
    logger.info(
        "BatchNorm re-estimated (%d layers) in %.2f s, validated in %.2f s",
        recalibrated, recalibrated_at - finishing, time.monotonic() - recalibrated_at,
    )  # fmt: skip
    return Outcome(
        model=model,
        history=loop.history,
        best_epoch=best,
        stopped=stopped,
        bn_momentum=momentum,
        recalibrated_layers=recalibrated,
        final_metrics={
            **final,
            "stopped": stopped,
            "epochs_run": loop.last_epoch,
            "monitor": loop.monitor,
        },
        class_weights=weights,
        model_key=key,
        reused=reused,
        finish_seconds=time.monotonic() - finishing,
    )


def _final_metrics(
    model: keras.Model, loop: _Loop, best: int
) -> dict[str, float | int | str | None]:
    """The best epoch's metrics, and the final model's validation metrics in inference mode."""
    row = next(r for r in loop.history if r.epoch == best)
    metrics: dict[str, float | int | str | None] = {
        "loss": row.loss,
        "accuracy": row.accuracy,
        "val_loss": row.val_loss,
        "val_accuracy": row.val_accuracy,
    }
    if loop.validator is not None:
        values = loop.validator.score(model)
        metrics["final_val_loss"] = values["val_loss"]
        metrics["final_val_accuracy"] = values["val_accuracy"]
    return metrics


class Validator:
    """Validation as inference will see it: BatchNorm statistics re-estimated, then scored.

    ``stats`` (training images, unaugmented) set every BatchNorm layer's moving statistics
    to their batch statistics (:func:`recalibrate_batchnorm`); the statistics stay, so the
    epoch's checkpoint holds the network that was validated. The loss is plain
    cross-entropy (no label smoothing), whatever the training loss.
    """

    def __init__(self, val: Any, stats: Any, n_classes: int) -> None:
        self.val = val
        self.stats = stats
        self.n_classes = n_classes

    def __call__(self, model: keras.Model) -> dict[str, float | None]:
        if base_of(model).trainable:
            recalibrate_batchnorm(model, self.stats)
        return self.score(model)

    def score(self, model: keras.Model) -> dict[str, float | None]:
        forward = _inference_forward(model)
        losses, correct, seen = 0.0, 0, 0
        for images, labels in self.val:
            probabilities = np.asarray(forward(images), np.float64)
            truth = np.asarray(labels, np.int64)
            picked = probabilities[np.arange(len(truth)), truth]
            losses += float(-np.log(np.clip(picked, 1e-7, 1.0)).sum())
            correct += int((probabilities.argmax(axis=1) == truth).sum())
            seen += len(truth)
        if not seen:
            return {"val_loss": None, "val_accuracy": None}
        return {"val_loss": losses / seen, "val_accuracy": correct / seen}


_INFERENCE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _inference_forward(model: keras.Model) -> Any:
    """``model(x, training=False)`` as a graph, kept with the model."""
    import tensorflow as tf

    forward = _INFERENCE.get(model)
    if forward is None:
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        _INFERENCE[model] = forward
    return forward
