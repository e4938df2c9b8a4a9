"""The report's sentences about the stored weights."""

from __future__ import annotations

from chouette.report import _counts, _kept_epoch, _left_out, held_out_vs_later


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
    # Models trained since the kept epoch follows the validation accuracy record it.
    monitored = {"best_epoch": 7, "final_metrics": {"val_loss": 0.2, "monitor": "val_accuracy"}}
    assert _kept_epoch(monitored) == ["Weights kept: epoch 7 (highest val_accuracy)."]


def test_counts_follow_the_class_order() -> None:
    classes = ["vine", "ground", "grass"]
    assert _counts({"grass": 1, "vine": 3, "moss": 2}, classes) == "vine 3, grass 1, moss 2"
    assert _counts({}, classes) == "none"
    assert _counts(12, classes) == "12"


def _evaluation(evaluation_id: int, dataset_id: int, split: str, macro_f1: float, **more: object):
    row = {
        "evaluation_id": evaluation_id,
        "dataset_id": dataset_id,
        "split": split,
        "macro_f1": macro_f1,
        "n_images": 40,
        "n_excluded": 0,
        "start_date": "2021-06-01",
        "end_date": "2021-07-31",
    }
    row.update(more)
    return row


MODEL = {"model_id": 3, "dataset_id": 1}


def test_the_later_range_is_set_beside_the_test_split_and_a_gap_is_said_in_bold() -> None:
    evaluations = [
        _evaluation(1, 1, "test", 0.84, n_images=30),
        _evaluation(2, 5, "all", 0.95, start_date="2021-06-01", end_date="2021-06-30"),
        _evaluation(3, 6, "all", 0.72, n_images=120, n_excluded=35),  # the most recent
        _evaluation(4, 7, "all", 0.99, n_excluded=None),  # before training images were left out
    ]
    assert held_out_vs_later(MODEL, evaluations) == [
        "- held-out test split (dataset 1, evaluation 1): macro F1 0.840, 30 images",
        "- later range 2021-06-01..2021-07-31 (dataset 6, evaluation 3): macro F1 0.720,"
        " 120 images, 35 images of the training range left out",
        "",
        "**Later range 2021-06-01..2021-07-31 macro F1 0.720 is 0.120 below the test split's"
        " 0.840: photos of the training range flatter the test split.**",
    ]


def test_close_figures_are_said_plainly_and_missing_ones_named() -> None:
    close = held_out_vs_later(
        MODEL, [_evaluation(1, 1, "test", 0.80), _evaluation(2, 5, "all", 0.78)]
    )
    assert close[-1] == (
        "Later range 2021-06-01..2021-07-31 macro F1 0.780 is within 0.05 of the test split's"
        " 0.800."
    )
    lines = held_out_vs_later(MODEL, [_evaluation(1, 1, "test", 0.80)])
    assert lines[1].startswith("- later range: none yet (`chouette evaluate --model 3")
    lines = held_out_vs_later(MODEL, [_evaluation(2, 5, "all", 0.78)])
    assert lines[0] == "- held-out test split: not evaluated"
    assert len(lines) == 2  # nothing to compare with


def test_each_evaluation_names_what_was_left_out() -> None:
    assert _left_out(MODEL, _evaluation(1, 1, "test", 0.8)) == ""
    assert _left_out(MODEL, _evaluation(2, 5, "all", 0.8, n_excluded=0)) == ""
    assert _left_out(MODEL, _evaluation(2, 5, "all", 0.8, n_excluded=12)) == (
        " (12 images of the training range left out)"
    )
    assert "before training images were left out" in _left_out(
        MODEL, _evaluation(2, 5, "all", 0.8, n_excluded=None)
    )
