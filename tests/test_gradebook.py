"""`course grade` records the trusted scores in nbgrader's gradebook (SQLite and PostgreSQL).

One real class of chapter 1 (the solution, the untouched release and a common mistake) is
graded once per session with `course grade` in the sandbox; the tests record its rows again
(what a resumed or repeated run does), into fresh SQLite files and databases of a PostgreSQL
server they start themselves, and read them back with nbgrader's own API.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock
from postgres import PostgresServer, find_binaries

from autograder.exercises import exercise_for
from autograder.final_feedback import FeedbackError, final_feedback
from autograder.isolation.sandbox import isolation_available
from autograder.store.deadlines import LatePolicy
from autograder.store.gradebook import (
    COMMENT_HEADER,
    GradebookBusy,
    Recorder,
    gradebook_lock,
    nbgrader_settings,
    open_gradebook,
    recorded,
)
from autograder.store.results import read_results
from autograder.store.samples import ci_parameters_of, write_samples
from course.notebooks import find_root

ROOT = find_root()
ASSIGNMENT = "01_metrics"
STUDENTS = ("solution", "untouched", "f-arithmetic-mean")
COURSE_ID = "dl-tuning"
WRITTEN = "explain_f_score"  # the chapter's written answer, 2 points, graded by hand

pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


def _course_grade(subs: Path, out: Path, db: str, root: Path, *extra: str) -> subprocess.Popen:
    isolate, _ = isolation_available()
    cmd = [sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT, str(subs), "--out",
           str(out), "--workers", "2", "--root", str(root), "--db", db, *extra]
    return subprocess.Popen(cmd + ([] if isolate else ["--no-isolation"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _course_copy(dest: Path) -> Path:
    """The course with release/01_metrics regenerated from source/ by `course release`."""
    for folder in ("source", "autograder", "release"):
        shutil.copytree(ROOT / folder, dest / folder)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "release", ASSIGNMENT,
                             "--root", str(dest)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return dest


def _answer(notebook: Path, text: str) -> None:
    nb = nbformat.read(notebook, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == WRITTEN]
    cell.source = text
    nbformat.write(nb, notebook)


@pytest.fixture(scope="session")
def graded_class(shared_dir) -> tuple[Path, Path, Path]:
    """(submissions, out, course root) of a class graded by `course grade` into
    out/gradebook.db; only the student "solution" answered the written question."""
    subs, out = shared_dir / "gradebook-class", shared_dir / "gradebook-graded"
    root = shared_dir / "gradebook-course"
    with FileLock(str(shared_dir / "gradebook-class.lock")):
        if not (out / "done").exists():
            _course_copy(root)
            every = shared_dir / "gradebook-samples"
            write_samples(root, ASSIGNMENT, every, ci_parameters_of(root, ASSIGNMENT))
            for student in STUDENTS:
                shutil.copytree(every / student, subs / student, dirs_exist_ok=True)
            _answer(subs / "solution" / f"{ASSIGNMENT}.ipynb",
                    "The harmonic mean follows the smaller of the two.")
            proc = _course_grade(subs, out, f"sqlite:///{out}/gradebook.db", root)
            stdout, _ = proc.communicate()
            assert proc.returncode == 0, stdout
            (out / "stdout.txt").write_text(stdout)
            (out / "done").write_text("")
    return subs, out, root


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this session (skipped where its binaries are missing)."""
    bin_dir = find_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are missing: `bash scripts/setup-system.sh` "
                    "installs them (Debian's postgresql)")
    server = PostgresServer(bin_dir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A new, empty gradebook of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gradebook.db"
    name = "gb_" + os.urandom(6).hex()
    return request.getfixturevalue("postgres").url(name)


def _grades_csv(out: Path) -> dict[str, dict]:
    with (out / "grades.csv").open(newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def _copy_out(out: Path, dest: Path) -> Path:
    """The graded class's out folder, without its gradebook and formgrader copies."""
    shutil.copytree(out, dest)
    shutil.rmtree(dest / "autograded")
    for path in dest.glob("gradebook.db*"):
        path.unlink()
    return dest


def _record(db_url: str, out: Path, subs: Path, course_dir: Path, root: Path,
            **kwargs) -> list[str]:
    rows = sorted({r.student_id: r for r in read_results(out)}.values(),
                  key=lambda r: r.student_id)
    said = []
    recorder = Recorder(db_url, course_dir, course_id=COURSE_ID, say=said.append, **kwargs)
    recorder.record(exercise_for(ASSIGNMENT, root), rows, template=out / "work" / "_template",
                    out_dir=out, submissions=subs)
    return said


def _check_matches_grades_csv(db_url: str, out: Path) -> None:
    """Test cells as grades.csv; the written answer left for a person when it was answered."""
    csv_rows = _grades_csv(out)
    cells = {r.student_id: r.cells for r in read_results(out)}
    scores = recorded(db_url, COURSE_ID, ASSIGNMENT)
    assert sorted(scores) == sorted(STUDENTS)
    for student, by_cell in scores.items():
        assert by_cell == {WRITTEN: 0.0, **{gid: c["points"] for gid, c in cells[student].items()}}
        assert sum(by_cell.values()) == pytest.approx(float(csv_rows[student]["score"]))
    with open_gradebook(db_url, COURSE_ID) as gb:
        for student in STUDENTS:
            submission = gb.find_submission(ASSIGNMENT, student)
            assert submission.score == pytest.approx(float(csv_rows[student]["score"]))
            assert submission.max_score == float(csv_rows[student]["max_score"]) + 2
            written = gb.find_grade(WRITTEN, ASSIGNMENT, ASSIGNMENT, student)
            answered = student == "solution"
            assert written.needs_manual_grade is answered
            assert written.auto_score == (None if answered else 0.0)
            assert submission.needs_manual_grade is answered
            assert not any(g.needs_manual_grade for g in submission.notebooks[0].grades
                           if g.name != WRITTEN)
            comment = gb.find_comment("f_score_solution", ASSIGNMENT, ASSIGNMENT, student)
            assert comment.auto_comment.startswith(COMMENT_HEADER)
            nbgrader_score = float(csv_rows[student]["nbgrader_score"])
            assert f"nbgrader's in-process score: {nbgrader_score:g}/6" in comment.auto_comment


def test_course_grade_records_the_trusted_scores_in_the_gradebook(graded_class):
    subs, out, root = graded_class
    _check_matches_grades_csv(f"sqlite:///{out}/gradebook.db", out)
    assert ("3 submission(s) of 01_metrics recorded; still to do in formgrader: 1 written "
            "answer(s) to grade, 0 flagged test cell(s) to review") in \
        (out / "stdout.txt").read_text()
    # formgrader's copy of each graded notebook, beside the SQLite gradebook
    for student in STUDENTS:
        assert (out / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()


def test_recorded_scores_match_grades_csv(graded_class, db_url, tmp_path):
    subs, out, root = graded_class
    _record(db_url, out, subs, tmp_path, root)
    _check_matches_grades_csv(db_url, out)
    _record(db_url, out, subs, tmp_path, root)  # a repeated run: nothing doubled
    _check_matches_grades_csv(db_url, out)
    with open_gradebook(db_url, COURSE_ID) as gb:
        assert len(gb.assignment_submissions(ASSIGNMENT)) == len(STUDENTS)


def _set_manual_score(db_url: str, student: str, cell: str, score: float) -> None:
    """What formgrader's grade API does when a person types a score."""
    with open_gradebook(db_url, COURSE_ID) as gb:
        grade = gb.find_grade(cell, ASSIGNMENT, ASSIGNMENT, student)
        grade.manual_score = score
        grade.needs_manual_grade = False
        gb.db.commit()


def test_a_manual_score_survives_a_regrade(graded_class, db_url, tmp_path):
    subs, out, root = graded_class
    _record(db_url, out, subs, tmp_path, root)
    _set_manual_score(db_url, "untouched", "test_f_score_values", 1.5)
    _set_manual_score(db_url, "solution", WRITTEN, 1.0)
    said = _record(db_url, out, subs, tmp_path, root)
    assert ("untouched test_f_score_values: kept the manual score 1.5 given in formgrader "
            "(trusted score 0)") in said
    assert f"solution {WRITTEN}: kept the manual score 1 given in formgrader" in said
    assert said[-1].endswith("still to do in formgrader: 0 written answer(s) to grade, "
                             "0 flagged test cell(s) to review")
    with open_gradebook(db_url, COURSE_ID) as gb:
        grade = gb.find_grade("test_f_score_values", ASSIGNMENT, ASSIGNMENT, "untouched")
        assert (grade.manual_score, grade.auto_score, grade.score) == (1.5, 0.0, 1.5)
        assert not grade.needs_manual_grade  # the same notebook: the person's review stands
        assert gb.find_submission(ASSIGNMENT, "untouched").score == 1.5
        assert gb.find_submission(ASSIGNMENT, "solution").score == 7.0  # 6 + the written 1


def test_a_resumed_course_grade_keeps_the_manual_score(graded_class, tmp_path):
    subs, out, root = graded_class
    copy = _copy_out(out, tmp_path / "out")
    db = f"sqlite:///{copy}/gradebook.db"
    _record(db, copy, subs, copy, root)
    _set_manual_score(db, "solution", "test_binary_scores", 1.0)
    proc = _course_grade(subs, copy, db, root)
    stdout, _ = proc.communicate()
    assert proc.returncode == 0, stdout
    assert "(already graded)" in stdout
    assert "solution test_binary_scores: kept the manual score 1 given in formgrader" in stdout
    assert recorded(db, COURSE_ID, ASSIGNMENT)["solution"]["test_binary_scores"] == 1.0


def test_a_flagged_submission_is_marked_for_manual_review(graded_class, db_url, tmp_path):
    subs, out, root = graded_class
    rows = {r.student_id: r for r in read_results(out)}
    row = rows["solution"]  # as if nbgrader's own test cell had failed: the two disagree
    row.cells["test_f_score_values"]["nbgrader"] = 0.0
    row.nbgrader_score, row.flagged = row.score - 2.0, True
    recorder = Recorder(db_url, tmp_path, course_id=COURSE_ID, say=lambda _: None)
    recorder.record(exercise_for(ASSIGNMENT, root), [row], template=out / "work" / "_template",
                    out_dir=out, submissions=subs)
    with open_gradebook(db_url, COURSE_ID) as gb:
        notebook = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "solution")
        assert notebook.flagged and notebook.needs_manual_grade
        review = {g.name for g in notebook.grades if g.needs_manual_grade}
        assert review == {"test_f_score_values", WRITTEN}  # the flagged cell, the answer
        assert notebook.score == 6.0  # the trusted score stays until a person decides
        comment = gb.find_comment("f_score_solution", ASSIGNMENT, ASSIGNMENT, "solution")
        assert "FLAGGED for review" in comment.auto_comment


def test_a_busy_gradebook_is_refused_clearly_and_nothing_is_recorded(graded_class, db_url,
                                                                     tmp_path):
    subs, out, root = graded_class
    with gradebook_lock(db_url, wait=0), pytest.raises(GradebookBusy) as err:
        _record(db_url, out, subs, tmp_path, root, wait=0.5)
    assert "another `course grade` is still recording into" in str(err.value)
    assert "Run the same command again" in str(err.value)
    with open_gradebook(db_url, COURSE_ID) as gb:
        assert gb.assignment_submissions(ASSIGNMENT) == []


def test_two_concurrent_course_grade_runs_lose_nothing(graded_class, db_url, tmp_path):
    """Two resumed runs wait on a held gradebook, then record one after the other."""
    subs, out, root = graded_class
    runs = []
    with gradebook_lock(db_url, wait=0):
        for name in ("ta1", "ta2"):
            copy = _copy_out(out, tmp_path / name)
            runs.append(_course_grade(subs, copy, db_url, root))
        deadline = time.monotonic() + 300
        waiting = [False, False]
        while not all(waiting) and time.monotonic() < deadline:
            for i, proc in enumerate(runs):
                if not waiting[i]:
                    line = proc.stdout.readline()
                    waiting[i] = "waiting for another `course grade`" in line
                    assert line or proc.poll() is None, "a run ended before it waited"
        assert all(waiting), "both runs should wait for the held gradebook"
    outputs = [proc.communicate()[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], outputs
    for stdout in outputs:
        assert "3 submission(s) of 01_metrics recorded" in stdout
    _check_matches_grades_csv(db_url, out)
    with open_gradebook(db_url, COURSE_ID) as gb:
        submissions = gb.assignment_submissions(ASSIGNMENT)
        assert sorted(s.student.id for s in submissions) == sorted(STUDENTS)
        for submission in submissions:
            (notebook,) = submission.notebooks
            assert len(notebook.grades) == len({g.name for g in notebook.grades})


# ------------------------------------------------------------ deadlines and `course export`

# Canvas's gradebook import (Canvas guides, "import grades in the Gradebook"): the student is
# identified by Student name, ID or SIS User ID, with SIS Login ID and Section; every other
# column is an assignment, numeric scores.
CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
# Gradescope's autograder specification (gradescope-autograders.readthedocs.io, "specs"):
GRADESCOPE_TOP = {"score", "execution_time", "output", "output_format", "test_output_format",
                  "test_name_format", "visibility", "stdout_visibility", "extra_data", "tests",
                  "leaderboard"}
GRADESCOPE_TEST = {"score", "max_score", "status", "name", "name_format", "number", "output",
                   "output_format", "tags", "visibility", "extra_data"}
GRADESCOPE_VISIBILITY = {"visible", "hidden", "after_due_date", "after_published"}
DEADLINE = datetime(2026, 10, 5, 21, 59, tzinfo=timezone.utc)


@pytest.fixture
def late_class(graded_class, tmp_path):
    """The class recorded with a deadline: solution 36 h late (timestamp.txt), untouched on
    time (timestamp.txt), f-arithmetic-mean 3 days late (the notebook's file time)."""
    db = f"sqlite:///{tmp_path}/gradebook.db"
    return _record_late(graded_class, tmp_path, db)


def _record_late(graded_class, tmp_path: Path, db: str):
    subs, out, root = graded_class
    late_subs = tmp_path / "subs"
    shutil.copytree(subs, late_subs)
    (late_subs / "solution" / "timestamp.txt").write_text(
        (DEADLINE + timedelta(hours=36)).strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
    (late_subs / "untouched" / "timestamp.txt").write_text("2026-10-05 20:00:00.000000 UTC")
    stamp = (DEADLINE + timedelta(days=3)).timestamp()
    os.utime(late_subs / "f-arithmetic-mean" / f"{ASSIGNMENT}.ipynb", (stamp, stamp))
    policy = LatePolicy(deadline=DEADLINE, per_day=0.1, max_fraction=0.5, grace_minutes=15)
    _record(db, out, late_subs, tmp_path, root, policies={ASSIGNMENT: policy})
    return db, out, root


def test_the_late_penalty_is_recorded_from_the_submission_time(late_class):
    db, _, _ = late_class
    with open_gradebook(db, COURSE_ID) as gb:
        assert gb.find_assignment(ASSIGNMENT).duedate == DEADLINE.replace(tzinfo=None)
        penalty = {s.student.id: s.notebooks[0].late_submission_penalty
                   for s in gb.assignment_submissions(ASSIGNMENT)}
    # of the 8 points (6 tested, 2 written): 36 h late is 2 started days x 10%; 3 days late is
    # 30%, capped at the score 1
    assert penalty == {"solution": pytest.approx(1.6), "untouched": None,
                       "f-arithmetic-mean": pytest.approx(1.0)}


def test_a_timestamp_inside_a_zip_changes_no_penalty(graded_class, tmp_path):
    """Two zips the LMS received two days late (their file times): the one holding a
    timestamp.txt the student wrote, claiming three hours early, loses what the plain one
    loses (issue 30: the channel's time, never the student's)."""
    subs, out, root = graded_class
    zips = tmp_path / "zips"
    zips.mkdir()
    late = (DEADLINE + timedelta(days=2)).timestamp()
    for student, forged in (("solution", True), ("f-arithmetic-mean", False)):
        with zipfile.ZipFile(zips / f"{student}.zip", "w") as zf:
            zf.write(subs / student / f"{ASSIGNMENT}.ipynb", f"{ASSIGNMENT}.ipynb")
            if forged:
                zf.writestr("timestamp.txt", (DEADLINE - timedelta(hours=3))
                            .strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
        os.utime(zips / f"{student}.zip", (late, late))
    db = f"sqlite:///{tmp_path}/gradebook.db"
    policy = LatePolicy(deadline=DEADLINE, per_day=0.1, max_fraction=0.5)
    _record(db, out, zips, tmp_path, root, policies={ASSIGNMENT: policy})
    with open_gradebook(db, COURSE_ID) as gb:
        graded = {s.student.id: s.notebooks[0] for s in gb.assignment_submissions(ASSIGNMENT)}
        penalty = {sid: nb.late_submission_penalty for sid, nb in graded.items()}
        comments = {sid: " ".join(c.auto_comment or "" for c in nb.comments)
                    for sid, nb in graded.items()}
    # 2 started days x 10% of the 8 points, capped at the score
    assert penalty["solution"] == pytest.approx(1.6)
    plain = {r.student_id: r for r in read_results(out)}["f-arithmetic-mean"]
    assert penalty["f-arithmetic-mean"] == pytest.approx(min(1.6, plain.score))
    assert "the zip's file time" in comments["solution"]


@pytest.mark.sandbox
def test_feedback_again_shows_the_manual_score_the_comment_and_the_penalty(late_class,
                                                                          tmp_path):
    """`course feedback` after grading by hand (issue 30): the page shows the final state, and
    beside it what `nbgrader release_feedback` needs."""
    db, _, root = late_class
    _grade_by_hand(db)
    isolate, _ = isolation_available()
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "feedback", ASSIGNMENT,
                             "--db", db, "--root", str(root)]
                            + ([] if isolate else ["--no-isolation"]),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    _check_final_pages(tmp_path)


@pytest.mark.sandbox
def test_feedback_again_from_a_postgresql_gradebook(graded_class, postgres, tmp_path):
    """The same pages from a gradebook on a PostgreSQL server: read once, as one snapshot."""
    db = postgres.url("gb_" + os.urandom(6).hex())
    _, _, root = _record_late(graded_class, tmp_path, db)
    _grade_by_hand(db)
    said = []
    made, failed = final_feedback(root, ASSIGNMENT, db_url=db, cdir=tmp_path,
                                  isolate=isolation_available()[0], say=said.append)
    assert sorted(made) == sorted(STUDENTS) and not failed, said
    _check_final_pages(tmp_path)
    assert not (tmp_path / ".course-feedback").exists()


def test_feedback_from_an_unreachable_gradebook_says_what_to_do(graded_class, tmp_path):
    _, _, root = graded_class
    with pytest.raises(FeedbackError, match="cannot read the gradebook .*check --db"):
        final_feedback(root, ASSIGNMENT, db_url="postgresql://course@127.0.0.1:1/none",
                       cdir=tmp_path, say=lambda _: None)
    assert not any(tmp_path.iterdir())


def _grade_by_hand(db: str) -> None:
    with open_gradebook(db, COURSE_ID) as gb:
        gb.find_grade("explain_f_score", ASSIGNMENT, ASSIGNMENT, "solution").manual_score = 1.5
        gb.find_comment("explain_f_score", ASSIGNMENT, ASSIGNMENT, "solution").manual_comment = (
            "Right idea <script>x</script>; say why the harmonic mean.")
        gb.db.commit()


def _check_final_pages(course: Path) -> None:
    folder = course / "feedback" / "solution" / ASSIGNMENT
    text = (folder / f"{ASSIGNMENT}.html").read_text(encoding="utf-8")
    # 6 tested + 1.5 by hand - 1.6 late (36 h: 2 started days x 10% of 8)
    assert "Final score: 5.9 / 8" in text and "late penalty 1.6 point(s) taken off" in text
    assert "Right idea" in text and "say why the harmonic mean" in text
    assert "<script" not in text.lower() and "BEGIN HIDDEN TESTS" not in text
    assert (folder / "timestamp.txt").read_text().startswith(
        (DEADLINE + timedelta(hours=36)).strftime("%Y-%m-%d %H:%M:%S"))
    assert sorted(p.name for p in (course / "feedback").iterdir()) == sorted(
        ["solution", "untouched", "f-arithmetic-mean"])


def _export(db: str, out: Path, root: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "export", "--db", db, "--out",
                             str(out), "--root", str(root)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_canvas_export_has_canvas_columns_and_the_penalised_scores(late_class, tmp_path):
    db, out, root = late_class
    _export(db, tmp_path / "export", root)
    with (tmp_path / "export" / "canvas.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert header == [*CANVAS_IDENTITY, ASSIGNMENT, "Notes"]
    by_login = {row[3]: dict(zip(header, row, strict=True)) for row in rows}
    assert sorted(by_login) == sorted(STUDENTS) and len(rows) == len(STUDENTS)
    csv_rows = _grades_csv(out)
    penalty = {"solution": 1.6, "untouched": 0.0, "f-arithmetic-mean": 1.0}
    for student, row in by_login.items():
        assert row["SIS User ID"] == student and row["Student"] == student
        expected = float(csv_rows[student]["score"]) - penalty[student]
        assert float(row[ASSIGNMENT]) == pytest.approx(expected)
    assert by_login["solution"]["Notes"] == (
        f"{ASSIGNMENT}: late by 36.0 h: -1.6 points (score before the penalty 6); "
        f"not graded yet (counted 0): {WRITTEN}")
    assert by_login["untouched"]["Notes"] == ""


def test_canvas_gets_its_exported_gradebook_back_filled(late_class, tmp_path):
    """`course export --canvas-gradebook`: Canvas's own export, the chapter's column (matched
    by name and id) holding the penalised scores, everything else as Canvas wrote it."""
    db, out, root = late_class
    exported = tmp_path / "canvas-export.csv"
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{ASSIGNMENT} (4501)",
              "Current Score"]
    with exported.open("w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows([header, ["    Points Possible", "", "", "", "", "8", ""]]
                                + [[s, str(100 + i), s, "", "A", "", ""]
                                   for i, s in enumerate(sorted(STUDENTS))])
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "export", "--db", db,
                             "--out", str(tmp_path / "export"), "--root", str(root),
                             "--canvas-gradebook", str(exported)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with (tmp_path / "export" / "canvas.csv").open(newline="") as f:
        ours = {r["SIS User ID"]: r[ASSIGNMENT] for r in csv.DictReader(f)}
    with (tmp_path / "export" / "canvas_import.csv").open(newline="") as f:
        back = list(csv.reader(f))
    assert back[0] == header and back[1][5] == "8"
    assert {row[2]: row[5] for row in back[2:]} == {s: f"{float(v):g}" for s, v in ours.items()}


def test_wide_export_has_a_column_per_assignment_and_per_test_cell(late_class, tmp_path):
    db, out, root = late_class
    _export(db, tmp_path / "export", root)
    with (tmp_path / "export" / "grades_wide.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    cells = {**exercise_for(ASSIGNMENT, root).points, WRITTEN: 2.0}  # the notebook's order
    assert list(rows[0]) == ["student_id", ASSIGNMENT, f"{ASSIGNMENT} late_penalty",
                             f"{ASSIGNMENT} submitted", f"{ASSIGNMENT} ungraded",
                             *(f"{ASSIGNMENT}/{gid}" for gid in cells)]
    assert rows[0]["student_id"] == "max_score" and float(rows[0][ASSIGNMENT]) == 8.0
    assert {gid: float(rows[0][f"{ASSIGNMENT}/{gid}"]) for gid in cells} == cells
    trusted = {r.student_id: r.cells for r in read_results(out)}
    for row in rows[1:]:
        student = row["student_id"]
        per_cell = {gid: float(row[f"{ASSIGNMENT}/{gid}"]) for gid in cells}
        assert per_cell == {WRITTEN: 0.0, **{g: c["points"] for g, c in trusted[student].items()}}
        assert float(row[ASSIGNMENT]) == pytest.approx(
            sum(per_cell.values()) - float(row[f"{ASSIGNMENT} late_penalty"]))
        assert row[f"{ASSIGNMENT} ungraded"] == ("1" if student == "solution" else "0")
    assert {r["student_id"]: r[f"{ASSIGNMENT} submitted"] for r in rows[1:]}["solution"] == \
        "2026-10-07T09:59:00Z"


def test_gradescope_results_follow_the_specification(late_class, tmp_path):
    db, out, root = late_class
    _export(db, tmp_path / "export", root)
    trusted = {r.student_id: r for r in read_results(out)}
    for student in STUDENTS:
        path = tmp_path / "export" / "gradescope" / ASSIGNMENT / student / "results.json"
        data = json.loads(path.read_text())
        assert set(data) <= GRADESCOPE_TOP and data["visibility"] in GRADESCOPE_VISIBILITY
        tests = list(exercise_for(ASSIGNMENT, root).points)
        # an answered written question waits for a person; an untouched one scored 0
        assert [t["name"] for t in data["tests"]] == tests + ([] if student == "solution"
                                                              else [WRITTEN])
        for test in data["tests"]:
            assert set(test) <= GRADESCOPE_TEST
            assert {"name", "score", "max_score", "visibility", "status"} <= set(test)
            assert test["visibility"] in GRADESCOPE_VISIBILITY
            if test["name"] == WRITTEN:
                assert (test["score"], test["max_score"], test["status"]) == (0, 2, "failed")
                continue
            cell = trusted[student].cells[test["name"]]
            assert (test["score"], test["max_score"]) == (cell["points"], cell["max_points"])
            assert test["status"] == ("passed" if cell["passed"] else "failed")
            # every test cell of chapter 1 holds hidden tests: only passed or failed is shown
            assert test["output"] == test["status"]
        assert data["score"] == pytest.approx(sum(t["score"] for t in data["tests"])
                                              - data["extra_data"]["late_penalty"])
        # the diagnosis opens the output; the hidden tests' inputs stay out of it
        assert data["extra_data"]["diagnoses"] == trusted[student].diagnoses
        if student == "f-arithmetic-mean":
            assert data["output"].startswith(f"What your code does: {MISTAKE.text()}\n")
        else:
            assert "What your code does" not in data["output"]
    solution = json.loads((tmp_path / "export" / "gradescope" / ASSIGNMENT / "solution"
                           / "results.json").read_text())
    assert "-1.6 points" in solution["output"] and solution["score"] == pytest.approx(4.4)
    assert f"not graded yet (counted 0): {WRITTEN}" in solution["output"]


MISTAKE = exercise_for(ASSIGNMENT, ROOT).exercise.mistake("f_arithmetic_mean")


def test_the_diagnosis_opens_the_comment_and_the_feedback_page(graded_class):
    """Issue 31: the student who averaged precision and recall is told so, first; the others
    get no diagnosis."""
    import html

    _, out, root = graded_class
    rows = {r.student_id: r for r in read_results(out)}
    assert {s: r.diagnoses for s, r in rows.items()} == {
        "solution": [], "untouched": [], "f-arithmetic-mean": ["f_arithmetic_mean"]}
    with open_gradebook(f"sqlite:///{out}/gradebook.db", nbgrader_settings(root)[1]) as gb:
        comments = {s: gb.find_comment("f_score_solution", ASSIGNMENT, ASSIGNMENT,
                                       s).auto_comment.splitlines() for s in STUDENTS}
    assert comments["f-arithmetic-mean"][1] == f"diagnosis f_arithmetic_mean: {MISTAKE.text()}"
    assert not any(line.startswith("diagnosis ") for s in ("solution", "untouched")
                   for line in comments[s])
    pages = {s: (out / "feedback" / s / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
             for s in STUDENTS}
    page = pages["f-arithmetic-mean"]
    assert page.index("What your code does") < page.index("test_f_score_values")
    assert html.escape(MISTAKE.does) in page and html.escape(MISTAKE.section) in page
    assert "explained above" in page
    assert "What your code does" not in pages["solution"] + pages["untouched"]
    assert "NotImplementedError" in pages["untouched"]  # no known mistake: the check's message


def _readable_by_others(folder: Path) -> list[str]:
    """What under ``folder`` a group or another account may read, list or write."""
    return [f"{p.relative_to(folder)} {stat.filemode(p.lstat().st_mode)}"
            for p in [folder, *folder.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o077
            and p.name not in ("done", "stdout.txt")]  # the fixture's own notes


def test_what_course_grade_and_export_write_is_readable_by_the_owner_only(graded_class,
                                                                          tmp_path):
    """grades.csv, results.jsonl, gradebook.db, feedback/, work/ and formgrader's autograded/
    (issue 29, point 4); the export's files the same."""
    subs, out, root = graded_class
    assert (out / "gradebook.db").is_file() and (out / "feedback").is_dir()
    assert _readable_by_others(out) == []
    _export(f"sqlite:///{out}/gradebook.db", tmp_path / "export", root)
    assert (tmp_path / "export" / "canvas.csv").is_file()
    assert _readable_by_others(tmp_path / "export") == []


def test_course_report_shows_what_the_gradebook_holds(late_class, tmp_path):
    """Issue 31: `course report`'s numbers, read back from report.json, against the gradebook
    read with nbgrader's API and the results of `course grade`; its files owner-only."""
    db, out, root = late_class
    report = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "report", "--db", db,
                             "--results", str(out), "--out", str(report), "--root", str(root)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    numbers = json.loads((report / "report.json").read_text())[ASSIGNMENT]
    with open_gradebook(db, COURSE_ID) as gb:
        subs = {s.student.id: s for s in gb.assignment_submissions(ASSIGNMENT)}
        scores = {s: max(0.0, sub.score - sub.late_submission_penalty) for s, sub in subs.items()}
        hours = {s: round(sub.total_seconds_late / 3600, 2) for s, sub in subs.items()
                 if sub.total_seconds_late > 0}
        grades = [g for sub in subs.values() for g in sub.notebooks[0].grades]
        tests = {g.name for g in grades if g.cell.cell_type == "code"}
        passed = {t: sum(g.score >= g.max_score for g in grades if g.name == t)
                  / len(subs) for t in tests}
        ungraded = {s: [g.name for g in sub.notebooks[0].grades if g.needs_manual_grade]
                    for s, sub in subs.items() if sub.needs_manual_grade}
    assert numbers["scores"] == pytest.approx(scores)
    assert numbers["pass_rates"] == pytest.approx(passed)
    assert {s: h for s, (h, _) in numbers["late"].items()} == hours
    assert numbers["ungraded"] == ungraded == {"solution": [WRITTEN]}
    rows = {r.student_id: r for r in read_results(out)}
    assert numbers["mistakes"] == {"f_arithmetic_mean": ["f-arithmetic-mean"]}
    assert numbers["seconds"] == {s: r.seconds for s, r in rows.items()}
    assert numbers["flagged"] == [s for s in STUDENTS if subs[s].notebooks[0].flagged]
    assert numbers["grader_errors"] == {}
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["index.html", "report.json", *numbers["figures"].values()])
    assert _readable_by_others(report) == []
