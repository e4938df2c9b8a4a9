"""The model spec and the one function that builds a network from it.

The trainer records a :class:`ModelSpec` with every model (columns of ``models``); the
evaluator and ``chouette predict`` rebuild exactly the same network from it and load
the stored weights (``shared.weight_store``). The model takes float RGB images with
values 0..255 (``shared.images``) and does its own ``preprocess_input`` inside:

    input (size, size, 3) 0..255
      → preprocessing   ResNet*: RGB→BGR minus the ImageNet channel means ("caffe")
                        ResNet*V2: scaled to -1..1 ("tf")
      → keras.applications.<Arch>(include_top=False, pooling="avg")   the "base"
      → Dropout → Dense(n_classes, softmax, float32)                   the "head"

Initial weights: ``"none"`` trains from scratch, ``"imagenet"`` loads Keras's ImageNet
file of the base through ``keras.utils.get_file`` (the cache, ``$KERAS_HOME/models`` by
default, then ``TRAINER_WEIGHTS_SOURCE``; names and hashes in ``shared.pretrained``), any
other value is a local weights file for the base (a Keras ``*_notop.h5`` or a
``.weights.h5`` of the same base) under ``TRAINER_WEIGHTS_DIR`` (``shared.weight_files``).

TensorFlow is imported on first use of :func:`build_model`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import pretrained, weight_files
from shared.choices import ARCHITECTURES, Architecture
from shared.errors import PermanentError
from shared.messages import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from shared.settings import TrainerSettings

if TYPE_CHECKING:
    import keras

BASE_NAME: Final = "base"
# BGR channel means of ImageNet ("caffe" preprocessing of the v1 ResNets).
CAFFE_BGR_MEANS: Final = (103.939, 116.779, 123.68)


class WeightsUnavailable(PermanentError):
    """Requested initial weights (ImageNet cache or a local file) cannot be loaded."""


class ModelSpec(BaseModel):
    """Everything needed to rebuild a network: stored with the model, used by the evaluator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Architecture
    image_size: int = Field(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    class_names: tuple[str, ...]
    dropout: float = Field(0.0, ge=0, lt=1)
    # Initial weights of the base: "none", "imagenet" or a local file path. Rebuilding a
    # stored model always uses "none" (its own weights are loaded afterwards).
    weights: str = "none"

    @field_validator("class_names")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError("at least two classes are needed")
        if len(set(value)) != len(value):
            raise ValueError(f"class names repeat: {value}")
        return value

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def is_v2(self) -> bool:
        return self.architecture.endswith("V2")


def imagenet_cache_path(architecture: str) -> Path:
    """Where the ImageNet weights of ``architecture``'s base (``include_top=False``) are cached."""
    entry = pretrained.weights_file(architecture)
    return pretrained.cache_dir(TrainerSettings().weights_cache_dir) / entry.file_name


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A timeout for the blocking sockets opened meanwhile (``get_file`` sets none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _imagenet_weights(architecture: str) -> str:
    """The checked ImageNet file of ``architecture``'s base, fetched by Keras when missing.

    ``keras.utils.get_file`` (the file name and hash keras.applications use) looks in
    the cache and downloads from ``TRAINER_WEIGHTS_SOURCE`` when the file is missing or
    its hash is wrong. It is given the cache directory explicitly and only when that
    directory is writable: Keras would otherwise fall back to ``/tmp/.keras``.
    """
    import keras

    settings = TrainerSettings()
    entry = pretrained.weights_file(architecture)
    path = imagenet_cache_path(architecture)
    directory, source = path.parent, settings.weights_source
    url = pretrained.origin(source, entry.file_name)
    advice = (
        f"run `chouette weights pull {architecture}` where {pretrained.describe(source)} is"
        f" reachable (or with --source DIR) and copy {entry.file_name} into {directory},"
        f" set {pretrained.SOURCE_SETTING} to a mirror URL or a directory holding it,"
        " pass --weights PATH, or use --weights none"
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK)
    except OSError as exc:
        raise WeightsUnavailable(
            f"the ImageNet weights cache {directory} cannot be created ({exc}):"
            f" set {pretrained.CACHE_SETTING} or KERAS_HOME to a directory of this service"
        ) from None
    try:
        pretrained.check_private(directory)
    except pretrained.UnsafeCache as exc:
        raise WeightsUnavailable(str(exc)) from None
    if not writable:
        if pretrained.is_valid(path, entry):
            return str(path)
        raise WeightsUnavailable(
            f"ImageNet weights for {architecture} are not in the Keras cache ({path}),"
            f" which is not writable: set {pretrained.CACHE_SETTING} or KERAS_HOME to a"
            f" writable directory, or {advice}"
        )
    try:
        with _socket_timeout(settings.weights_timeout):
            fetched = keras.utils.get_file(
                fname=path.name,
                origin=url,
                file_hash=entry.file_hash,
                cache_dir=str(directory),
                cache_subdir=".",
            )
    except ValueError as exc:  # downloaded, but the hash does not match: never keep it
        path.unlink(missing_ok=True)
        raise WeightsUnavailable(
            f"ImageNet weights for {architecture} from {url} refused: {exc} The file was"
            f" removed from {directory}; check {pretrained.SOURCE_SETTING}"
        ) from None
    except Exception as exc:  # get_file raises a bare Exception for URL errors
        raise WeightsUnavailable(
            f"ImageNet weights for {architecture} are not in the Keras cache ({path}) and"
            f" cannot be downloaded ({exc}): {advice}"
        ) from None
    return str(Path(fetched).resolve())


def _base_weights(spec: ModelSpec) -> str | None:
    """The ``weights=`` argument for keras.applications, or a clear error before building."""
    if spec.weights == "none":
        return None
    if spec.weights == "imagenet":
        return _imagenet_weights(spec.architecture)

    try:
        path = weight_files.allowed_weights_file(spec.weights, TrainerSettings().weights_dir)
    except weight_files.WeightsFileRefused as exc:
        raise WeightsUnavailable(
            f"{exc} on the trainer's machine ({socket.gethostname()}): --weights PATH is"
            " read by the trainer, not the CLI"
        ) from None
    return str(path)


def _preprocessing(spec: ModelSpec) -> keras.layers.Layer:
    import keras

    if spec.is_v2:
        # keras.applications.resnet_v2.preprocess_input: x / 127.5 - 1
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")
    return CaffePreprocess(name="preprocess_caffe")


def build_model(spec: ModelSpec) -> keras.Model:
    """The network of ``spec``, uncompiled; input float RGB 0..255 of ``spec.input_shape``.

    Raises :class:`WeightsUnavailable` when ``spec.weights`` cannot be loaded.
    """
    import keras

    if spec.architecture not in ARCHITECTURES:  # pragma: no cover - validated by pydantic
        raise PermanentError(f"unknown architecture {spec.architecture}")
    weights = _base_weights(spec)
    constructor = getattr(keras.applications, spec.architecture)
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x = _preprocessing(spec)(inputs)
    try:
        base = constructor(
            include_top=False,
            weights=weights,
            input_shape=spec.input_shape,
            pooling="avg",
            name=BASE_NAME,
        )
    except (OSError, ValueError) as exc:
        if weights is None:
            raise
        raise WeightsUnavailable(
            f"cannot load weights {spec.weights} into {spec.architecture}: {exc}"
        ) from exc
    x = base(x)
    x = keras.layers.Dropout(spec.dropout, name="head_dropout")(x)
    # float32 output even under a mixed-precision policy: softmax in float16 is unstable.
    outputs = keras.layers.Dense(
        len(spec.class_names), activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=f"chouette_{spec.architecture.lower()}")


# Test-time augmentation: the 8 flips/90° turns of each image (a top-down field photo has no
# "up"), scored as one batch and averaged.
TTA_VIEWS: Final = 8


def inference_function(model: keras.Model, image_size: int, *, tta: bool = False) -> Any:
    """``model`` in inference mode as one traced function of float32 batches
    ``(n, size, size, 3)`` with a free batch dimension; with ``tta`` the probabilities are
    the mean over the :data:`TTA_VIEWS` flips/turns of each image (8 times the work)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)

    def plain(x: Any) -> Any:
        return model(x, training=False)

    def averaged(x: Any) -> Any:
        n = tf.shape(x)[0]
        mirrored = tf.reverse(x, axis=[2])
        views = [tf.image.rot90(m, k) for m in (x, mirrored) for k in range(4)]
        out = model(tf.concat(views, axis=0), training=False)
        return tf.reduce_mean(tf.reshape(out, [TTA_VIEWS, n, -1]), axis=0)

    return tf.function(averaged if tta else plain, input_signature=[spec])


def base_of(model: keras.Model) -> keras.Model:
    """The keras.applications part of a model built by :func:`build_model`."""
    return model.get_layer(BASE_NAME)


def batchnorm_layers(model: keras.Model) -> list[Any]:
    import keras

    found = []
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        stack[:0] = getattr(layer, "layers", [])
    return found


def momentum_for_steps(steps_per_epoch: int, *, settle: float = 0.05) -> float:
    """BatchNorm momentum whose moving statistics settle within one epoch.

    After ``s`` updates the initial statistics weigh ``momentum ** s``; Keras' default
    0.99 needs ~300 steps to forget them, far more than an epoch of a small dataset, so
    a network trained from scratch on a few hundred images validates (and predicts)
    with stale statistics. Here ``momentum ** steps_per_epoch == settle``, kept within
    0.5..0.99 (the default for large datasets).
    """
    steps = max(1, steps_per_epoch)
    return float(min(0.99, max(0.5, settle ** (1.0 / steps))))


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set every BatchNormalization layer's momentum; returns the count.

    With :func:`use_runtime_batchnorm_momentum` this assigns the shared variable, which a
    traced training step reads at run time; otherwise (a plain float, baked into the graph
    when it is traced) call it before compiling.
    """
    layers = batchnorm_layers(model)
    for layer in layers:
        if is_tf_variable(layer.momentum):
            layer.momentum.assign(momentum)
        else:
            layer.momentum = momentum
    return len(layers)


def use_runtime_batchnorm_momentum(model: keras.Model, momentum: float = 0.99) -> Any:
    """Make every BatchNormalization layer read its momentum from one shared variable.

    Keras bakes a float momentum into the traced training step; the momentum depends on
    the epoch's length (:func:`momentum_for_steps`), so a network kept for the next request
    (``shared.model_cache``) would have to be traced again. A ``tf.Variable`` (not a Keras
    one: it is not a weight, nothing stores it) is read at run time instead. Create it in
    the distribution strategy's scope, before the first trace. Returns the variable.
    """
    import tensorflow as tf

    variable = tf.Variable(momentum, trainable=False, dtype=tf.float32, name="bn_momentum")
    for layer in batchnorm_layers(model):
        layer.momentum = variable
    return variable


def is_tf_variable(value: Any) -> bool:
    """A (runtime) variable rather than a Python number, e.g. a BatchNorm momentum."""
    return hasattr(value, "assign") and hasattr(value, "numpy")


# Variables of a network built from scratch, by the attribute naming their initializer.
_INITIALIZED = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def _all_layers(model: keras.Model) -> list[Any]:
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop(0)
        found.append(layer)
        stack[:0] = getattr(layer, "layers", [])
    return found


def initialize_weights(model: keras.Model, seed: int) -> int:
    """Give every variable of ``model`` fresh initial values, a function of ``seed`` alone.

    What building the network from scratch does, without building it: each kernel, bias
    and BatchNorm variable gets a new draw of its layer's own initializer, every random
    layer's seed generator a new state, all drawn in order from one generator seeded with
    ``seed``. The draws run as one traced function kept with the network (a few tenths
    of a second saved per request over eager calls). The trainer calls this on a newly
    built network and on one reused from ``shared.model_cache`` alike, so a model's
    initial weights depend on its seed, not on what ran before. Raises ``ValueError`` for
    a variable it does not know how to initialize. Returns the number of variables set.
    """
    entry = _INITIALIZERS.get(model)
    if entry is None:
        entry = _INITIALIZERS[model] = _initializer_function(model)
    generator, draw, count = entry
    generator.state.assign(np.array([seed & 0xFFFFFFFF, 0]).astype(generator.state.dtype))
    draw()
    return count


_INITIALIZERS: weakref.WeakKeyDictionary[Any, tuple[Any, Any, int]] = weakref.WeakKeyDictionary()


def _initializer_function(model: keras.Model) -> tuple[Any, Any, int]:
    """(seed generator, traced function drawing every variable, number of variables)."""
    import keras
    import tensorflow as tf

    initializers: dict[int, Any] = {}
    seed_states: set[int] = set()
    for layer in _all_layers(model):
        for attr in _INITIALIZED:
            variable = getattr(layer, attr, None)
            initializer = getattr(layer, f"{attr}_initializer", None)
            if isinstance(variable, keras.Variable) and initializer is not None:
                initializers[id(variable)] = initializer
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            seed_states.add(id(generator.state))
    generator = keras.random.SeedGenerator(0, name="chouette_initial_weights")
    plan: list[tuple[Any, Any]] = []
    for variable in model.variables:
        if id(variable) in seed_states:
            plan.append((variable, None))
        elif id(variable) in initializers:
            initializer = initializers[id(variable)]
            if hasattr(initializer, "seed"):  # a random one: draw from our generator
                initializer = type(initializer).from_config(initializer.get_config())
                initializer.seed = generator
            plan.append((variable, initializer))
        else:
            raise ValueError(f"no initializer known for variable {variable.path}")

    @tf.function
    def draw() -> None:
        for variable, initializer in plan:
            if initializer is None:
                variable.assign(tf.cast(generator.next(), variable.dtype))
            else:
                variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))

    return generator, draw, len(plan)


def _caffe_layer_class() -> type:
    import keras

    @keras.saving.register_keras_serializable(package="chouette")
    class _CaffePreprocess(keras.layers.Layer):
        """keras.applications.resnet.preprocess_input inside the model: RGB→BGR, minus means."""

        def call(self, inputs: Any) -> Any:
            x = keras.ops.flip(inputs, axis=-1)
            means = keras.ops.convert_to_tensor(CAFFE_BGR_MEANS, dtype=x.dtype)
            return x - means

    return _CaffePreprocess


_CAFFE: type | None = None


def CaffePreprocess(**kwargs: Any) -> keras.layers.Layer:
    global _CAFFE
    if _CAFFE is None:
        _CAFFE = _caffe_layer_class()
    return _CAFFE(**kwargs)  # type: ignore[no-any-return]


def library_versions() -> dict[str, str]:
    import keras
    import numpy as np
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
