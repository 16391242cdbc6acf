"""The trusted grader (autograder.steps.trusted) scores exactly like the notebooks' test cells.

For each graded chapter, the correct solution and every wrong implementation of
autograder/samples/<chapter>/ are scored twice: by ``trusted_grade`` (student code in the
sandbox, comparison here) and by the chapter's own test cells, visible and hidden, executed as
nbgrader's kernel would (one namespace, the solution cell then every test cell, a cell fails
when it raises). Both must fail the same cells; the solution must get full marks; regrading
gives identical scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.exercises import registry
from autograder.steps.trusted import CellScore, trusted_grade
from autograder.store import samples
from course.mistakes import KNOWN

ROOT = Path(__file__).resolve().parents[1]
ISOLATE = sys.platform.startswith("linux")  # as tests/test_grade.py
EXERCISES = registry(ROOT)

pytestmark = pytest.mark.slow


def source_notebook(assignment: str) -> Path:
    return EXERCISES[assignment].notebook


def released_notebook(assignment: str) -> Path:
    return ROOT / "release" / assignment / EXERCISES[assignment].notebook_name


def notebook_points(assignment: str) -> dict[str, float]:
    """The points of the source notebook's graded test cells, read with nbformat."""
    nb = nbformat.read(source_notebook(assignment), as_version=4)
    return {c.metadata.nbgrader.grade_id: float(c.metadata.nbgrader.points) for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.solution}


def sample_code(assignment: str, kind: str) -> str:
    """A wrong implementation kept in autograder/samples/ (the one copy of it)."""
    return (ROOT / "autograder" / "samples" / assignment / f"{kind}.py").read_text()


def solution_code(assignment: str) -> str:
    """The instructor's solution cell with the nbgrader markers taken out."""
    return samples.solution_code(ROOT, assignment)


