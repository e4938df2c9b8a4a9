"""The layout's rules (docs/architecture.md), checked on the source rather than trusted."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
    return {n for n in names if n.split(".")[0] in PACKAGES}


PACKAGES = ("shared", "services", "chouette", "localstack")
SOURCES = sorted(path for package in PACKAGES for path in ROOT.glob(f"{package}/**/*.py"))
MODULES = {module_name(path): path for path in SOURCES}


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: its top level, including inside
    ``if``/``try`` blocks, but not under ``if TYPE_CHECKING:`` nor in functions or classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try) and not _is_type_checking(node):
            for block in ("body", "orelse", "finalbody"):
                found += _module_level(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                found += _module_level(handler.body)
    return found


def _project_module(name: str, modules: set[str]) -> str | None:
    """The project module that importing ``name`` runs last (``a.b.c`` may be a module,
    or a name in module ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module → the project modules it imports when it is imported (``sources``: module
    name → its code). Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, except
    those the importer is in: Python has started them before it."""
    modules = set(sources)
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, code in sources.items():
        for node in _module_level(ast.parse(code).body):
            targets = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{alias.name}" for alias in node.names]
                if node.module and node.level == 0
                else []
            )
            for target in targets:
                found = _project_module(target, modules)
                while found:
                    if found != name and not name.startswith(found + "."):
                        graph[name].add(found)
                    found = _project_module(found.rpartition(".")[0], modules)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def unexplained_function_imports(code: str) -> list[str]:
    """Imports of project modules inside functions without a ``# lazy: <why>`` comment on
    one of their lines: an import in a function hides a dependency (or an import cycle);
    only keeping TensorFlow and its like out of fast paths justifies one."""
    lines = code.splitlines()
    found = []
    for function in ast.walk(ast.parse(code)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            if any(n.split(".")[0] in PACKAGES for n in names) and "# lazy:" not in text:
                found.append(f"{node.lineno}: {text.strip()}")
    return found


def test_the_walk_sees_the_code() -> None:
    """Guards the two tests below against passing on an empty or wrong tree."""
    modules = {module_name(p) for p in SOURCES}
    assert {
        "shared.broker",
        "services.trainer.handler",
        "services.api.app",
        "chouette.app",
        "localstack.servers",
    } <= modules
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


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_services_and_shared_import_neither_the_cli_nor_the_local_tooling(path: Path) -> None:
    """``chouette`` (an application) and ``localstack`` (development servers) sit on top of
    ``shared``; a service or ``shared`` importing them would ship them in every process.
    ``localstack`` is used by the CLI, never the other way round."""
    own = module_name(path).split(".")[0]
    forbidden = {
        "shared": ("chouette", "localstack"),
        "services": ("chouette", "localstack"),
        "localstack": ("chouette", "services"),
    }.get(own, ())
    wrong = sorted(n for n in imported(path) if n.split(".")[0] in forbidden)
    assert not wrong, f"{module_name(path)} imports {wrong}"


def test_the_module_level_imports_have_no_cycle() -> None:
    graph = import_graph({name: path.read_text() for name, path in MODULES.items()})
    assert "chouette.errors" in graph["chouette.app"]  # the walk sees the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle_and_ignores_type_checking() -> None:
    """Guards the test above against a walk that cannot see a cycle."""
    cycle = {"p.a": "from p.b import x\n", "p.b": "import p.a\n", "p": ""}
    assert find_cycle(import_graph(cycle)) == ["p.a", "p.b", "p.a"]
    only_typing = {
        "p.a": "from p.b import x\n",
        "p.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n",
        "p": "",
    }
    assert find_cycle(import_graph(only_typing)) is None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_function_level_project_import_says_why(path: Path) -> None:
    found = unexplained_function_imports(path.read_text())
    assert not found, f"{path.relative_to(ROOT)}: imports in functions without '# lazy:':\n" + (
        "\n".join(found)
    )


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


TESTS = sorted((ROOT / "tests").glob("**/*.py"))


def conftest_imports(code: str) -> list[str]:
    """Imports of a conftest module anywhere in ``code`` (``tests.conftest``, ``from tests.x
    import conftest``, ``from .conftest import y``...): pytest loads conftest files itself,
    and a module importing one runs it a second time under another name."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any("conftest" in name.split(".") for name in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_conftest_check_finds_every_form() -> None:
    """Guards the test below against a walk that cannot see such an import."""
    for code in (
        "from tests.conftest import Servers\n",
        "import tests.e2e.conftest\n",
        "from tests.unit.fetcher import conftest\n",
        "from .conftest import x\n",
        "from . import conftest\n",
        "def f():\n    from tests.conftest import TEMPLATE_DB\n",
    ):
        assert conftest_imports(code), code
    assert conftest_imports("from tests.plugins.servers import Servers\n") == []
    assert ROOT / "tests" / "conftest.py" in TESTS


def test_no_test_module_imports_a_conftest() -> None:
    """Conftest files define and register fixtures; what tests share lives in ordinary
    modules (``tests/plugins/``, or a helpers module beside the tests)."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in TESTS
        for line in conftest_imports(path.read_text())
    ]
    assert not found, "imports from conftest modules:\n" + "\n".join(found)
