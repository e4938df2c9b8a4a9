"""Model weights and training checkpoints in PostgreSQL, streamed in parts of a few MiB.

Used by the trainer (store, checkpoint, resume) and by the evaluator, the API and
``chouette predict`` (:func:`load_model`). Three concepts, one module each:

- :mod:`~shared.weight_store.format`: the byte format (pure: numpy, no database);
- :mod:`~shared.weight_store.postgres`: writing and reading the parts in PostgreSQL, with
  serializing and hashing in worker threads (:mod:`~shared.weight_store.threads`);
- :mod:`~shared.weight_store.loading`: rebuilding a model from its row and loading it.

Errors: :class:`CorruptWeights` (checksum or format) marks the model ``corrupt``;
:class:`WeightsMismatch` (the stored tensors do not fit the rebuilt network),
:class:`ModelNotFound` and :class:`ModelNotReady` are permanent too.
"""

from shared.weight_store.format import (
    DEFAULT_PART_BYTES,
    CorruptWeights,
    WeightsMismatch,
    iter_body_parts,
)
from shared.weight_store.loading import (
    ModelNotFound,
    ModelNotReady,
    load_model,
    mark_corrupt,
)
from shared.weight_store.postgres import (
    delete_checkpoints,
    load_checkpoint,
    read_weights_into,
    save_checkpoint,
    store_weights,
)

__all__ = [
    "DEFAULT_PART_BYTES",
    "CorruptWeights",
    "ModelNotFound",
    "ModelNotReady",
    "WeightsMismatch",
    "delete_checkpoints",
    "iter_body_parts",
    "load_checkpoint",
    "load_model",
    "mark_corrupt",
    "read_weights_into",
    "save_checkpoint",
    "store_weights",
]
