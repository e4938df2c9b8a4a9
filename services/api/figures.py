"""The results page's figures as PNG bytes, drawn by the code ``chouette report`` uses
(``shared.plots``): the same training curves and confusion matrices as the report.

Matplotlib's pyplot keeps global state and is not thread-safe, so figures are drawn one at
a time (a lock), in a worker thread (``handlers``), never on the event loop.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from shared import plots

_LOCK = threading.Lock()


def curves_png(model: dict[str, Any], epochs: list[dict[str, Any]]) -> bytes:
    return _draw(
        lambda out: plots.plot_curves(
            epochs, out, title=f"model {model['model_id']} ({model['architecture']})"
        )
    )


def confusion_png(evaluation: dict[str, Any]) -> bytes:
    return _draw(
        lambda out: plots.plot_confusion(
            evaluation["confusion_matrix"],
            list(evaluation["class_names"]),
            out,
            title=f"model {evaluation['model_id']} on dataset {evaluation['dataset_id']}"
            f" ({evaluation['split']})",
        )
    )


def _draw(plot: Any) -> bytes:
    import matplotlib  # lazy: only the page's figures need it, not the API's start

    with _LOCK:
        matplotlib.use("Agg")
        out = io.BytesIO()
        plot(out)
        return out.getvalue()


class PngCache:
    """The PNGs drawn last, by key, up to ``max_bytes`` in all (the least recently used go
    first). For the gallery's Grad-CAM overlays: an evaluation's predictions and its model's
    weights never change, and each overlay costs a model call on the inference thread that
    ``/predict`` uses too, so a page polling every few seconds must not redraw them."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        self._bytes += len(value) - (len(old) if old is not None else 0)
        self._items[key] = value
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)
