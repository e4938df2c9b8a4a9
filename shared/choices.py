"""The closed sets of values a request may name, defined once.

The message models validate against these ``Literal`` types; the CLI's parser lists them in
``--help``. This module imports nothing but ``typing``, so ``chouette --help`` stays fast.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Architecture = Literal[
    "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"
]
ARCHITECTURES: Final[tuple[str, ...]] = get_args(Architecture)
Tag = Literal["vine", "ground", "grass"]
TAGS: Final[tuple[str, ...]] = get_args(Tag)
Optimizer = Literal["adam", "sgd", "rmsprop", "adagrad"]
OPTIMIZERS: Final[tuple[str, ...]] = get_args(Optimizer)
LrSchedule = Literal["cosine", "constant"]
LR_SCHEDULES: Final[tuple[str, ...]] = get_args(LrSchedule)
Split = Literal["train", "val", "test", "all"]