def make_submission(tmp_path: Path, assignment: str, code: str, name: str = "student") -> Path:
    """The released notebook with ``code`` in the exercise's solution cell."""
    nb = samples.released_with(ROOT, assignment, code)
    path = tmp_path / name / EXERCISES[assignment].notebook_name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def notebook_test_failures(assignment: str, code: str, notebook: Path | None = None,
                           messages: dict | None = None) -> set[str]:
    """The graded cells that fail when the source notebook's own tests (or ``notebook``'s) run
    against ``code``; ``messages`` gets each failure's message."""
    nb = nbformat.read(notebook or source_notebook(assignment), as_version=4)
    namespace: dict = {"__name__": "__main__"}
    try:
        exec(compile(code, "<solution>", "exec"), namespace)
    except Exception:  # noqa: BLE001 - a broken cell, as in the kernel: go on
        pass
    failed = set()
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in EXERCISES[assignment].points:
            try:
                exec(compile(cell.source, f"<{gid}>", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001
                failed.add(gid)
                if messages is not None:
                    messages[gid] = str(exc)
    return failed


def failures(scores: dict[str, CellScore]) -> set[str]:
    return {gid for gid, s in scores.items() if not s.passed}


def grade(tmp_path, assignment, code, **kw):
    nb = make_submission(tmp_path, assignment, code)
    return trusted_grade(EXERCISES[assignment], nb, tmp_path / "work", isolate=ISOLATE, **kw)


CASES = [(a, kind) for a in EXERCISES for kind in samples.mistakes(ROOT, a)]


@pytest.mark.parametrize("assignment", list(EXERCISES))
def test_the_solution_gets_full_marks_and_regrading_is_identical(tmp_path, assignment):
    code = solution_code(assignment)
    assert notebook_test_failures(assignment, code) == set()  # the notebook's own tests agree
    first = grade(tmp_path / "a", assignment, code)
    assert failures(first) == set(), {g: s.message for g, s in first.items() if not s.passed}
    assert all(s.diagnoses == () for s in first.values())  # the solution gets no diagnosis
    points = notebook_points(assignment)  # the one place points are written
    assert {g: s.max_points for g, s in first.items()} == points
    assert sum(s.points for s in first.values()) == sum(points.values())
    again = grade(tmp_path / "b", assignment, code)
    assert again == first


@pytest.mark.parametrize(("assignment", "name"), CASES)
def test_wrong_implementations_lose_the_cells_the_notebook_tests_fail(tmp_path, assignment,
                                                                      name):
    code = sample_code(assignment, name)
    expected = notebook_test_failures(assignment, code)
    assert expected, f"{name}: the notebook's tests should catch this mistake"
    scores = grade(tmp_path, assignment, code)
    assert failures(scores) == expected, {g: s.message for g, s in scores.items()}
    for gid, score in scores.items():
        assert score.points == (0.0 if gid in expected else score.max_points)
        assert score.message and (score.passed or score.message != "passed")
        # each mistake is named by its own diagnosis, and by no other one
        assert score.diagnoses == (() if score.passed else (name,)), (gid, score.diagnoses)


HIDDEN_ONLY = {"dropout_one_mask_per_batch"}  # mistakes only the hidden tests catch


@pytest.mark.parametrize(("assignment", "name"), CASES)
def test_the_visible_tests_name_the_mistake_they_catch(assignment, name):
    """What a student sees in JupyterLab (Validate): each visible test cell of the released
    notebook that fails says which known mistake it is, in the grader's words (issue 31)."""
    messages: dict[str, str] = {}
    notebook_test_failures(assignment, sample_code(assignment, name),
                           released_notebook(assignment), messages)
    assert bool(messages) is (name not in HIDDEN_ONLY), sorted(messages)
    said = f"What your code does: {KNOWN[name].text()}"
    for gid, message in messages.items():
        assert message.startswith(said), (gid, message[:300])
        assert message.count("What your code does:") == 1, (gid, message[:300])


@pytest.mark.parametrize("assignment", list(EXERCISES))
def test_every_known_mistake_has_its_sample_and_a_diagnosis(assignment):
    exercise = EXERCISES[assignment].exercise
    assert {m.name for m in exercise.mistakes} == set(samples.mistakes(ROOT, assignment))
    for mistake in exercise.mistakes:
        assert mistake.does and mistake.why and mistake.hint and mistake.section


EXPECTED = {  # the mistakes of BRIEF.md and issue 11, with the cells they must lose
    ("01_metrics", "f_arithmetic_mean"): {"test_f_score_values", "test_f_score_edge_cases",
                                          "test_binary_scores"},
    ("01_metrics", "f_no_zero_division"): {"test_f_score_edge_cases", "test_binary_scores",
                                           "test_binary_scores_zero_division"},
    ("04_learning_rate", "momentum_lr_in_velocity"): set(EXERCISES["04_learning_rate"].points),
    ("05_regularization", "dropout_no_scaling"): set(EXERCISES["05_regularization"].points),
    ("05_regularization", "dropout_active_at_eval"): {"test_dropout_basics",
                                                      "test_dropout_gradient",
                                                      "test_dropout_module"},
    ("05_regularization", "dropout_keeps_with_probability_p"): {"test_dropout_statistics",
                                                                "test_dropout_module"},
    ("06_batch_norm", "bn_biased_running_var"): {"test_batch_norm_training",
                                                 "test_batch_norm_4d"},
    ("06_batch_norm", "bn_batch_stats_at_eval"): {"test_batch_norm_eval", "test_batch_norm_4d"},
    ("06_batch_norm", "bn_wrong_axes_4d"): {"test_batch_norm_4d"},
    ("06_batch_norm", "bn_calls_library"): {"test_batch_norm_own_code"},
}


@pytest.mark.parametrize(("assignment", "name"), list(EXPECTED))
def test_the_mistakes_named_in_the_brief_fail_the_right_cells(assignment, name):
    code = sample_code(assignment, name)
    assert notebook_test_failures(assignment, code) == EXPECTED[assignment, name]


def test_the_untouched_release_scores_zero(tmp_path):
    nb = released_notebook("05_regularization")
    scores = trusted_grade(EXERCISES["05_regularization"], nb, tmp_path, isolate=ISOLATE)
    assert all(s.points == 0 for s in scores.values())
    assert "NotImplementedError" in scores["test_dropout_basics"].message or \
        "raise" in scores["test_dropout_basics"].message


def test_missing_or_broken_notebooks_score_zero_with_a_reason(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{ not json")
    scores = trusted_grade(EXERCISES["01_metrics"], bad, tmp_path / "w1", isolate=ISOLATE)
    assert set(scores) == set(EXERCISES["01_metrics"].points)
    assert all(s.points == 0 and "JSON" in s.message for s in scores.values())
    nb = json.loads(released_notebook("01_metrics").read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("nbgrader", None)
        if "def f_score" in "".join(cell["source"]):
            cell["source"] = "import math\n"  # the exercise is gone as well
    stripped = tmp_path / "stripped.ipynb"
    stripped.write_text(json.dumps(nb))
    scores = trusted_grade(EXERCISES["01_metrics"], stripped, tmp_path / "w2", isolate=ISOLATE)
    assert all(s.points == 0 and "f_score_solution" in s.message for s in scores.values())
    scores = trusted_grade(EXERCISES["01_metrics"], tmp_path / "absent.ipynb", tmp_path / "w3",
                           isolate=ISOLATE)
    assert all(s.points == 0 for s in scores.values())


def test_a_solution_cell_without_metadata_is_found_by_what_it_defines(tmp_path):
    nb = nbformat.read(make_submission(tmp_path, "01_metrics", solution_code("01_metrics")),
                       as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    path = tmp_path / "pasted.ipynb"
    nbformat.write(nb, path)
    scores = trusted_grade(EXERCISES["01_metrics"], path, tmp_path / "w", isolate=ISOLATE)
    assert failures(scores) == set()


def test_magics_in_the_solution_cell_are_tolerated(tmp_path):
    code = "%matplotlib inline\n!echo hi\n" + solution_code("01_metrics")
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set()


def test_an_endless_loop_costs_only_the_cells_that_call_it(tmp_path):
    code = solution_code("05_regularization").replace(
        "return dropout(x, self.p, self.training)", "while True:\n            pass")
    assert "while True" in code
    scores = grade(tmp_path, "05_regularization", code, probe_seconds=3)
    assert failures(scores) == {"test_dropout_module"}
    assert "too long" in scores["test_dropout_module"].message


def test_a_spinning_loop_stops_at_its_cpu_budget_not_the_clock(tmp_path):
    """With a CPU budget of 0.5 s per probe, the looping probe stops after that much CPU time.
    Its clock limit (600 s) is past the whole run's (150 s): without the CPU budget the run is
    killed and every cell fails."""
    code = solution_code("05_regularization").replace(
        "return dropout(x, self.p, self.training)", "while True:\n            pass")
    scores = grade(tmp_path, "05_regularization", code, timeout=150, probe_seconds=600,
                   probe_cpu_seconds=0.5, keep_work=True)
    assert failures(scores) == {"test_dropout_module"}
    assert "too long" in scores["test_dropout_module"].message
    records = [json.loads(f.read_text()) for f in (tmp_path / "work" / "trusted" / "results")
               .glob("*.json") if f.stem not in ("exec", "done")]
    stopped = [r for r in records if r["status"] == "timeout"]
    # stopped at about 0.5 s of CPU time (the kernel accounts it by ticks: a few % either way)
    assert stopped and all(0.4 <= r["cpu"] < 5 for r in stopped), stopped
    assert all(r["cpu"] < 0.5 for r in records if r["status"] == "ok"), records


def test_a_crash_while_defining_keeps_what_was_defined(tmp_path):
    code = solution_code("01_metrics") + "\nraise RuntimeError('oops')\n"
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set()  # as in the notebook: the names exist, the tests pass
    code = "raise RuntimeError('oops')\n" + solution_code("01_metrics")
    scores = grade(tmp_path, "01_metrics", code)
    assert failures(scores) == set(EXERCISES["01_metrics"].points)
    assert "RuntimeError" in scores["test_f_score_values"].message
