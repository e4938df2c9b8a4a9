"""What ``GET /version`` answers: the package version and the git commit when known."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "chouette-pipeline"
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    """``CHOUETTE_GIT_COMMIT`` (set when the image is built), else ``git rev-parse HEAD`` of
    the source tree when it is a git checkout, else None."""
    commit = os.environ.get("CHOUETTE_GIT_COMMIT", "").strip()
    if commit:
        return commit
    if not (SOURCE_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def version_info() -> dict[str, Any]:
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    return {
        "name": PACKAGE,
        "version": version,
        "git_commit": git_commit(),
        "python": platform.python_version(),
    }
