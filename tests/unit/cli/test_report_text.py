"""The report's sentences about the stored weights."""

from __future__ import annotations

from shared.cli.report import _counts, _kept_epoch


def test_kept_epoch_names_the_monitored_loss_and_why_training_stopped() -> None:
    with_val = {
        "best_epoch": 4,
        "final_metrics": {"stopped": "time_limit", "epochs_run": 6, "val_loss": 0.3},
    }
    (line,) = _kept_epoch(with_val)
    assert line.startswith("Weights kept: epoch 4 (lowest val_loss); stopped by the time limit")
    assert "after epoch 6" in line
    without_val = {"best_epoch": 3, "final_metrics": {"stopped": "epochs", "val_loss": None}}
    assert _kept_epoch(without_val) == ["Weights kept: epoch 3 (lowest loss)."]
    assert _kept_epoch({"best_epoch": None, "final_metrics": None}) == []


def test_counts_follow_the_class_order() -> None:
    classes = ["vine", "ground", "grass"]
    assert _counts({"grass": 1, "vine": 3, "moss": 2}, classes) == "vine 3, grass 1, moss 2"
    assert _counts({}, classes) == "none"
    assert _counts(12, classes) == "12"
