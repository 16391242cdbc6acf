"""A fault of the grader is never a student's zero: the row says ``grader-error``, the gradebook
gets no score, ``course grade`` exits 4 naming the student, and a rerun grades them again.

The faults are made by replacing one public function for the test: a trusted check of chapter
1 that raises KeyError (a bug in the check, graded for real in the sandbox), or a step of
``autograder.student`` that crashes (then nothing runs in the sandbox: these tests are quick).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

import autograder.student
from autograder.cli import main
from autograder.exercises import metrics
from autograder.grade import grade
from autograder.steps.trusted import CellScore
from autograder.store.gradebook import nbgrader_settings, recorded
from autograder.store.results import ERROR, GRADED, GRADER_ERROR, read_results
from autograder.store.samples import sample_notebook

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_metrics"
ISOLATE = sys.platform.startswith("linux")


def _hand_in(subs: Path, student: str, kind: str = "solution") -> None:
    folder = subs / student
    folder.mkdir(parents=True)
    nbformat.write(sample_notebook(ROOT, ASSIGNMENT, kind), folder / f"{ASSIGNMENT}.ipynb")


def _grade(subs: Path, out: Path, **kwargs):
    """grade() without the reference's budgets (measuring them grades the solution twice)."""
    return {r.student_id: r for r in grade(ASSIGNMENT, subs, out, root=ROOT, workers=1,
                                           budgets=False, **kwargs)}


def _full_marks(exercise, notebook, workdir, **_):
    return {gid: CellScore(pts, pts, True, "passed") for gid, pts in exercise.points.items()}


def _crash(*_args, **_kwargs):
    raise RuntimeError("the step broke")


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_check_that_raises_is_a_grader_error_not_a_zero(tmp_path, monkeypatch, capsys):
    """A trusted check with a bug (KeyError, not Fail): grader-error, no score in the gradebook,
    exit status 4 with the student named."""
    real = metrics.binary_scores

    def buggy(plan):
        real(plan)  # the same probes; only the check is broken

        def check(results):
            raise KeyError("no such probe")

        return check

    monkeypatch.setattr(metrics, "binary_scores", buggy)
    _hand_in(tmp_path / "subs", "ada")
    db = f"sqlite:///{tmp_path / 'gradebook.db'}"
    status = main(["grade", ASSIGNMENT, str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                   "--workers", "1", "--flat-limits", "--db", db, "--root", str(ROOT)]
                  + ([] if ISOLATE else ["--no-isolation"]))
    err = capsys.readouterr().err
    assert status == 4
    assert "grader failed on 1 student(s): ada" in err
    (row,) = read_results(tmp_path / "out")
    assert row.status == GRADER_ERROR and row.cells == {}
    assert "test_binary_scores raised KeyError" in row.reason
    _, course_id = nbgrader_settings(ROOT)
    assert "ada" not in recorded(db, course_id, ASSIGNMENT)  # no score, not a 0


def test_a_step_that_crashes_is_a_grader_error_with_where(tmp_path, monkeypatch):
    monkeypatch.setattr(autograder.student, "trusted_grade", _crash)
    _hand_in(tmp_path / "subs", "ada")
    (row,) = _grade(tmp_path / "subs", tmp_path / "out", isolate=False).values()
    assert row.status == GRADER_ERROR and row.cells == {} and row.nbgrader_score is None
    assert row.reason.startswith("grader error (not the student's): RuntimeError: the step broke")
    assert "test_grader_error.py:" in row.reason and "in _crash" in row.reason  # where it broke


def test_a_crash_after_the_score_leaves_no_score_on_the_row(tmp_path, monkeypatch):
    """Both steps scored, then publishing the feedback crashed: the row keeps none of it."""
    monkeypatch.setattr(autograder.student, "trusted_grade", _full_marks)
    monkeypatch.setattr(autograder.student, "run_nbgrader",
                        lambda *a, **k: ({"test_f_score_values": 1.0}, ""))
    monkeypatch.setattr(autograder.student, "publish_feedback", _crash)
    _hand_in(tmp_path / "subs", "ada")
    (row,) = _grade(tmp_path / "subs", tmp_path / "out", isolate=False).values()
    assert (row.status, row.score, row.cells, row.nbgrader_score, row.flagged) == (
        GRADER_ERROR, 0.0, {}, None, False)
    assert "in _crash" in row.reason


def test_a_missing_harness_is_a_grader_error_not_a_zero(tmp_path, monkeypatch):
    """The harness not where the grader runs it from (as after a move): not every student's 0."""
    import autograder.steps.trusted

    monkeypatch.setattr(autograder.steps.trusted, "HARNESS", tmp_path / "harness.py")
    _hand_in(tmp_path / "subs", "ada")
    (row,) = _grade(tmp_path / "subs", tmp_path / "out", isolate=False).values()
    assert row.status == GRADER_ERROR and "harness" in row.reason and "missing" in row.reason


def test_a_submission_without_notebook_stays_the_students_error(tmp_path, monkeypatch):
    monkeypatch.setattr(autograder.student, "trusted_grade", _crash)  # never reached
    (tmp_path / "subs" / "bob").mkdir(parents=True)
    (tmp_path / "subs" / "bob" / "notes.txt").write_text("forgot the notebook")
    (row,) = _grade(tmp_path / "subs", tmp_path / "out", isolate=False).values()
    assert row.status == ERROR and "no notebook" in row.reason


def test_a_rerun_grades_grader_errors_again_and_keeps_graded_rows(tmp_path, monkeypatch):
    """Only ``graded`` rows are resumed: a grader-error (and an error) is graded again."""
    _hand_in(tmp_path / "subs", "ada")
    _hand_in(tmp_path / "subs", "bob")
    crashing = {"ada"}

    def trusted(exercise, notebook, workdir, **kwargs):
        if Path(workdir).name in crashing:
            raise RuntimeError("a bug, fixed before the rerun")
        return _full_marks(exercise, notebook, workdir)

    monkeypatch.setattr(autograder.student, "trusted_grade", trusted)
    monkeypatch.setattr(autograder.student, "run_nbgrader",
                        lambda *a, **k: ({}, "nbgrader skipped by the test"))
    first = _grade(tmp_path / "subs", tmp_path / "out", isolate=False)
    assert (first["ada"].status, first["bob"].status) == (GRADER_ERROR, GRADED)

    crashing.clear()
    again = _grade(tmp_path / "subs", tmp_path / "out", isolate=False)
    assert (again["ada"].status, again["ada"].resumed) == (GRADED, False)
    assert again["ada"].score == again["ada"].max_score
    assert (again["bob"].status, again["bob"].resumed) == (GRADED, True)
    assert sorted(r.student_id for r in read_results(tmp_path / "out")) == ["ada", "ada", "bob"]
