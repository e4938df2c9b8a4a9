"""Built, traced networks kept between requests of the same shape.

Building a Keras ResNet takes a second or two, and the first call of a compiled one far
longer: TensorFlow traces the graph of the training step (ResNet50: ~25-45 s on two CPU
cores, most of a small request) or of inference (a few seconds). The graph depends only
on the network's shape, not on its weights, so the trainer and the evaluator keep a few
networks, each with its traced functions, and only assign new values to the variables
for the next request of the same shape (see ``shared.modeling.initialize_weights`` and
``shared.weight_store.read_weights_into``).

A network is *checked out* for exactly one request at a time and *released* after it
succeeded; a request that failed half-way simply drops its network (its state is not
trusted). At most ``capacity`` idle networks are kept, the least recently released
leaving first. Thread-safe: trainings run in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ModelCache(Generic[K, V]):
    """Idle values by key; ``checkout`` takes one out, ``release`` puts it back."""

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._idle: OrderedDict[int, tuple[K, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._serial = 0
        self.hits = 0
        self.misses = 0

    def checkout(self, key: K) -> V | None:
        """An idle value for ``key`` (now owned by the caller), or None: build one."""
        with self._lock:
            for serial, (k, value) in reversed(self._idle.items()):
                if k == key:
                    del self._idle[serial]
                    self.hits += 1
                    return value
            self.misses += 1
            return None

    def release(self, key: K, value: V) -> None:
        """Keep ``value`` for the next request of ``key`` (evicting the oldest idle ones)."""
        if self.capacity == 0:
            return
        with self._lock:
            self._serial += 1
            self._idle[self._serial] = (key, value)
            while len(self._idle) > self.capacity:
                self._idle.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)
