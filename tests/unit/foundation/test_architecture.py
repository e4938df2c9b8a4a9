"""The layout's rules (docs/architecture.md), checked on the source rather than trusted."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("shared", "services")}


SOURCES = sorted([*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")])


def test_the_walk_sees_the_code() -> None:
    """Guards the two tests below against passing on an empty or wrong tree."""
    modules = {module_name(p) for p in SOURCES}
    assert {"shared.broker", "services.trainer.handler", "services.api.app"} <= modules
    assert "shared.broker" in imported(ROOT / "services/fetcher/__main__.py") | imported(
        ROOT / "shared/runtime.py"
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_services_talk_only_through_messages_and_tables(path: Path) -> None:
    own = module_name(path).split(".")
    for name in imported(path):
        target = name.split(".")
        if own[0] == "shared":
            assert target[0] != "services", f"{module_name(path)} imports the service {name}"
        elif target[0] == "services" and len(target) > 1:
            assert target[1] == own[1], f"{module_name(path)} imports another service: {name}"


# A pointer to a document users of the project never have: a path out of the repository,
# or a design document that is not in it.
OUTSIDE = re.compile(r"\.\./shared|DESIGN(\.md| ?§)")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    suffixes = {".py", ".md", ".sql", ".toml", ".yml", ".yaml", ".env", ".cfg", ".txt", ""}
    return [ROOT / p for p in out if Path(p).suffix in suffixes and (ROOT / p).is_file()]


def test_nothing_points_outside_the_repository() -> None:
    files = tracked_text_files()
    assert ROOT / "README.md" in files and ROOT / "docs/architecture.md" in files
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)
