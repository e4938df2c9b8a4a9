"""A split's images and labels, as the trainer's input pipeline (``dataset``) reads them and
the resized image files (``image_files``) write them: a module of its own so that neither
of those two imports the other for it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.images import tf_decodable


@dataclass(frozen=True)
class Split:
    """One split's images and their class indices, in a fixed order.

    The images are either ``images`` (encoded, in memory) or, when ``folder`` is set, the
    files of :mod:`services.trainer.image_files` there, already resized to ``image_size``
    (``images`` is then empty). A split of ``labels`` alone (:meth:`of_tags`) is only
    counted (checks before the images are read).
    """

    images: Sequence[bytes]
    labels: np.ndarray  # int32, one per image
    folder: str = ""
    image_size: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of_tags(cls, tags: Sequence[str], class_names: Sequence[str]) -> Split:
        index = {name: i for i, name in enumerate(class_names)}
        return cls((), np.array([index[tag] for tag in tags], dtype=np.int32))

    @classmethod
    def from_rows(
        cls, rows: Sequence[tuple[bytes, str, str | None]], class_names: Sequence[str]
    ) -> Split:
        """``rows`` of (bytes, tag, format) → a split; formats TF cannot read become PNG."""
        index = {name: i for i, name in enumerate(class_names)}
        images = [tf_decodable(data, fmt) for data, _, fmt in rows]
        labels = np.array([index[tag] for _, tag, _ in rows], dtype=np.int32)
        return cls(images, labels)

    def counts(self, n_classes: int) -> list[int]:
        found = Counter(int(y) for y in self.labels)
        return [found.get(i, 0) for i in range(n_classes)]
