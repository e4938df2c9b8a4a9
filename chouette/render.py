"""Text and JSON output: tables, the ``--json`` result object, progress bars."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from shared.request_state import FINAL
from shared.text import fraction, printable

Row = dict[str, Any]
# Macro F1 points between the held-out test split and a later date range worth a sentence.
LATER_GAP = 0.05


def plain(value: Any) -> Any:
    """JSON-ready copy of a value from asyncpg (UUID, Decimal, dates, nested containers)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def dumps(obj: Any) -> str:
    return json.dumps(plain(obj), sort_keys=False)


def evaluation_json(ev: Row | None) -> Row | None:
    if ev is None:
        return None
    return plain(
        {
            "evaluation_id": ev["evaluation_id"],
            "model_id": ev["model_id"],
            "dataset_id": ev["dataset_id"],
            "split": ev["split"],
            "accuracy": ev["accuracy"],
            "macro_f1": ev["macro_f1"],
            "balanced_accuracy": ev.get("balanced_accuracy"),
            "n_images": ev["n_images"],
            "n_excluded": ev.get("n_excluded"),
            "class_names": ev["class_names"],
            "per_class": ev["per_class"],
            "confusion_matrix": ev["confusion_matrix"],
        }
    )


def result_json(req: Row, ev: Row | None) -> Row:
    """The ``--json`` object of one request (README "The chouette command line")."""
    return plain(
        {
            "request_id": req["request_id"],
            "kind": req["kind"],
            "status": req["status"],
            "stage": req["stage"],
            "progress": req["progress"],
            "model_id": req["model_id"],
            "dataset_id": req["dataset_id"],
            "evaluation_id": req["evaluation_id"] or (ev or {}).get("evaluation_id"),
            "error": req["error"],
            "evaluation": evaluation_json(ev),
            "created_at": req.get("created_at"),
            "finished_at": req.get("finished_at"),
        }
    )


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | decimal.Decimal):
        return f"{float(value):.{digits}f}"
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ",".join(printable(str(v)) for v in value)
    return printable(str(value))


def duration(seconds: Any) -> str | None:
    """``21.1s``, ``3m05s``, ``2h07m``: a request's age or run time, for people."""
    if seconds is None:
        return None
    s = float(seconds)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def short_id(value: Any) -> str:
    return str(value)[:8]


def requests_table(rows: Iterable[Row]) -> str:
    return table(
        [
            (
                short_id(r["request_id"]),
                r["kind"],
                r["status"],
                r["stage"],
                r["progress"],
                r.get("architecture"),
                r["model_id"],
                duration(r.get("seconds")),
                _one_line(r["error"], 60),
            )
            for r in rows
        ],
        ("request", "kind", "status", "stage", "progress", "network", "model", "time", "error"),
    )


def held_out_f1(row: Row) -> Any:
    """A ``model_registry`` row's held-out test split macro F1 (None: not evaluated there)."""
    if row.get("eval_split") == "test" and row.get("eval_dataset_id") == row.get("dataset_id"):
        return row.get("macro_f1")
    return None


def later_differs(test_f1: Any, later_f1: Any) -> bool:
    """Are the two macro F1 figures more than ``LATER_GAP`` apart (False if one is missing)?"""
    if test_f1 is None or later_f1 is None:
        return False
    return abs(float(later_f1) - float(test_f1)) > LATER_GAP + 1e-9


def later_range_sentence(test_f1: Any, later_f1: Any, later_range: str | None = None) -> str | None:
    """How the macro F1 of a later date range (training images left out) compares with the
    held-out test split's; None unless both exist."""
    if test_f1 is None or later_f1 is None:
        return None
    test, later = float(test_f1), float(later_f1)
    gap = later - test
    what = f"later range {later_range}" if later_range else "later range"
    if gap < -LATER_GAP - 1e-9:
        return (
            f"{what} macro F1 {later:.3f} is {-gap:.3f} below the test split's {test:.3f}:"
            " photos of the training range flatter the test split"
        )
    if gap > LATER_GAP + 1e-9:
        return (
            f"{what} macro F1 {later:.3f} is {gap:.3f} above the test split's {test:.3f}:"
            " the test split is small or harder than these days; neither figure is precise"
        )
    return f"{what} macro F1 {later:.3f} is within {LATER_GAP:.2f} of the test split's {test:.3f}"


def registry_table(rows: Iterable[Row]) -> str:
    """The models table; under it, a sentence for each model whose later-range figure is
    more than ``LATER_GAP`` from its test split's."""
    rows = list(rows)
    text = table(
        [
            (
                r["model_id"],
                r["architecture"],
                f"{r['start_date']}..{r['end_date']}",
                r["n_images"],
                r["image_size"],
                r["epochs"],
                r["status"],
                r["macro_f1"],
                r.get("later_macro_f1"),
                r["accuracy"],
                f"{r['eval_split'] or '-'}@{r['eval_dataset_id'] or '-'}",
                r["n_evaluations"],
                "*" if r["champion"] else "",
            )
            for r in rows
        ],
        (
            "model",
            "network",
            "dataset",
            "images",
            "px",
            "epochs",
            "status",
            "macro_f1",
            "later_f1",
            "accuracy",
            "eval",
            "evals",
            "champion",
        ),
    )
    notes = []
    for r in rows:
        test, later = held_out_f1(r), r.get("later_macro_f1")
        if later_differs(test, later):
            dates = f"{r.get('later_start_date')}..{r.get('later_end_date')}"
            notes.append(f"model {r['model_id']}: {later_range_sentence(test, later, dates)}")
    if any(r.get("later_macro_f1") is not None for r in rows):
        notes.insert(
            0,
            "later_f1: macro F1 on the model's most recent later date range"
            " (its training images left out)",
        )
    return "\n".join([text, *([""] if notes else []), *notes])


