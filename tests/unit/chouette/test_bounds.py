"""Out-of-range input ends in one line (exit 2) before anything is opened, never a traceback."""

from __future__ import annotations

import pytest

from chouette.entry import main
from chouette.errors import UsageError
from chouette.parser import build_parser
from chouette.submit import evaluation_request
from tests.unit.chouette.test_validation import train

TOO_BIG = str(2**63)  # one above PostgreSQL's bigint

OUT_OF_RANGE = [
    (["evaluate", "--model", TOO_BIG], "--model"),
    (["report", "99999999999999999999"], "MODEL"),
    (["report", "0"], "MODEL"),
    (["predict", "--model", TOO_BIG, "x.png"], "--model"),
    (["status", "--limit", "-1"], "--limit"),
    (["status", "--limit", "0"], "--limit"),
    (["models", "--limit", "-1"], "--limit"),
    (["models", "--limit", "99999999999999999999"], "--limit"),
    (train("--seed", TOO_BIG), "--seed (training.seed)"),
    (train("--seed", str(2**32)), "--seed (training.seed)"),  # NumPy's global seed: 32 bits
    (train("--freeze-epochs", "10" * 20), "--freeze-epochs"),
    (train("--early-stopping-patience", "10" * 20), "--early-stopping-patience"),
    (train("--timeout", "-5"), "--timeout"),
    (train("--timeout", "0"), "--timeout"),
    (train("--timeout", "nan"), "--timeout"),
    (train("--timeout", "inf"), "--timeout"),
    (["evaluate", "--model", "3", "--wait", "--timeout", "-1"], "--timeout"),
    (train("--tags", "vine"), "--tags (dataset.tags): a classifier needs at least two classes"),
    (
        train("--batch-size", "4096", "--image-size", "1024"),
        "--batch-size (training.batch_size): batch_size * image_size",
    ),
]


@pytest.fixture(autouse=True)
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers nobody listens on: input that got past validation would exit 1, not 2."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:x@127.0.0.1:9/none")
    monkeypatch.setenv("AMQP_URL", "amqp://x:x@127.0.0.1:9/")


@pytest.mark.parametrize(("argv", "named"), OUT_OF_RANGE)
def test_out_of_range_input_is_one_line_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("chouette: error: ")
    assert named in err


def test_the_largest_seed_and_model_id_are_still_valid() -> None:
    from chouette.submit import parse_model_id, training_request

    seed = str(2**32 - 1)
    assert training_request(build_parser().parse_args(train("--seed", seed))).training.seed
    assert parse_model_id(str(2**63 - 1)) == 2**63 - 1
    args = build_parser().parse_args(train("--batch-size", "16", "--image-size", "1024"))
    assert training_request(args).training.batch_size == 16  # 2**24 pixels: just fits


def test_evaluating_tags_the_model_was_not_trained_on_is_refused() -> None:
    argv = ["evaluate", "--model", "7", "--start-date", "2024-07-01", "--end-date", "2024-07-31"]
    args = build_parser().parse_args([*argv, "--tags", "vine,ground"])
    with pytest.raises(UsageError, match=r"--tags .*trained on vine,grass only.* score ground"):
        evaluation_request(args, model_tags=("vine", "grass"))
    subset = build_parser().parse_args([*argv, "--tags", "grass"])
    assert evaluation_request(subset, model_tags=("vine", "grass")).dataset.tags == ("grass",)  # type: ignore[union-attr]
