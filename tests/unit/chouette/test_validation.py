"""Bad input is rejected before anything is opened: one line naming the field, exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import get_args

import pytest

from chouette.app import run_command
from chouette.entry import main
from chouette.errors import UsageError
from chouette.parser import build_parser
from shared import messages
from shared.messages import Message
from shared.settings import Settings

GOOD = ["--start-date", "2024-05-01", "--end-date", "2024-05-31", "--arch", "ResNet50"]


def train(*extra: str, base: list[str] = GOOD) -> list[str]:
    return ["train", *base, *extra]


BAD_TRAIN = [
    (train("--arch", "ResNet18"), "--arch"),
    (train("--tags", "vine,weeds"), "--tags"),
    (train("--tags", ","), "--tags"),
    (
        ["train", "--start-date", "2024-13-01", "--end-date", "2024-12-31", "--arch", "ResNet50"],
        "--start-date",
    ),
    (
        ["train", "--start-date", "2024-05-01", "--end-date", "2024-02-30", "--arch", "ResNet50"],
        "--end-date",
    ),
    (
        ["train", "--start-date", "yesterday", "--end-date", "2024-05-02", "--arch", "ResNet50"],
        "--start-date",
    ),
    (
        ["train", "--start-date", "86400", "--end-date", "2024-05-02", "--arch", "ResNet50"],
        "--start-date",
    ),
    (
        ["train", "--start-date", "2024-06-01", "--end-date", "2024-05-01", "--arch", "ResNet50"],
        "--start-date/--end-date",
    ),
    (train("--epochs", "0"), "--epochs"),
    (train("--epochs", "-3"), "--epochs"),
    (train("--epochs", "two"), "--epochs"),
    (train("--batch-size", "0"), "--batch-size"),
    (train("--test-fraction", "0"), "--test-fraction"),
    (train("--test-fraction", "1"), "--test-fraction"),
    (train("--val-fraction", "-0.1"), "--val-fraction"),
    (train("--val-fraction", "1.5"), "--val-fraction"),
    (train("--test-fraction", "0.6", "--val-fraction", "0.5"), "test_fraction"),
    (train("--learning-rate", "0"), "--learning-rate"),
    (train("--optimizer", "lbfgs"), "--optimizer"),
    (train("--image-size", "16"), "--image-size"),
    (train("--dropout", "1"), "--dropout"),
    (["train", "--end-date", "2024-05-02", "--arch", "ResNet50"], "--start-date"),
]
BAD_EVALUATE = [
    (["evaluate", "--model", "abc"], "--model"),
    (["evaluate", "--model", "0"], "--model"),
    (["evaluate", "--model", "3", "--start-date", "2024-05-01"], "--start-date/--end-date"),
    (["evaluate", "--model", "3", "--tags", "vine"], "--tags"),
]


class Recorder:
    def __init__(self) -> None:
        self.published: list[Message] = []

    async def publish(self, message: Message) -> None:
        self.published.append(message)

    async def consumer_counts(self, queues: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(queues, 1)


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Servers nobody listens on: if validation let anything through, the exit would be 1."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:x@127.0.0.1:9/none")
    monkeypatch.setenv("AMQP_URL", "amqp://x:x@127.0.0.1:9/")
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(("argv", "field"), BAD_TRAIN + BAD_EVALUATE)
def test_bad_input_exits_2_with_one_line_naming_the_field(
    argv: list[str], field: str, unreachable: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("chouette: error: ")
    assert field in err


@pytest.mark.parametrize(("argv", "field"), BAD_TRAIN[:-1] + BAD_EVALUATE)
async def test_nothing_is_published_for_rejected_input(
    argv: list[str], field: str, unreachable: Settings
) -> None:
    recorder = Recorder()
    with pytest.raises(UsageError, match=field.replace("/", ".")):
        args = build_parser().parse_args(argv)
        await run_command(args, settings=unreachable, publisher=recorder)
    assert recorder.published == []


def test_valid_input_gets_past_validation(unreachable: Settings) -> None:
    """The same path with good input reaches the database (and fails there: exit 1)."""
    assert main(train("--epochs", "1", "--tags", "vine,grass")) == 1


def test_unknown_command_and_missing_required_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2
    assert main(["evaluate"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "--model" in err[1]


def test_the_parser_lists_the_choices_without_importing_pydantic() -> None:
    """One definition (shared.choices) for the messages and ``--help``, which stays light."""
    code = (
        "import sys; from chouette import parser;"
        " assert 'pydantic' not in sys.modules, 'pydantic imported';"
        " print(','.join(parser.ARCHITECTURES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ",".join(
        get_args(messages.TrainingParams.model_fields["architecture"].annotation)
    )


def test_every_training_parameter_has_a_flag() -> None:
    from chouette.submit import _TRAINING_FLAGS

    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}  # type: ignore[union-attr]
    fields = set(messages.TrainingParams.model_fields) - {"architecture"}
    assert fields == set(_TRAINING_FLAGS)
    assert fields <= flags


def test_training_request_keeps_only_given_flags() -> None:
    from chouette.submit import training_request

    args = build_parser().parse_args(train("--epochs", "2", "--no-augment", "--tags", "grass,vine"))
    message = training_request(args)
    assert message.training.epochs == 2
    assert message.training.augment is False
    assert message.training.batch_size == messages.TrainingParams.model_fields["batch_size"].default
    assert message.dataset.tags == ("vine", "grass")


def test_evaluation_on_another_range_defaults_to_the_model_classes() -> None:
    from chouette.submit import evaluation_request

    args = build_parser().parse_args(
        ["evaluate", "--model", "7", "--start-date", "2024-07-01", "--end-date", "2024-07-31"]
    )
    message = evaluation_request(args, model_tags=("vine", "ground"))
    assert message.model_id == 7
    assert message.dataset is not None
    assert message.dataset.tags == ("vine", "ground")
    held_out = evaluation_request(build_parser().parse_args(["evaluate", "--model", "7"]))
    assert held_out.dataset is None
