"""``chouette report MODEL``: training curves and confusion matrices as PNG, plus a summary.

Everything comes from Postgres (``training_epochs``, ``evaluations``, ``models``); the
figures are drawn with matplotlib's Agg backend (no display needed, no TensorFlow).

The summary sets the held-out test split's macro F1 beside that of the most recent later
date range (every image of another dataset, the model's training images left out: the
figure ``chouette models`` shows as ``later_f1``) and says so when they differ by more
than ``render.LATER_GAP``; the same sentence goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chouette import queries
from chouette.connections import open_pool
from chouette.errors import OK, UsageError
from chouette.gallery import misclassified_gallery
from chouette.render import fmt, later_differs, later_range_sentence
from chouette.submit import parse_model_id
from shared.plots import plot_confusion, plot_curves
from shared.settings import Settings

Row = dict[str, Any]


async def run_report(args: argparse.Namespace, settings: Settings) -> int:
    model_id = parse_model_id(args.model, "MODEL")
    async with open_pool(settings) as pool:
        model = await queries.model(pool, model_id)
        if model is None:
            raise UsageError(f"MODEL: no model {model_id} (see `chouette models`)")
        epochs = await queries.epochs(pool, model_id)
        evaluations = await queries.evaluations_of_model(pool, model_id)
        gallery = None
        if getattr(args, "gallery", False):
            gallery = await misclassified_gallery(pool, model, evaluations)
    out = Path(args.out or f"reports/model-{model_id}")
    try:
        paths = write_report(model, epochs, evaluations, out)
        if gallery is not None:
            paths[-1:-1] = gallery.write(out, paths[-1])
    except OSError as exc:  # /proc/x, an existing file, a path under a file, no permission
        where = exc.filename or out
        raise UsageError(
            f"--out: cannot write the report to {where}: {exc.strerror or exc}"
        ) from None
    for path in paths:
        print(path)
    test, later = held_out_evaluation(model, evaluations), later_evaluation(model, evaluations)
    if (
        test is not None
        and later is not None
        and later_differs(test["macro_f1"], later["macro_f1"])
    ):
        sentence = later_range_sentence(test["macro_f1"], later["macro_f1"], _range(later))
        print(f"chouette: note: model {model_id}: {sentence}", file=sys.stderr)
    return OK


def held_out_evaluation(model: Row, evaluations: list[Row]) -> Row | None:
    """The evaluation on the model's own held-out test split, if any."""
    for ev in evaluations:
        if ev["dataset_id"] == model["dataset_id"] and ev["split"] == "test":
            return ev
    return None


def later_evaluation(model: Row, evaluations: list[Row]) -> Row | None:
    """The most recent evaluation of every image of another dataset, training images left
    out (the one ``model_registry`` shows); ``evaluations`` oldest first. Evaluations made
    before training images were left out (``n_excluded`` NULL) do not count."""
    later = [
        ev
        for ev in evaluations
        if ev["dataset_id"] != model["dataset_id"]
        and ev["split"] == "all"
        and ev.get("n_excluded") is not None
        and ev["macro_f1"] is not None
    ]
    return later[-1] if later else None


def _range(ev: Row) -> str:
    return f"{ev['start_date']}..{ev['end_date']}"


def held_out_vs_later(model: Row, evaluations: list[Row]) -> list[str]:
    """The summary's lines comparing the test split with the latest later date range."""
    test, later = held_out_evaluation(model, evaluations), later_evaluation(model, evaluations)
    lines = []
    if test is not None:
        lines.append(
            f"- held-out test split (dataset {test['dataset_id']}, evaluation"
            f" {test['evaluation_id']}): macro F1 {fmt(test['macro_f1'])},"
            f" {test['n_images']} images"
        )
    else:
        lines.append("- held-out test split: not evaluated")
    if later is not None:
        lines.append(
            f"- later range {_range(later)} (dataset {later['dataset_id']}, evaluation"
            f" {later['evaluation_id']}): macro F1 {fmt(later['macro_f1'])},"
            f" {later['n_images']} images, {later['n_excluded']} images of the training"
            " range left out"
        )
        if test is not None:
            sentence = later_range_sentence(test["macro_f1"], later["macro_f1"], _range(later))
            assert sentence is not None
            sentence = sentence[0].upper() + sentence[1:] + "."
            differs = later_differs(test["macro_f1"], later["macro_f1"])
            lines += ["", f"**{sentence}**" if differs else sentence]
    else:
        lines.append(
            f"- later range: none yet (`chouette evaluate --model {model['model_id']}"
            " --start-date … --end-date …` with dates after the training range)"
        )
    return lines


def write_report(model: Row, epochs: list[Row], evaluations: list[Row], out: Path) -> list[Path]:
    """Write the PNGs and ``summary.md`` under ``out``; return the paths written."""
    import matplotlib  # lazy: matplotlib takes seconds to import; only report draws

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    curves = None
    if epochs:
        curves = out / "training_curves.png"
        plot_curves(epochs, curves, title=f"model {model['model_id']} ({model['architecture']})")
        written.append(curves)
    matrices: dict[int, Path] = {}
    for ev in evaluations:
        path = out / f"confusion_matrix_eval{ev['evaluation_id']}.png"
        plot_confusion(
            ev["confusion_matrix"],
            list(ev["class_names"]),
            path,
            title=f"model {model['model_id']} on dataset {ev['dataset_id']} ({ev['split']})",
        )
        matrices[ev["evaluation_id"]] = path
        written.append(path)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(model, epochs, evaluations, curves, matrices))
    written.append(summary)
    return written


