"""The figures both ``chouette report`` and the API's results page draw: training curves
and confusion matrices as PNG, and how many misclassified images a gallery shows.

Matplotlib is imported by the functions that draw, so that importing this module (the
``chouette`` command starting, the API starting) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

Row = dict[str, Any]

# Misclassified images shown per evaluation (the most confident mistakes first), in the
# report's gallery and on the results page alike.
GALLERY_LIMIT = 24


def plot_curves(epochs: list[Row], path: Path | BinaryIO, *, title: str) -> None:
    import matplotlib.pyplot as plt  # lazy: matplotlib takes seconds to import

    x = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            ys = [e.get(key) for e in epochs]
            if any(y is not None for y in ys):
                ax.plot(x, [float("nan") if y is None else y for y in ys], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def plot_confusion(
    matrix: list[list[int]], names: list[str], path: Path | BinaryIO, *, title: str
) -> None:
    import matplotlib.pyplot as plt  # lazy: matplotlib takes seconds to import
    import numpy as np  # lazy: only with matplotlib

    counts = np.asarray(matrix, dtype=float).reshape(len(names), len(names))
    fig, ax = plt.subplots(figsize=(4.5, 4), constrained_layout=True)
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = counts.max() if counts.size else 0
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if peak and counts[i, j] > peak / 2 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=color)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
