"""The training loop's logic on a tiny network (no servers): resume, early stopping, limits."""

from __future__ import annotations

import threading
from typing import Any

import keras
import numpy as np
import pytest

from services.trainer import training
from services.trainer.dataset import Split
from services.trainer.records import EpochResult, TrainingAbandoned
from services.trainer.training import Job, recalibrate_batchnorm
from shared.errors import PermanentError
from shared.messages import TrainingParams
from shared.model_cache import ModelCache
from shared.modeling import (
    ModelSpec,
    build_model,
    initialize_weights,
    use_runtime_batchnorm_momentum,
)
from tests.plugins.datasets import photo

CLASSES = ("vine", "ground", "grass")


def tiny_model(spec: ModelSpec) -> keras.Model:
    """Same outline as ``build_model`` (a layer named "base", a softmax head), but tiny."""
    inputs = keras.Input(spec.input_shape)
    base = keras.Sequential(
        [
            keras.Input(spec.input_shape),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="base",
    )
    x = keras.layers.Dropout(spec.dropout)(base(inputs))
    outputs = keras.layers.Dense(len(spec.class_names), activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "build_model", tiny_model)


def split(n_per_class: int, offset: int = 0) -> Split:
    rows = [
        (photo(tag, offset + i, width=32, height=32), tag, "JPEG")
        for tag in CLASSES
        for i in range(n_per_class)
    ]
    return Split.from_rows(rows, CLASSES)


TRAIN, VAL = split(4), split(2, offset=10)


def job(**params: Any) -> Job:
    p = TrainingParams(
        **{
            "architecture": "ResNet50",
            "image_size": 32,
            "batch_size": 4,
            "epochs": 3,
            "min_images_per_epoch": 0,
            **params,
        }
    )
    spec = ModelSpec(architecture="ResNet50", image_size=32, class_names=CLASSES)
    return Job(spec=spec, params=p, train=TRAIN, val=VAL)


class MemoryHooks:
    """Checkpoints in a dict, like the Recorder keeps them in Postgres."""

    def __init__(self) -> None:
        self.results: list[EpochResult] = []
        self.checkpoints: dict[int, list[np.ndarray]] = {}
        self.restored: list[int] = []
        self.best_loaded: list[int] = []
        self.base_trainable: list[bool] = []

    def restore(self, model: keras.Model, optimizer_variables: Any, epoch: int) -> bool:
        self.restored.append(epoch)
        for v, a in zip(model.weights, self.checkpoints[epoch], strict=True):
            v.assign(a)
        return False

    def epoch_end(self, result: EpochResult, model: keras.Model, opt: Any, best: int) -> None:
        self.results.append(result)
        self.base_trainable.append(model.get_layer("base").trainable)
        self.checkpoints[result.epoch] = [v.numpy().copy() for v in model.weights]

    def load_best(self, model: keras.Model, epoch: int) -> None:
        self.best_loaded.append(epoch)
        for v, a in zip(model.weights, self.checkpoints[epoch], strict=True):
            v.assign(a)


def test_runs_every_epoch_and_reports_each() -> None:
    hooks = MemoryHooks()
    outcome = training.train(job(epochs=3, early_stopping_patience=5), hooks, threading.Event())
    assert [r.epoch for r in hooks.results] == [1, 2, 3]
    assert all(r.val_loss is not None and r.images == len(TRAIN) for r in hooks.results)
    assert outcome.stopped == "epochs" and outcome.final_metrics["epochs_run"] == 3
    assert outcome.best_epoch == min(hooks.results, key=lambda r: r.val_loss or 0).epoch
    assert outcome.recalibrated_layers == 1
    assert outcome.images_per_second and outcome.images_per_second > 0


def test_a_small_split_is_repeated_up_to_the_images_per_epoch() -> None:
    hooks = MemoryHooks()
    params = {"epochs": 1, "early_stopping_patience": 5}
    training.train(job(min_images_per_epoch=len(TRAIN) * 2 + 1, **params), hooks, threading.Event())
    assert [r.images for r in hooks.results] == [len(TRAIN) * 3]


def test_the_training_step_is_traced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metric variables created inside the first trace make TensorFlow trace it again."""
    traces: list[int] = []

    def counted(spec: ModelSpec) -> keras.Model:
        model = tiny_model(spec)
        step = model.train_step

        def train_step(data: Any) -> Any:
            traces.append(1)  # runs once per trace, not per step
            return step(data)

        model.train_step = train_step
        return model

    monkeypatch.setattr(training, "build_model", counted)
    training.train(job(epochs=2), MemoryHooks(), threading.Event())
    assert len(traces) == 1


def scripted_validation(monkeypatch: pytest.MonkeyPatch, accuracies: list[float]) -> None:
    """Each epoch's validation gives the next of ``accuracies`` (loss: 1 - accuracy)."""
    figures = iter(accuracies)

    def validate(self: training.Validator, model: keras.Model) -> dict[str, float]:
        accuracy = next(figures)
        return {"val_loss": 1 - accuracy, "val_accuracy": accuracy}

    monkeypatch.setattr(training.Validator, "__call__", validate)


def test_early_stopping_restores_the_best_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_validation(monkeypatch, [0.8, 0.5, 0.6, 0.9])
    hooks = MemoryHooks()
    outcome = training.train(job(epochs=6, early_stopping_patience=2), hooks, threading.Event())
    assert outcome.stopped == "early_stopping"
    assert [r.epoch for r in hooks.results] == [1, 2, 3]
    assert outcome.best_epoch == 1 and hooks.best_loaded == [1]
    assert outcome.final_metrics["monitor"] == "val_accuracy"


def test_one_validation_image_of_slack_keeps_the_later_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six validation images: 4/6 after 5/6 is within one image, so the later epoch is kept
    and training goes on; 3/6 is not."""
    scripted_validation(monkeypatch, [3 / 6, 5 / 6, 4 / 6, 4 / 6, 3 / 6, 3 / 6])
    hooks = MemoryHooks()
    outcome = training.train(job(epochs=8, early_stopping_patience=2), hooks, threading.Event())
    assert outcome.stopped == "early_stopping" and len(hooks.results) == 6
    assert outcome.best_epoch == 4 and hooks.best_loaded == [4]


def test_an_epoch_as_good_as_the_best_is_kept_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The learning rate decays to zero: of two epochs that validate alike, the later."""
    scripted_validation(monkeypatch, [0.5, 0.75, 0.5, 0.75, 0.5])
    hooks = MemoryHooks()
    outcome = training.train(job(epochs=5, early_stopping_patience=2), hooks, threading.Event())
    assert outcome.stopped == "epochs" and len(hooks.results) == 5
    assert outcome.best_epoch == 4 and hooks.best_loaded == [4]


def test_resumes_after_the_checkpoint_without_repeating_epochs() -> None:
    first = MemoryHooks()
    training.train(job(epochs=1), first, threading.Event())
    resumed = job(epochs=3, early_stopping_patience=5)
    resumed.history = list(first.results)
    resumed.checkpoint_epoch = 1
    hooks = MemoryHooks()
    hooks.checkpoints = dict(first.checkpoints)
    outcome = training.train(resumed, hooks, threading.Event())
    assert hooks.restored == [1]
    assert [r.epoch for r in hooks.results] == [2, 3]
    assert [r.epoch for r in outcome.history] == [1, 2, 3]


def test_exhausted_patience_in_history_trains_no_more() -> None:
    first = MemoryHooks()
    training.train(job(epochs=1), first, threading.Event())
    worse = EpochResult(2, 9.0, 0.1, None, None, 1e-3, 1.0, len(TRAIN))  # no figure: worst
    resumed = job(epochs=5, early_stopping_patience=1)
    resumed.history = [first.results[0], worse]
    resumed.checkpoint_epoch = 2
    hooks = MemoryHooks()
    hooks.checkpoints = {**first.checkpoints, 2: first.checkpoints[1]}
    outcome = training.train(resumed, hooks, threading.Event())
    assert hooks.results == []
    assert outcome.best_epoch == 1 and hooks.best_loaded == [1]


def test_stop_flag_abandons_without_reporting() -> None:
    stop = threading.Event()
    stop.set()
    hooks = MemoryHooks()
    with pytest.raises(TrainingAbandoned):
        training.train(job(), hooks, stop)
    assert hooks.results == []


def test_time_limit_before_the_first_epoch_is_a_clear_error() -> None:
    limited = job()
    limited.max_seconds = 0
    with pytest.raises(PermanentError, match="no epoch finished within the time limit"):
        training.train(limited, MemoryHooks(), threading.Event())


def test_frozen_base_first_then_fine_tuned() -> None:
    hooks = MemoryHooks()
    training.train(
        job(epochs=3, freeze_epochs=2, weights="/some/base.weights.h5", early_stopping_patience=9),
        hooks,
        threading.Event(),
    )
    assert hooks.base_trainable == [False, False, True]
    # The whole network fine-tunes at fine_tune_lr_factor (0.1) of the schedule's rate: the
    # frozen epochs warm up and decay from the peak, the last one is ten times lower still.
    rates = [r.learning_rate or 0 for r in hooks.results]
    peak = TrainingParams.model_fields["learning_rate"].default
    assert 0 < rates[2] < 0.1 * peak and rates[0] <= peak


def test_the_kept_epoch_is_chosen_on_the_figure_the_stored_model_gives() -> None:
    """Validation runs with BatchNorm statistics re-estimated as the stored model's are, not
    with the moving averages that lag behind the weights during training."""
    hooks = MemoryHooks()
    outcome = training.train(job(epochs=3, early_stopping_patience=9), hooks, threading.Event())
    kept = next(r for r in hooks.results if r.epoch == outcome.best_epoch)
    assert outcome.recalibrated_layers == 1
    assert outcome.final_metrics["final_val_loss"] == pytest.approx(kept.val_loss, rel=1e-4)
    assert outcome.final_metrics["final_val_accuracy"] == pytest.approx(kept.val_accuracy)


def test_the_learning_rate_follows_the_schedule_epoch_by_epoch() -> None:
    hooks = MemoryHooks()
    training.train(
        job(epochs=5, warmup_epochs=1, learning_rate=0.01, early_stopping_patience=9),
        hooks,
        threading.Event(),
    )
    rates = [r.learning_rate for r in hooks.results]  # the rate of each epoch's last batch
    steps = 3  # 12 training images in batches of 4
    expected = [
        training.learning_rate_at(
            (e + 1) * steps - 1, total_steps=5 * steps, warmup_steps=steps, peak=0.01,
            schedule="cosine",
        )
        for e in range(5)
    ]  # fmt: skip
    assert rates == pytest.approx(expected, rel=1e-5)
    assert rates[0] == pytest.approx(0.01) and rates[-1] < 0.001


def test_recalibration_sets_batchnorm_statistics_to_the_data_average() -> None:
    inputs = keras.Input((2,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(inputs))
    rng = np.random.default_rng(0)
    data = rng.normal([5.0, -3.0], [2.0, 0.5], size=(64, 2)).astype(np.float32)
    batches = [(data[i : i + 16], None) for i in range(0, 64, 16)]
    assert recalibrate_batchnorm(model, batches) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), data.mean(axis=0), rtol=1e-5)
    per_batch_var = np.mean([b.var(axis=0) for b, _ in batches], axis=0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), per_batch_var, rtol=1e-4)
    assert bn.momentum == 0.99


