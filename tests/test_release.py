"""`course release`: release/ is nbgrader's student version of source/, and up to date."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.exercises import registry
from autograder.inside.nbgrader_api import alembic_head_in_process, venv_on_path
from autograder.store.release import (
    ReleaseError,
    assignments,
    check_release_up_to_date,
    release,
)

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = registry(ROOT)


def _grade_id(cell) -> str:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")


@pytest.mark.slow
def test_a_new_gradebook_is_stamped_with_what_the_alembic_command_says(tmp_path, monkeypatch):
    """nbgrader asks `alembic heads` for a new gradebook's revision; ours answers in process
    (no command runs), the same revision, and the database is stamped with it."""
    import sqlite3
    import subprocess

    import nbgrader.api

    alembic_head_in_process()
    nbgrader.api.get_alembic_version.cache_clear()

    def no_command(*args, **kwargs):
        raise AssertionError(f"a command ran: {args}")

    with monkeypatch.context() as m:
        m.setattr(subprocess, "check_output", no_command)
        with nbgrader.api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", "c"):
            pass
    ini = tmp_path / "alembic.ini"  # the command over nbgrader's migrations, as nbgrader runs it
    ini.write_text(f"[alembic]\nscript_location = {Path(nbgrader.__file__).parent / 'alembic'}\n")
    with venv_on_path():
        expected = subprocess.check_output(["alembic", "-c", str(ini), "heads"],
                                           text=True).split()[0]
    with sqlite3.connect(tmp_path / "gradebook.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(expected,)]


@pytest.mark.slow
def test_committed_release_is_up_to_date():
    """Fails when source/ changed and `course release` was not run (or release/ was edited)."""
    problems = check_release_up_to_date(ROOT)
    assert problems == [], "run `course release` and commit release/:\n" + "\n".join(problems)
    assert sorted(p.name for p in (ROOT / "release").iterdir() if p.is_dir()) == assignments(ROOT)


@pytest.mark.parametrize("assignment", sorted(EXERCISES))
def test_released_notebook_hides_solutions_and_hidden_tests(assignment):
    spec = EXERCISES[assignment]
    source = nbformat.read(spec.notebook, as_version=4)
    released = nbformat.read(ROOT / "release" / assignment / spec.notebook_name, as_version=4)
    text = nbformat.writes(released)
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    assert "HIDDEN TESTS" in nbformat.writes(source)  # the source keeps them
    by_id = {_grade_id(c): c for c in released.cells if _grade_id(c)}
    graded = {spec.solution_id, *spec.points}
    assert graded <= set(by_id)
    # one "in your own words" answer per graded chapter, graded by hand in formgrader
    written = {_grade_id(c) for c in source.cells if _grade_id(c) and c.cell_type == "markdown"
               and c.metadata.nbgrader.get("grade")}
    assert len(written) == 1
    for gid in written:
        assert by_id[gid].source == "YOUR ANSWER HERE", gid
        assert by_id[gid].metadata.nbgrader["points"] == 2, gid
    for gid in set(by_id) - graded - written:  # the closing exercises: ungraded, stubbed
        assert by_id[gid].metadata.nbgrader["solution"] is True, gid
        assert by_id[gid].metadata.nbgrader["grade"] is False, gid
        assert "raise NotImplementedError()" in by_id[gid].source, gid
    assert "raise NotImplementedError()" in by_id[spec.solution_id].source
    for gid, points in spec.points.items():
        meta = by_id[gid].metadata
        assert meta.nbgrader["points"] == points and meta.nbgrader["locked"] is True, gid
        assert meta["editable"] is False and meta["deletable"] is False, gid
        assert meta.nbgrader["schema_version"] == 3 and meta.nbgrader["checksum"], gid
    # everything but the graded cells is the instructor's notebook, unchanged
    assert [c.source for c in released.cells if not _grade_id(c)] == \
        [c.source for c in source.cells if not _grade_id(c)]


def _validate(path):
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT / "autograder")).load_config()
    return Validator(config=config).validate(str(path))


@pytest.mark.parametrize("folder", ["source", "release"])
@pytest.mark.parametrize("assignment", sorted(EXERCISES))
@pytest.mark.slow
def test_nbgrader_validate_passes_on_source_and_fails_on_release(assignment, folder):
    """What a student sees with `nbgrader validate`: the stubs fail every test cell, and the
    untouched written answer asks for a response."""
    path = ROOT / folder / assignment / EXERCISES[assignment].notebook_name
    results = _validate(path)
    if folder == "source":
        assert results == {}, results
    else:
        assert set(results) == {"failed"}
        errors = [cell["raw_error"] for cell in results["failed"]]
        written = [c for c in nbformat.read(path, as_version=4).cells
                   if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")]
        unanswered = [e for e in errors if e == "You did not provide a response."]
        assert len(written) >= 1 and len(unanswered) == len(written), errors
        stubs = [e for e in errors if e not in unanswered]
        assert len(stubs) == len(EXERCISES[assignment].points)
        assert all("NotImplementedError" in e for e in stubs), errors


def _tiny_course(root):
    """A course with one small assignment: a solution cell and two test cells."""
    (root / "autograder").mkdir(parents=True)
    shutil.copyfile(ROOT / "autograder" / "nbgrader_config.py",
                    root / "autograder" / "nbgrader_config.py")
    (root / "pyproject.toml").write_text("")
    folder = root / "source" / "01_tiny"
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("x\n1\n")

    def meta(gid, test, points=0):
        nb = {"grade": test, "grade_id": gid, "locked": test, "schema_version": 3,
              "solution": not test, "task": False}
        return {"nbgrader": {**nb, "points": points} if test else nb}

    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})
    nb.cells = [
        new_markdown_cell("# Doubling"),
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
                      "    ### END SOLUTION", metadata=meta("double_solution", False)),
        new_code_cell("assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(5) == 10\n"
                      "### END HIDDEN TESTS", metadata=meta("test_double", True, 2)),
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    nbformat.write(nb, folder / "01_tiny.ipynb")
    return folder / "01_tiny.ipynb"


@pytest.mark.slow
def test_release_is_deterministic_and_its_check_catches_changes(tmp_path):
    notebook = _tiny_course(tmp_path)
    release(tmp_path)
    released = tmp_path / "release" / "01_tiny"
    assert sorted(p.name for p in released.iterdir()) == ["01_tiny.ipynb", "data.csv"]
    first = (released / "01_tiny.ipynb").read_bytes()
    assert b"NotImplementedError" in first and b"double(5)" not in first
    assert check_release_up_to_date(tmp_path) == []
    release(tmp_path)
    assert (released / "01_tiny.ipynb").read_bytes() == first  # same bytes every time

    nb = nbformat.read(notebook, as_version=4)
    nb.cells[0].source = "# Doubling a number"
    nbformat.write(nb, notebook)
    (tmp_path / "release" / "99_old").mkdir()
    (released / "notes.txt").write_text("edited by hand")
    assert check_release_up_to_date(tmp_path) == [
        "release/01_tiny/notes.txt is not in source/",
        "release/01_tiny/01_tiny.ipynb differs from a fresh release",
        "release/99_old/ has no source/99_old/",
    ]

    nb.cells[2].metadata.nbgrader["grade_id"] = "double_solution"  # a duplicate grade_id
    nbformat.write(nb, notebook)
    with pytest.raises(ReleaseError, match="generate_assignment 01_tiny failed"):
        release(tmp_path)


def test_course_release_stops_when_a_graded_cell_has_no_trusted_check(tmp_path, capsys):
    """The tiny course's test cell has no exercise module: the instructor is told, and nothing
    is released."""
    from autograder.cli import main

    _tiny_course(tmp_path)
    assert main(["release", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "test cells (test_double) but no module in autograder/exercises/" in err
    assert "there is no source/01_metrics/" in err  # and the course's own modules, no notebook
    assert not (tmp_path / "release").exists()


@pytest.mark.parametrize("folder", ["source", "release"])
def test_every_notebook_is_valid_for_its_nbformat_version(folder):
    """A cell id in an nbformat 4.4 notebook (ids came with 4.5) makes it invalid: Jupyter
    warns on opening it, and nbformat.validate refuses what is built from it."""
    for path in sorted((ROOT / folder).glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as err:
            pytest.fail(f"{path.relative_to(ROOT)}: {err.message}")
