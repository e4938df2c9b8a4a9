"""``chouette report MODEL --gallery``: the images each evaluation got wrong, with the
Grad-CAM overlay of the class the model predicted (``shared.gradcam``) and the
probabilities, as PNGs under ``OUT/misclassified/`` and a section of ``summary.md``.

The model is read back from PostgreSQL (checksum verified), so this part loads TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chouette import queries
from chouette.errors import CommandFailed
from chouette.predict import native_stderr_held
from shared.errors import PermanentError
from shared.plots import GALLERY_LIMIT


@dataclass
class Item:
    evaluation_id: int
    sha256: str
    true_label: str
    predicted: str
    probabilities: dict[str, float]
    png: bytes


@dataclass
class Gallery:
    items: list[Item] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def write(self, out: Path, summary: Path) -> list[Path]:
        """The overlays under ``out/misclassified``, and the section appended to ``summary``."""
        folder = out / "misclassified"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        lines = ["", "## Misclassified images", ""]
        lines.append(
            "Grad-CAM of the predicted class (where the model's last convolution block found"
            f" it), at most {GALLERY_LIMIT} per evaluation, the most confident mistakes first."
        )
        for ev in self.evaluations:
            mine = [i for i in self.items if i.evaluation_id == ev["evaluation_id"]]
            lines += ["", f"### Evaluation {ev['evaluation_id']} (dataset {ev['dataset_id']},"
                      f" {ev['split']}): {len(mine)} shown", ""]  # fmt: skip
            if not mine:
                lines.append("No misclassified image.")
                continue
            names = list(ev["class_names"])
            lines.append("| overlay | true | predicted | " + " | ".join(names) + " |")
            lines.append("|---|---|---|" + "---|" * len(names))
            for item in mine:
                path = folder / f"eval{item.evaluation_id}-{item.sha256[:12]}.png"
                path.write_bytes(item.png)
                written.append(path)
                probs = " | ".join(f"{item.probabilities.get(n, 0.0):.3f}" for n in names)
                lines.append(
                    f"| ![{item.sha256[:12]}](misclassified/{path.name}) | {item.true_label}"
                    f" | {item.predicted} | {probs} |"
                )
        with summary.open("a") as f:
            f.write("\n".join(lines) + "\n")
        return written


async def misclassified_gallery(
    pool: Any, model: dict[str, Any], evaluations: list[dict[str, Any]]
) -> Gallery:
    gallery = Gallery(evaluations=evaluations)
    wrong = {
        ev["evaluation_id"]: await queries.misclassified(pool, ev["evaluation_id"], GALLERY_LIMIT)
        for ev in evaluations
    }
    if not any(wrong.values()):
        return gallery
    with native_stderr_held():
        from shared.gradcam import Explainer  # lazy: model code (numpy; TensorFlow when called)
        from shared.weight_store import (
            load_model,  # lazy: model code (numpy; TensorFlow when called)
        )

        try:
            network, spec, _ = await load_model(pool, model["model_id"])
        except PermanentError as exc:
            raise CommandFailed(f"--gallery: {exc}") from None
        explainer = Explainer(network, spec)
        for evaluation_id, rows in wrong.items():
            for row in rows:
                explained = explainer.explain(bytes(row["bytes"]), row["predicted"])
                gallery.items.append(
                    Item(
                        evaluation_id=evaluation_id,
                        sha256=row["sha256"],
                        true_label=row["true_label"],
                        predicted=row["predicted"],
                        probabilities=dict(row["probabilities"]),
                        png=explained.png,
                    )
                )
    return gallery
