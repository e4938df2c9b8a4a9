"""A cache directory left by a trainer killed with ``kill -9`` is removed at start-up; one
a live training uses is not (``services/trainer/cache_dir.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from services.trainer import cache_dir
from services.trainer.cache_dir import sweep_stale

# A training as far as its cache directory goes: takes it, says where, waits to be killed.
TRAINING = """
import sys, time, uuid
from services.trainer.cache_dir import training_cache_dir
with training_cache_dir(sys.argv[1], uuid.uuid4()) as path:
    print(path, flush=True)
    time.sleep(600)
"""


def _training(root: str, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINING, root], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the training never took its cache directory"
    path = Path(line)
    assert path.is_dir() and (path / cache_dir.LOCK_NAME).exists()
    (path / "train-images").mkdir()
    (path / "train-images" / "0.f32").write_bytes(b"\0" * 1024)  # resized images
    return proc, path


@pytest.mark.parametrize("under", ["tmpdir", "TRAINER_CACHE_DIR"])
def test_the_cache_of_a_killed_training_is_swept_a_live_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, under: str
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(cache_dir, "_temporary_root", lambda: tmp)
    root = str(tmp_path / "cache") if under == "TRAINER_CACHE_DIR" else ""
    killed, dead_dir = _training(root, tmp)
    live, live_dir = _training(root, tmp)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert dead_dir.is_dir(), "kill -9 leaves the directory behind"
        assert sweep_stale(root) == [dead_dir]
        assert not dead_dir.exists()
        assert live_dir.is_dir() and (live_dir / "train-images" / "0.f32").exists()
    finally:
        live.kill()
        live.wait(10)


def test_an_unlocked_directory_is_left_alone_while_young(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One without its lock file: a training creating it right now, or a leftover of a
    trainer from before the lock (removed once older than the grace period)."""
    monkeypatch.setattr(cache_dir, "_temporary_root", lambda: tmp_path)
    young = tmp_path / f"chouette-request-{uuid.uuid4()}-abc"
    young.mkdir()
    old = tmp_path / f"chouette-request-{uuid.uuid4()}-def"
    old.mkdir()
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    other = tmp_path / "unrelated"
    other.mkdir()
    assert sweep_stale("") == [old]
    assert young.is_dir() and other.is_dir()
