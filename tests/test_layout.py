"""The layout's rules (issue 28), checked on the source: who imports whom, where the trust
boundary runs, and the size of modules and functions. Each test names what broke it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("course", "autograder")
# What the sandbox provides to autograder/inside/ besides the standard library: the packages of
# the environment it mounts that the inside modules use (never the trusted side of autograder).
INSIDE_MAY_IMPORT = {"autograder", "course", "numpy", "torch", "nbformat", "nbclient", "nbgrader",
                     "nbconvert", "jupyter_client", "ipykernel", "IPython", "traitlets", "nh3",
                     "alembic"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _sources(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "samples" not in path.relative_to(ROOT).parts:  # the known mistakes are data
                yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.AST):
    """(line, module, names) of every import in ``tree``, in functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]


def test_the_import_contracts_hold():
    """course/ imports nothing of autograder/, inside/ nothing of the trusted side, and no
    package has an import cycle (pyproject.toml's [tool.importlinter])."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is missing: pip install -e '.[dev]'"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_inside_imports_only_the_standard_library_and_what_the_sandbox_provides():
    found = []
    for path, tree in _sources("autograder/inside"):
        for line, module, _ in _imports(tree):
            top = module.split(".")[0]
            inside = module == "autograder" or module.startswith("autograder.inside")
            if top == "autograder" and not inside:
                found.append(f"{path.name}:{line} imports {module}")
            elif top not in sys.stdlib_module_names and top not in INSIDE_MAY_IMPORT:
                found.append(f"{path.name}:{line} imports {module} (not in the sandbox's list)")
    assert found == [], "\n".join(found)


def test_no_private_name_is_imported_across_modules():
    """``from x import _y`` (or ``x._y``) across modules of the project, tests included."""
    found = []
    modules = {"course", "autograder"}
    for path, tree in _sources(*PACKAGES, "tests", "benchmarks"):
        aliases = {}
        for line, module, names in _imports(tree):
            if module.split(".")[0] in modules:
                found += [f"{path.relative_to(ROOT)}:{line} {module}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
                aliases.update({n: module for n in names})
                aliases[module.split(".")[-1]] = module
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                             f"{node.value.id}.{node.attr}")
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "setattr"
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in aliases and isinstance(node.args[1], ast.Constant)
                    and str(node.args[1].value).startswith("_")):  # monkeypatch.setattr(m, "_x")
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                             f"{node.args[0].id}.{node.args[1].value}")
    assert found == [], "\n".join(found)


def test_no_module_over_500_lines_and_no_function_over_60():
    found = []
    for path, tree in _sources(*PACKAGES):
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: "
                                 f"{length} lines")
    assert found == [], "\n".join(found)


def test_the_package_marker_the_sandbox_mounts_imports_nothing():
    """autograder/__init__.py is mounted in the sandbox beside inside/: it must stay inert."""
    tree = ast.parse((ROOT / "autograder" / "__init__.py").read_text(encoding="utf-8"))
    assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
               for node in tree.body), "autograder/__init__.py may hold its docstring only"


@pytest.mark.parametrize("folder", ["tests"])
def test_every_test_asserts_something(folder):
    """A test with no assert, no pytest.raises/fail/skip and no helper that asserts cannot
    fail; list each one (helpers named _assert*/check*/_check* count as asserting)."""
    found = []
    for path, tree in _sources(folder):
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        asserting: set[str] = set()
        for _ in range(3):  # helpers that call helpers that assert
            asserting |= {name for name, fn in functions.items() if _checks(fn, asserting)}
        for name, node in functions.items():
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            if name.startswith("test_") and not fixture and name not in asserting:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == [], "\n".join(found)


def _checks(function: ast.FunctionDef, asserting: set[str]) -> bool:
    """Whether ``function`` asserts, expects an exception, or calls a helper that does."""
    for inner in ast.walk(function):
        if isinstance(inner, ast.Assert):
            return True
        if isinstance(inner, ast.Call):
            name = (inner.func.attr if isinstance(inner.func, ast.Attribute)
                    else getattr(inner.func, "id", ""))
            if name in ("raises", "fail", "skip", "warns", "xfail") or name in asserting or \
                    name.lstrip("_").startswith(("assert", "check", "expect")):
                return True
    return False
