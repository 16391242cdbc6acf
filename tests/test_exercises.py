"""The exercise registry (autograder.exercises): one module per graded exercise, checked
against the source notebooks before anyone is graded."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from autograder import exercises
from autograder.exercises import RegistryError, registry

ROOT = Path(__file__).resolve().parents[1]
GRADING = ROOT / "autograder"


def _test_cells(notebook: Path) -> dict[str, float]:
    nb = nbformat.read(notebook, as_version=4)
    return {c.metadata.nbgrader.grade_id: float(c.metadata.nbgrader.points) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.solution}


def test_every_notebook_with_graded_cells_has_its_exercise_and_its_points():
    graded = registry(ROOT)
    with_tests = {p.parent.name for p in (ROOT / "source").glob("*/*.ipynb") if _test_cells(p)}
    assert set(graded) == with_tests == {"01_metrics", "04_learning_rate", "05_regularization",
                                         "06_batch_norm"}
    for exercise in graded.values():
        points = _test_cells(exercise.notebook)
        assert exercise.points == points and list(exercise.points) == list(points)
        assert exercise.max_score == sum(points.values())
        assert set(exercise.build_plan()[1]) == set(points)


def test_sandbox_side_code_never_imports_the_course_package():
    """harness.py and the exercises' sandbox files run under `python -I` in the sandbox."""
    files = [GRADING / "inside" / "harness.py", *(GRADING / "exercises").glob("*_sandbox.py")]
    assert len(files) >= 3
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("course", "autograder") for n in names), (
                path.name, names)


def _course_copy(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("")
    shutil.copytree(ROOT / "autograder", root / "autograder")
    for notebook in (ROOT / "source").glob("*/*.ipynb"):
        (root / "source" / notebook.parent.name).mkdir(parents=True)
        shutil.copyfile(notebook, root / "source" / notebook.parent.name / notebook.name)
    return root


def _rename_test_cell(notebook: Path, old: str, new: str) -> None:
    nb = json.loads(notebook.read_text())
    (cell,) = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == old]
    cell["metadata"]["nbgrader"]["grade_id"] = new
    notebook.write_text(json.dumps(nb))


def test_a_test_cell_without_a_check_stops_grading_with_a_message(tmp_path, capsys):
    from autograder.cli import main

    root = _course_copy(tmp_path / "course")
    _rename_test_cell(root / "source" / "06_batch_norm" / "06_batch_norm.ipynb",
                      "test_batch_norm_eval", "test_batch_norm_eval_mode")
    with pytest.raises(RegistryError) as err:
        registry(root)
    assert "the test cell 'test_batch_norm_eval_mode' of 06_batch_norm.ipynb has no trusted " \
           "check" in str(err.value)
    assert "the check 'test_batch_norm_eval' has no test cell" in str(err.value)
    assert "autograder/exercises/batch_norm.py" in str(err.value)

    subs = tmp_path / "subs" / "alice"
    subs.mkdir(parents=True)
    shutil.copyfile(ROOT / "release" / "06_batch_norm" / "06_batch_norm.ipynb",
                    subs / "06_batch_norm.ipynb")
    out = tmp_path / "out"
    assert main(["grade", "06_batch_norm", str(subs.parent), "--out", str(out),
                 "--root", str(root)]) == 2
    assert "has no trusted check" in capsys.readouterr().err
    assert not (out / "results.jsonl").exists() and not (out / "grades.csv").exists()


def test_a_notebook_with_graded_cells_but_no_module_is_refused(tmp_path):
    root = _course_copy(tmp_path)
    shutil.copytree(root / "source" / "06_batch_norm", root / "source" / "08_copy")
    with pytest.raises(RegistryError, match="source/08_copy/06_batch_norm.ipynb has graded test "
                       "cells .* but no module in autograder/exercises/"):
        registry(root)


def test_an_unknown_assignment_names_the_graded_ones():
    with pytest.raises(ValueError, match="01_metrics, 04_learning_rate, 05_regularization, "
                                         "06_batch_norm"):
        exercises.exercise_for("02_data_splits", ROOT)