_SPLITS = {"train": 0, "val": 1, "test": 2}


def summary_markdown(
    model: Row,
    epochs: list[Row],
    evaluations: list[Row],
    curves: Path | None,
    matrices: dict[int, Path],
) -> str:
    hp = model["hyperparams"] or {}
    classes = list(model["class_names"] or [])
    lines = [
        f"# Model {model['model_id']}: {model['architecture']}",
        "",
        f"- status: {model['status']}; trained {fmt(model['trained_at'])}"
        f" in {fmt(model['train_seconds'], 1)} s"
        + (
            f" (+ {fmt(model['finish_seconds'], 1)} s BatchNorm re-estimation and validation)"
            if model.get("finish_seconds") is not None
            else ""
        ),
        f"- dataset {model['dataset_id']}: images {model['start_date']}..{model['end_date']},"
        f" tags {fmt(model['tags'])}, {model['n_images']} images"
        f" ({_counts(model['counts'], classes)})"
        + "".join(
            f"; {split} {_counts(counts, classes)}"
            for split, counts in sorted(
                (model["split_counts"] or {}).items(), key=lambda kv: _SPLITS.get(kv[0], 9)
            )
        ),
        f"- input {fmt(model['input_shape'])}, classes {fmt(model['class_names'])}",
        "- hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())),
        f"- weights sha256 {model['weights_sha256']} ({fmt(model['weights_bytes'])} bytes)",
        "",
        "## Training",
        "",
    ]
    if epochs:
        lines += [
            "| epoch | loss | accuracy | val_loss | val_accuracy | seconds |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for e in epochs:
            lines.append(
                f"| {e['epoch']} | {fmt(e['loss'])} | {fmt(e['accuracy'])} | {fmt(e['val_loss'])}"
                f" | {fmt(e['val_accuracy'])} | {fmt(e['seconds'], 1)} |"
            )
        lines += ["", *_kept_epoch(model)]
        if curves is not None:
            lines += ["", f"![training curves]({curves.name})"]
    else:
        lines.append("No epochs recorded.")
    lines += ["", "## Held-out test split and a later date range", ""]
    lines += held_out_vs_later(model, evaluations)
    lines += ["", "## Evaluations", ""]
    if not evaluations:
        lines.append("Not evaluated yet (`chouette evaluate --model ID`).")
    for ev in evaluations:
        names = list(ev["class_names"])
        per_class = ev["per_class"] or {}
        lines += [
            f"### Evaluation {ev['evaluation_id']}: dataset {ev['dataset_id']}"
            f" ({ev['start_date']}..{ev['end_date']}), {ev['split']} split",
            "",
            f"{ev['n_images']} images{_left_out(model, ev)}: accuracy {fmt(ev['accuracy'])},"
            f" macro F1 {fmt(ev['macro_f1'])}, balanced accuracy {fmt(ev['balanced_accuracy'])}",
            "",
            "| class | precision | recall | f1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in names:
            m = per_class.get(name, {})
            lines.append(
                f"| {name} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))}"
                f" | {fmt(m.get('f1'))} | {fmt(m.get('support'))} |"
            )
        path = matrices.get(ev["evaluation_id"])
        if path is not None:
            lines += ["", f"![confusion matrix]({path.name})"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _left_out(model: Row, ev: Row) -> str:
    """What was left out of an evaluation as images of the model's training range."""
    if ev["dataset_id"] == model["dataset_id"] and ev["split"] == "test":
        return ""
    n = ev.get("n_excluded")
    if n is None:
        return " (evaluated before training images were left out: some are among them)"
    return f" ({n} images of the training range left out)" if n else ""


def _counts(counts: dict[str, int] | int | None, classes: list[str]) -> str:
    """``vine 19, ground 9, grass 7``: images per class, in the model's class order."""
    if isinstance(counts, int):
        return str(counts)
    counts = counts or {}
    names = [c for c in classes if c in counts] + sorted(set(counts) - set(classes))
    return ", ".join(f"{name} {counts[name]}" for name in names) or "none"


def _kept_epoch(model: Row) -> list[str]:
    """Which epoch's weights were kept, and the validation of the final model in inference
    mode (after the BatchNorm re-estimation): the numbers the stored weights really give."""
    final = model.get("final_metrics") or {}
    best = model.get("best_epoch")
    if best is None:
        return []
    # Recorded since the kept epoch follows the validation accuracy; before, the lowest loss.
    monitor = final.get("monitor") or ("val_loss" if final.get("val_loss") is not None else "loss")
    text = (
        f"Weights kept: epoch {best} ({'highest' if 'accuracy' in monitor else 'lowest'} {monitor})"
    )
    why = {"early_stopping": "early stopping", "time_limit": "the time limit (TRAINER_MAX_SECONDS)"}
    if final.get("stopped") in why:
        text += f"; stopped by {why[final['stopped']]} after epoch {final.get('epochs_run')}"
    if final.get("final_val_accuracy") is not None:
        text += (
            f". Validation of the stored model (BatchNorm statistics re-estimated):"
            f" loss {fmt(final.get('final_val_loss'))},"
            f" accuracy {fmt(final.get('final_val_accuracy'))}"
        )
    return [text + "."]