def evaluation_text(ev: Row) -> str:
    names = list(ev["class_names"])
    left_out = ev.get("n_excluded")
    lines = [
        f"evaluation {ev['evaluation_id']}: model {ev['model_id']} on dataset {ev['dataset_id']}"
        f" ({ev['split']} split, {ev['n_images']} images"
        + (f"; {left_out} images of the training range left out" if left_out else "")
        + ")",
        f"accuracy {fmt(ev['accuracy'])}   macro F1 {fmt(ev['macro_f1'])}"
        f"   balanced accuracy {fmt(ev.get('balanced_accuracy'))}",
        "",
    ]
    per_class = ev["per_class"] or {}
    lines.append(
        table(
            [
                (
                    name,
                    per_class.get(name, {}).get("precision"),
                    per_class.get(name, {}).get("recall"),
                    per_class.get(name, {}).get("f1"),
                    per_class.get(name, {}).get("support"),
                )
                for name in names
            ],
            ("class", "precision", "recall", "f1", "support"),
        )
    )
    lines.append("")
    lines.append("confusion matrix (rows = truth, columns = prediction)")
    matrix = ev["confusion_matrix"] or []
    rows = [[name, *row] for name, row in zip(names, matrix, strict=False)]
    lines.append(table(rows, ["", *names]))
    return "\n".join(lines)


def request_text(req: Row, ev: Row | None) -> str:
    params = req["params"] or {}
    dataset = params.get("dataset") or {}
    training = params.get("training") or {}
    what = (
        f"{training.get('architecture')} {training.get('image_size')} px,"
        f" {training.get('epochs')} epoch{'' if training.get('epochs') == 1 else 's'}"
        if training
        else f"model {params.get('model_id')}"
    )
    if dataset:
        what += f", images {dataset.get('start_date')}..{dataset.get('end_date')}"
        what += f" ({','.join(dataset.get('tags') or [])})"
    elif req["kind"] == "evaluation":
        what += ", held-out test split"
    lines = [
        f"request   {req['request_id']} ({req['kind']}: {what})",
        f"status    {req['status']}   stage {req['stage']}   progress {fmt(req['progress'])}",
        f"ids       dataset {fmt(req['dataset_id'])}   model {fmt(req['model_id'])}"
        f"   evaluation {fmt(req['evaluation_id'] or (ev or {}).get('evaluation_id'))}",
        f"created   {fmt(req['created_at'])}   finished {fmt(req['finished_at'])}",
    ]
    if req["error"]:
        lines.append(f"error     {printable(req['error'])}")
    if ev is not None:
        lines += ["", evaluation_text(ev)]
    return "\n".join(lines)


def _one_line(text: str | None, width: int) -> str | None:
    if not text:
        return None
    line = printable(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def bar(done: int, total: int, width: int = 24) -> str:
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def epoch_metrics(row: Row) -> str:
    parts = []
    for key, label in (
        ("loss", "loss"),
        ("accuracy", "acc"),
        ("val_loss", "val_loss"),
        ("val_accuracy", "val_acc"),
    ):
        if row.get(key) is not None:
            parts.append(f"{label} {float(row[key]):.3f}")
    return " ".join(parts)


class ProgressView:
    """Bars on stderr, one line per stage: rewritten in place on a terminal, else appended
    whenever the text changes (logs, CI)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stage: str | None = None
        self._last = ""

    def show(self, stage: str, text: str) -> None:
        if not self.enabled or text == self._last:
            return
        if self.tty:
            if self._stage is not None and stage != self._stage:
                self.stream.write("\n")
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._stage, self._last = stage, text

    def note(self, text: str) -> None:
        """A line of its own between the bars (printed even with the bars off)."""
        if self.tty and self._stage is not None:
            self.stream.write("\n")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._stage, self._last = None, ""

    def request(self, req: Row, epoch_total: int | None, last_epoch: Row | None) -> None:
        stage = req["stage"]
        progress = req["progress"]
        if req["status"] in FINAL:
            return
        if stage == "training" and epoch_total:
            self.epoch(last_epoch, epoch_total)
            return
        if (frac := fraction(req)) is not None:
            text = f"{stage:<10} {bar(*frac)}"
        else:
            text = f"{stage:<10} {printable(progress or '')}".rstrip()
        self.show(stage, text)

    def epoch(self, last_epoch: Row | None, epoch_total: int | None) -> None:
        done = int(last_epoch["epoch"]) if last_epoch else 0
        text = f"training   epoch {bar(done, epoch_total or done)}"
        if last_epoch:
            text += "  " + epoch_metrics(last_epoch)
        self.show("training", text)

    def close(self, req: Row) -> None:
        if not self.enabled:
            return
        if self.tty and self._stage is not None:
            self.stream.write("\n")
        outcome = req["status"] if req["status"] != "failed" else f"failed at {req['stage']}"
        self.stream.write(f"{outcome}\n")
        self.stream.flush()
