"""`course grade` on real submissions: nbgrader plus the trusted checks, end to end.

Each graded chapter gets one batch of students built from the released notebook (release/):
the solution (from source/, markers removed), the untouched release, and the wrong
implementations of autograder/samples/<chapter>/*.py put in place of the exercise stub. A batch
is graded once per test session (shared between pytest-xdist workers through a file lock) and
the tests assert on its rows.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock

from autograder.exercises import registry
from autograder.grade import grade
from autograder.steps.nbgrader_step import parse_scores
from autograder.store.results import CSV_COLUMNS, GradeRow, read_results
from autograder.store.samples import ci_parameters_of, mistakes, sample_notebook
from autograder.store.submissions import collect
from course.spreadsheet import safe_cell as csv_safe

ROOT = Path(__file__).resolve().parents[1]
# Linux grades in the sandbox (without bubblewrap the grading says so and the test fails);
# elsewhere no sandbox can exist, so the tests grade without it.
ISOLATE = sys.platform.startswith("linux")
EXERCISES = registry(ROOT)
WORKERS = 2

ALL = object()  # every test cell fails
# student -> (what goes in the solution cell, the test cells that must fail, how it is handed in)
CASES = {
    "01_metrics": {
        "solution": ("solution", set(), "folder"),
        "untouched": ("release", ALL, "folder"),
        "arith-mean": ("f_arithmetic_mean",
                       {"test_f_score_values", "test_f_score_edge_cases", "test_binary_scores"},
                       "folder"),
        "no-zero-div": ("f_no_zero_division",
                        {"test_f_score_edge_cases", "test_binary_scores",
                         "test_binary_scores_zero_division"}, "folder"),
    },
    "04_learning_rate": {
        "solution": ("solution", set(), "folder"),
        "sign-flipped": ("momentum_sign_flipped", ALL, "assignment-folder"),
        # the single-step cell checks state["velocity"] (lr * g here); the lr changes of the
        # trajectory and param-group cells tell the conventions apart
        "lr-in-velocity": ("momentum_lr_in_velocity", ALL, "folder"),
        "no-grad-check": ("momentum_no_grad_check", {"test_momentum_param_groups"}, "folder"),
    },
    "05_regularization": {
        "solution": ("solution", set(), "zip"),
        "untouched": ("release", ALL, "folder"),
        "no-scaling": ("dropout_no_scaling", ALL, "folder"),
        "active-at-eval": ("dropout_active_at_eval",
                           {"test_dropout_basics", "test_dropout_gradient", "test_dropout_module"},
                           "folder"),
        # the same wrong dropout, with two test cells rewritten to pass and two deleted
        "tampers-tests": ("dropout_active_at_eval",
                          {"test_dropout_basics", "test_dropout_gradient", "test_dropout_module"},
                          "tamper-tests"),
    },
    "06_batch_norm": {
        "solution": ("solution", set(), "folder"),
        "untouched": ("release", ALL, "zip"),
        "biased-running-var": ("bn_biased_running_var",
                               {"test_batch_norm_training", "test_batch_norm_4d"}, "folder"),
        "batch-stats-at-eval": ("bn_batch_stats_at_eval",
                                {"test_batch_norm_eval", "test_batch_norm_4d"}, "folder"),
        "wrong-axes-4d": ("bn_wrong_axes_4d", {"test_batch_norm_4d"}, "assignment-folder"),
        "calls-library": ("bn_calls_library", {"test_batch_norm_own_code"}, "folder"),
    },
}
BROKEN = {  # chapter 1 batch: entries that cannot be graded normally
    "bad-json": "invalid notebook",
    "empty": "no notebook",
    "two-notebooks": "several notebooks",
    "kernel-death": "nbgrader",
}


def test_every_graded_chapter_has_a_batch_of_existing_samples():
    """Every sample is scored against the notebook's tests in test_trusted.py; these batches
    run the ones named above through nbgrader too."""
    assert set(CASES) == set(EXERCISES)
    for assignment, cases in CASES.items():
        for what, _, _ in cases.values():
            assert what in {"solution", "release", *mistakes(ROOT, assignment)}, what


def _grade_id(cell) -> str:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")


def submission(assignment: str, what: str, how: str = "folder"):
    """The released notebook with ``what`` in the solution cell ("release": left as released),
    its experiments at the chapter's CI parameters (what is checked here is the same at any
    size; the honest students of test_adversarial.py hand in full-size notebooks)."""
    nb = sample_notebook(ROOT, assignment, what, ci_parameters_of(ROOT, assignment))
    if how == "tamper-tests":
        tests = [c for c in nb.cells if _grade_id(c) in EXERCISES[assignment].points]
        for cell in tests[::2]:
            cell.source = "assert True  # all good"
        nb.cells = [c for c in nb.cells if not any(c is t for t in tests[1::2])]
    return nb


def write_submission(folder: Path, student: str, nb, assignment: str, how: str) -> None:
    name = f"{assignment}.ipynb"
    if how == "zip":
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / f"{student}.zip", "w") as zf:
            zf.writestr(f"{assignment}/{name}", nbformat.writes(nb))
        return
    target = folder / student / (assignment if how == "assignment-folder" else "")
    target.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target / name)


def build_batch(assignment: str, folder: Path) -> None:
    for student, (what, _, how) in CASES[assignment].items():
        write_submission(folder, student, submission(assignment, what, how), assignment, how)
    if assignment == "01_metrics":
        (folder / "bad-json").mkdir()
        (folder / "bad-json" / "01_metrics.ipynb").write_text('{"cells": [', encoding="utf-8")
        (folder / "empty").mkdir()
        (folder / "empty" / "notes.txt").write_text("forgot the notebook")
        for name in ("a.ipynb", "b.ipynb"):
            write_submission(folder / "two-notebooks", "", submission(assignment, "release"),
                             assignment, "folder")
            (folder / "two-notebooks" / "01_metrics.ipynb").rename(folder / "two-notebooks" / name)
        nb = submission(assignment, "solution")
        cell = next(c for c in nb.cells if _grade_id(c) == "f_score_solution")
        cell.source += "\n\nimport os\nos._exit(1)  # kills the kernel\n"
        write_submission(folder, "kernel-death", nb, assignment, "folder")


def graded_batch(assignment: str, shared: Path) -> tuple[Path, dict[str, GradeRow], str]:
    """(out dir, rows by student, stdout of `course grade`) of the chapter's batch.

    The first test that asks grades every chapter's batch at once, each with its own
    `course grade` process, so the cores stay busy; the others wait for the result.
    """
    with FileLock(str(shared / "grade-batches.lock")):
        if not (shared / "batches.done").exists():
            _grade_batches(shared)
            (shared / "batches.done").write_text("")
    out = shared / f"graded-{assignment}"
    data = json.loads((out / "batch.json").read_text())
    return out, {k: GradeRow(**v) for k, v in data["rows"].items()}, data["stdout"]


def _grade_batches(shared: Path) -> None:
    procs = {}
    for assignment in CASES:
        subs, out = shared / f"submissions-{assignment}", shared / f"graded-{assignment}"
        build_batch(assignment, subs)
        cmd = [sys.executable, "-m", "autograder.cli", "grade", assignment, str(subs),
               "--out", str(out), "--workers", str(WORKERS), "--root", str(ROOT),
               "--db", f"sqlite:///{out}/gradebook.db"]  # not the course's own gradebook
        procs[assignment] = subprocess.Popen(
            cmd + ([] if ISOLATE else ["--no-isolation"]), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    for assignment, proc in procs.items():
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stdout + stderr
        out = shared / f"graded-{assignment}"
        rows = {r.student_id: r.__dict__ for r in _latest_rows(out)}
        (out / "batch.json").write_text(json.dumps({"rows": rows, "stdout": stdout}))


def _latest_rows(out: Path) -> list[GradeRow]:
    return list({r.student_id: r for r in read_results(out)}.values())


@pytest.fixture(scope="module", params=sorted(CASES))
def batch(request, shared_dir):
    return request.param, *graded_batch(request.param, shared_dir)


def _failing(row: GradeRow) -> set[str]:
    return {gid for gid, cell in row.cells.items() if not cell["passed"]}


# --------------------------------------------------------------------------- on real batches


@pytest.mark.slow
def test_every_submission_has_a_row(batch):
    assignment, out, rows, _ = batch
    expected = set(CASES[assignment]) | (set(BROKEN) if assignment == "01_metrics" else set())
    assert set(rows) == expected
    with (out / "grades.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == CSV_COLUMNS
    assert {r["student_id"] for r in table} == expected
    assert all(r["assignment"] == assignment for r in table)
    max_score = EXERCISES[assignment].max_score
    assert all(float(r["max_score"]) == max_score for r in table)


@pytest.mark.slow
def test_solution_gets_full_marks(batch):
    assignment, out, rows, _ = batch
    row = rows["solution"]
    max_score = EXERCISES[assignment].max_score
    assert (row.status, row.score, row.max_score) == ("graded", max_score, max_score), row.reason
    assert row.nbgrader_score == max_score and not row.flagged and row.reason == ""


@pytest.mark.slow
def test_untouched_release_gets_zero(batch):
    assignment, _, rows, _ = batch
    if "untouched" not in rows:
        pytest.skip("no untouched release in this batch (nbgrader validate checks it fails)")
    row = rows["untouched"]
    assert (row.status, row.score, row.nbgrader_score, row.flagged) == ("graded", 0, 0, False)
    assert _failing(row) == set(EXERCISES[assignment].points)
    assert all("NotImplementedError" in c["message"] for c in row.cells.values()), row.cells


@pytest.mark.slow
def test_wrong_implementations_fail_the_right_cells(batch):
    """Partial marks: exactly the expected cells fail; nbgrader agrees with the trusted check."""
    assignment, _, rows, _ = batch
    cells = EXERCISES[assignment].points
    for student, (_, failing, _) in CASES[assignment].items():
        row = rows[student]
        expected = set(cells) if failing is ALL else failing
        assert row.status == "graded", (student, row.reason)
        assert _failing(row) == expected, (student, row.reason)
        assert row.score == sum(p for gid, p in cells.items() if gid not in expected), student
        # nbgrader ran the (restored) test cells and scored each cell the same way
        assert not row.flagged, (student, row.cells)
        assert row.nbgrader_score == row.score, student
        for gid, cell in row.cells.items():
            assert cell["nbgrader"] == cell["points"], (student, gid)


@pytest.mark.slow
def test_edited_or_deleted_test_cells_are_not_rewarded(batch, tmp_path):
    assignment, out, rows, _ = batch
    if assignment != "05_regularization":
        pytest.skip("the tampered submission is in the chapter 5 batch")
    honest, tampered = rows["active-at-eval"], rows["tampers-tests"]
    assert tampered.score == honest.score < honest.max_score
    assert tampered.nbgrader_score == honest.nbgrader_score and not tampered.flagged
    # nbgrader ran the instructor's test cells, restored from the gradebook
    graded = out / "work" / "tampers-tests" / "nbgrader" / "autograded" / "tampers-tests"
    nb = nbformat.read(graded / assignment / f"{assignment}.ipynb", as_version=4)
    restored = {_grade_id(c): c.source for c in nb.cells
                if _grade_id(c) in EXERCISES[assignment].points}
    assert set(restored) == set(EXERCISES[assignment].points)
    assert not any("assert True  # all good" in src for src in restored.values())


@pytest.mark.slow
def test_feedback_html_for_each_graded_student(batch):
    assignment, out, rows, _ = batch
    for student, row in rows.items():
        page = out / "feedback" / student / assignment / f"{assignment}.html"
        if row.status == "graded" and row.nbgrader_score is not None:
            text = page.read_text(encoding="utf-8")
            assert "<script" not in text.lower()
            assert "Content-Security-Policy" in text
            assert f"Recorded score: {row.score:g} / {row.max_score:g}" in text
        else:
            assert not page.exists()


@pytest.mark.slow
def test_no_page_but_the_sanitised_one_stays_after_grading(batch):
    """nbgrader's own feedback page keeps the student's script (issue 29): once the sanitised
    copy is in OUT/feedback/, no HTML page is left in OUT/work/."""
    _, out, rows, _ = batch
    assert any(r.status == "graded" for r in rows.values())
    assert (out / "work").is_dir()
    assert sorted(p.relative_to(out) for p in (out / "work").rglob("*.htm*")) == []


@pytest.mark.slow
def test_broken_submissions_get_a_reason(batch):
    assignment, _, rows, stdout = batch
    if assignment != "01_metrics":
        pytest.skip("the broken submissions are in the chapter 1 batch")
    for student, reason in BROKEN.items():
        assert reason in rows[student].reason, (student, rows[student].reason)
    for student in ("bad-json", "empty", "two-notebooks"):
        assert (rows[student].status, rows[student].score) == ("error", 0)
    dead = rows["kernel-death"]  # the solution cell kills the process that runs it
    assert dead.status == "graded" and dead.score == 0 and dead.flagged
    # the command printed one line per student and a summary table
    for student in rows:
        assert f"] {student}: " in stdout
    assert "student" in stdout and "reason" in stdout and "graded" in stdout


@pytest.mark.slow
def test_resume_regrades_only_what_is_missing(batch, tmp_path):
    assignment, out, rows, _ = batch
    if assignment != "01_metrics":
        pytest.skip("resuming is checked on the chapter 1 batch")
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed, ignore=shutil.ignore_patterns("work", "feedback"))
    lines = (resumed / "results.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["student_id"] != "arith-mean"]
    # an interrupted run: one student never recorded, the last line cut in half
    (resumed / "results.jsonl").write_text("\n".join(kept) + "\n" + kept[-1][:40])
    again = grade(assignment, out.parent / f"submissions-{assignment}", resumed, root=ROOT,
                  workers=WORKERS, isolate=ISOLATE)
    by_student = {r.student_id: r for r in again}
    assert set(by_student) == set(rows)
    assert not by_student["arith-mean"].resumed
    assert all(r.resumed for s, r in by_student.items() if rows[s].status == "graded"
               and s != "arith-mean")
    for student, row in by_student.items():  # regrading gives identical scores
        assert (row.score, row.status, row.flagged) == (rows[student].score, rows[student].status,
                                                        rows[student].flagged), student


# --------------------------------------------------------------------------- one-offs


@pytest.mark.slow
def test_timeout_is_recorded(tmp_path):
    """A solution cell that never returns: both steps are stopped and the row says why."""
    nb = submission("01_metrics", "solution")
    cell = next(c for c in nb.cells if _grade_id(c) == "f_score_solution")
    cell.source += "\n\nimport time\n\nwhile True:\n    time.sleep(1)\n"
    write_submission(tmp_path / "subs", "looper", nb, "01_metrics", "folder")
    rows = grade("01_metrics", tmp_path / "subs", tmp_path / "out", root=ROOT, workers=1,
                 isolate=ISOLATE, timeout=10)
    (row,) = rows
    assert (row.student_id, row.status, row.score, row.flagged) == ("looper", "graded", 0, True)
    assert "timed out" in row.reason


def test_the_template_is_prepared_once_per_source(tmp_path, monkeypatch):
    """nbgrader's generate_assignment runs the first time; afterwards the cached template is
    copied, until the assignment's source (or nbgrader's configuration) changes."""
    from autograder.store import release
    from autograder.store.template import prepare_template

    root = tmp_path / "root"
    shutil.copytree(ROOT / "source" / "01_metrics", root / "source" / "01_metrics")
    (root / "autograder").mkdir()
    shutil.copyfile(ROOT / release.CONFIG, root / release.CONFIG)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    real = release.prepare_course
    monkeypatch.setattr(release, "prepare_course",
                        lambda *a: calls.append(a) or real(*a))
    ex = registry(ROOT)["01_metrics"]

    def prepare(work: str) -> Path:
        template = prepare_template(root, ex, tmp_path / work, None)
        assert (template / "gradebook.db").is_file()
        return template

    first = prepare("a")
    second = prepare("b")
    assert len(calls) == 1  # the second came from the cache
    same = [p.relative_to(first) for p in first.rglob("*") if p.is_file()]
    assert same and all((second / rel).read_bytes() == (first / rel).read_bytes()
                        for rel in same)
    notebook = root / "source" / "01_metrics" / ex.notebook_name
    notebook.write_text(notebook.read_text().replace("F-score", "F score", 1))
    prepare("c")
    assert len(calls) == 2  # a new source: prepared again
    assert not [p for p in (tmp_path / "cache" / "dl-tuning-course" / "templates").iterdir()
                if p.name.startswith(".")]  # no half-built template is left


def test_unknown_assignment_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no graded exercises"):
        grade("02_data_splits", tmp_path, tmp_path / "out", root=ROOT, isolate=ISOLATE)


@pytest.mark.parametrize("cell_timeout, timeout", [(0, 60), (60, 60), (90, 60), (10, 0)])
def test_cell_timeout_must_be_below_the_timeout(tmp_path, cell_timeout, timeout):
    with pytest.raises(ValueError, match="cell timeout"):
        grade("01_metrics", tmp_path, tmp_path / "out", root=ROOT, isolate=ISOLATE,
              timeout=timeout, cell_timeout=cell_timeout)


def test_collect_layouts_and_bad_entries(tmp_path):
    subs = tmp_path / "subs"
    nb = nbformat.writes(submission("05_regularization", "release"))
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "05_regularization.ipynb").write_text(nb)
    (subs / "bob" / "05_regularization").mkdir(parents=True)
    (subs / "bob" / "05_regularization" / "05_regularization.ipynb").write_text(nb)
    (subs / "carol").mkdir()
    (subs / "carol" / "my_work.ipynb").write_text(nb)  # another name, but the only notebook
    (subs / "dave.ipynb").write_text(nb)
    (subs / "bad name!").mkdir()
    (subs / ".hidden").mkdir()
    (subs / "README.txt").write_text("LMS export")
    with zipfile.ZipFile(subs / "eve.zip", "w") as zf:
        zf.writestr("../../escape.ipynb", nb)  # path traversal: never extracted
        zf.writestr("eve/05_regularization/05_regularization.ipynb", nb)
    with zipfile.ZipFile(subs / "frank.zip", "w") as zf:
        zf.writestr("/etc/evil.ipynb", nb)
        zf.writestr("x/../../evil.ipynb", nb)
    (subs / "gina.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with zipfile.ZipFile(subs / "hal.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("05_regularization.ipynb", b"0" * (21 * 2**20))  # compresses to ~20 kB
    found = {s.student_id: s for s in collect(subs, "05_regularization", tmp_path / "unpacked")}
    (invalid,) = [sid for sid in found if sid.startswith("_bad_name_-")]  # never a valid id
    assert set(found) == {"alice", "bob", "carol", "dave", invalid, "eve", "frank", "gina", "hal"}
    for sid in ("alice", "bob", "carol", "dave", "eve"):
        assert found[sid].notebook is not None and found[sid].reason == "", sid
        assert found[sid].notebook.read_text() == nb
    assert found["eve"].notebook == tmp_path / "unpacked" / "eve" / "05_regularization.ipynb"
    assert found[invalid].reason == "invalid student id 'bad name!'"
    assert found["frank"].notebook is None and "notebook" in found["frank"].reason
    assert "unreadable zip" in found["gina"].reason
    assert "larger than" in found["hal"].reason
    assert not (tmp_path / "escape.ipynb").exists() and not list(tmp_path.glob("**/evil.ipynb"))
    assert found["alice"].sha256 == found["dave"].sha256 != ""


def test_scores_from_the_sandbox_are_parsed_strictly():
    good = {"ok": True, "error": "", "scores": {"a": [1.0, 2.0], "b": [0, 1]}}
    assert parse_scores(good) == ({"a": 1.0, "b": 0.0}, "")
    for bad in ([], {"ok": True, "error": "", "scores": {"a": [float("nan"), 1]}},
                {"ok": True, "error": "", "scores": {"a": ["1", 1]}},
                {"ok": True, "error": "", "scores": {"a": [True, 1]}},
                {"ok": "yes", "error": "", "scores": {}},
                {"ok": True, "error": 3, "scores": {}}):
        scores, problem = parse_scores(bad)
        assert scores == {} and problem, bad


def test_csv_cells_cannot_become_formulas():
    assert csv_safe("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert csv_safe("-1+2") == "'-1+2" and csv_safe(-1.0) == -1.0
    assert csv_safe("failed test_x") == "failed test_x" and csv_safe(None) == ""


def test_an_empty_folder_measures_the_budgets_and_a_finished_run_does_not(tmp_path, monkeypatch):
    """`course grade` on an empty folder is how the budgets are measured before the deadline
    (the adversarial tests and benchmarks/grading.py rely on it); a resumed run with every
    student already graded times no reference."""
    from autograder.grade import Grading
    from autograder.store.results import record
    from autograder.student import Context

    measured = []

    def prepare(self, exercise, todo):  # the real template takes seconds
        (self.out_dir / "work").mkdir(parents=True, exist_ok=True)
        return Context(exercise, tmp_path / "template", self.out_dir, self.isolate, self.timeout)

    monkeypatch.setattr(Grading, "prepare", prepare)
    monkeypatch.setattr(Grading, "apply_budgets",
                        lambda self, ctx: measured.append(ctx.template.name))
    (tmp_path / "empty").mkdir()
    assert grade("01_metrics", tmp_path / "empty", tmp_path / "out", root=ROOT,
                 isolate=False) == []
    assert measured == ["template"]

    measured.clear()
    notebook = tmp_path / "subs" / "ada" / "01_metrics.ipynb"
    notebook.parent.mkdir(parents=True)
    nbformat.write(sample_notebook(ROOT, "01_metrics", "solution"), notebook)
    (sub,) = collect(tmp_path / "subs", "01_metrics", tmp_path / "unpacked")
    (tmp_path / "done").mkdir()
    record(tmp_path / "done", GradeRow("ada", "01_metrics", 3.0, 3.0, "graded",
                                       sha256=sub.sha256))
    rows = grade("01_metrics", tmp_path / "subs", tmp_path / "done", root=ROOT, isolate=False)
    assert [(r.student_id, r.resumed) for r in rows] == [("ada", True)]
    assert measured == []