def test_recalibration_with_a_runtime_momentum_restores_it_and_keeps_the_graph() -> None:
    inputs = keras.Input((2,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(inputs))
    momentum = use_runtime_batchnorm_momentum(model, 0.7)
    data = np.random.default_rng(1).normal(4.0, 1.0, size=(32, 2)).astype(np.float32)
    batches = [(data[i : i + 8], None) for i in range(0, 32, 8)]
    assert recalibrate_batchnorm(model, batches) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), data.mean(axis=0), rtol=1e-5)
    assert float(momentum.numpy()) == pytest.approx(0.7)
    first = training._FORWARD[model]
    recalibrate_batchnorm(model, batches)
    assert training._FORWARD[model] is first  # the traced forward pass is kept


def _weights(outcome: training.Outcome) -> list[np.ndarray]:
    return [v.numpy().copy() for v in outcome.model.weights]


def test_a_kept_network_trains_like_a_new_one_with_the_same_seed() -> None:
    cache: ModelCache[Any, Any] = ModelCache(2)
    fresh = training.train(job(epochs=2, seed=7, augment=True), MemoryHooks(), threading.Event())
    assert not fresh.reused and fresh.model_key is not None

    first = job(epochs=1, seed=3)
    first.models = cache
    other = training.train(first, MemoryHooks(), threading.Event())
    cache.release(other.model_key, other.model)

    again = job(epochs=2, seed=7, augment=True)
    again.models = cache
    hooks = MemoryHooks()
    reused = training.train(again, hooks, threading.Event())
    assert reused.reused and reused.model is other.model and len(cache) == 0
    # Same seed, same (augmented) data: the same training, bit for bit, whatever ran before.
    assert [r.loss for r in hooks.results] == [r.loss for r in fresh.history]
    for a, b in zip(_weights(reused), _weights(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    # A different seed is a different start.
    assert (
        any(not np.array_equal(a, b) for a, b in zip(_weights(other), _weights(fresh), strict=True))
        or other.history[0].loss != fresh.history[0].loss
    )


def test_only_networks_of_the_same_shape_are_reused() -> None:
    cache: ModelCache[Any, Any] = ModelCache(2)
    first = job(epochs=1)
    first.models = cache
    outcome = training.train(first, MemoryHooks(), threading.Event())
    cache.release(outcome.model_key, outcome.model)

    sgd = job(epochs=1, optimizer="sgd")
    sgd.models = cache
    assert not training.train(sgd, MemoryHooks(), threading.Event()).reused
    pretrained = job(epochs=1, weights="/some/base.weights.h5")
    pretrained.models = cache
    result = training.train(pretrained, MemoryHooks(), threading.Event())
    assert not result.reused and result.model_key is None
    assert len(cache) == 1  # still there for a matching request


def test_initialize_weights_draws_every_variable_of_a_resnet_from_the_seed() -> None:
    spec = ModelSpec(architecture="ResNet50V2", image_size=32, class_names=CLASSES, dropout=0.2)
    model = build_model(spec)
    assert initialize_weights(model, 1) == len(model.variables)
    first = [v.numpy().copy() for v in model.variables]
    initialize_weights(model, 2)
    changed = [
        not np.array_equal(a, v.numpy()) for a, v in zip(first, model.variables, strict=True)
    ]
    initialize_weights(model, 1)
    for a, v in zip(first, model.variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    kernels = [c for c, v in zip(changed, model.variables, strict=True) if "kernel" in v.path]
    assert kernels and all(kernels)


def test_initialize_weights_refuses_a_variable_it_does_not_know() -> None:
    inputs = keras.Input((3,))
    layer = keras.layers.Embedding(10, 2)
    model = keras.Model(inputs, layer(inputs))
    with pytest.raises(ValueError, match="no initializer known"):
        initialize_weights(model, 0)
