"""`chouette --help` must answer at once: no TensorFlow (nor matplotlib) at import time."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from chouette.entry import main


def test_importing_the_cli_does_not_import_tensorflow() -> None:
    code = (
        "import sys, chouette, chouette.commands, chouette.report, chouette.predict;"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_building_the_parser_imports_no_pydantic_nor_drivers() -> None:
    code = (
        "import sys; from chouette.parser import build_parser; build_parser();"
        "heavy = [m for m in ('pydantic', 'asyncpg', 'aio_pika', 'tensorflow')"
        " if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_and_usage_errors_import_no_pydantic_nor_drivers() -> None:
    code = (
        "import sys; from chouette.entry import main; code = main(['train']);"
        "heavy = [m for m in ('pydantic', 'asyncpg', 'aio_pika') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy or code != 2 else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_answers_under_one_second() -> None:
    best = float("inf")
    for _ in range(3):  # the best of three: this machine is shared with training jobs
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "chouette", "--help"], capture_output=True, text=True
        )
        best = min(best, time.perf_counter() - start)
        assert done.returncode == 0
        assert "train" in done.stdout and "predict" in done.stdout
    assert best < 1.0, f"chouette --help took {best:.2f}s"


@pytest.mark.parametrize(
    "command",
    ["train", "evaluate", "status", "watch", "models", "predict", "report", "services", "demo"],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out
