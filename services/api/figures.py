"""The results page's figures as PNG bytes, drawn by the code of ``chouette report``
(``shared.cli.report``): the same training curves and confusion matrices as the report.

Matplotlib's pyplot keeps global state and is not thread-safe, so figures are drawn one at
a time (a lock), in a worker thread (``handlers``), never on the event loop.
"""

from __future__ import annotations

import io
import threading
from typing import Any

_LOCK = threading.Lock()


def curves_png(model: dict[str, Any], epochs: list[dict[str, Any]]) -> bytes:
    from shared.cli import report

    return _draw(
        lambda out: report.plot_curves(
            epochs, out, title=f"model {model['model_id']} ({model['architecture']})"
        )
    )


def confusion_png(evaluation: dict[str, Any]) -> bytes:
    from shared.cli import report

    return _draw(
        lambda out: report.plot_confusion(
            evaluation["confusion_matrix"],
            list(evaluation["class_names"]),
            out,
            title=f"model {evaluation['model_id']} on dataset {evaluation['dataset_id']}"
            f" ({evaluation['split']})",
        )
    )


def _draw(plot: Any) -> bytes:
    import matplotlib

    with _LOCK:
        matplotlib.use("Agg")
        out = io.BytesIO()
        plot(out)
        return out.getvalue()
