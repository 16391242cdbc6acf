"""formgrader, in a real JupyterLab driven by Chromium, shows what `course grade` recorded:
each graded student with the trusted scores of grades.csv, written answers out of their points.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
from conftest import Lab

from autograder.isolation.sandbox import isolation_available
from autograder.store.samples import write_samples
from course.notebooks import find_root

ROOT = find_root()
ASSIGNMENT = "01_metrics"
STUDENTS = ("solution", "f-arithmetic-mean")
WRITTEN_POINTS = 2  # explain_f_score, graded by hand


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    """A course folder graded by `course grade` into its own gradebook.db, served by Lab."""
    course = tmp_path_factory.mktemp("graded-course")
    for folder in ("source", "release", "autograder"):
        shutil.copytree(ROOT / folder, course / folder)
    shutil.copy(ROOT / "pyproject.toml", course / "pyproject.toml")
    shutil.copy(ROOT / "autograder" / "nbgrader_config.py", course / "nbgrader_config.py")
    run = [sys.executable, "-m", "autograder.cli"]
    released = subprocess.run([*run, "release", ASSIGNMENT, "--root", str(course)],
                              capture_output=True, text=True, check=False)
    assert released.returncode == 0, released.stdout + released.stderr
    samples, subs = course.parent / "samples", course.parent / "subs"
    write_samples(course, ASSIGNMENT, samples)
    for student in STUDENTS:
        shutil.copytree(samples / student, subs / student)
    isolate, _ = isolation_available()
    graded = subprocess.run([*run, "grade", ASSIGNMENT, str(subs), "--out", str(course.parent
                             / "out"), "--root", str(course), "--workers", "2"]
                            + ([] if isolate else ["--no-isolation"]),
                            capture_output=True, text=True, check=False)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    assert (course / "gradebook.db").is_file(), "the course's default gradebook was not written"
    with (course.parent / "out" / "grades.csv").open(newline="") as f:
        grades = {r["student_id"]: r for r in csv.DictReader(f)}
    lab = Lab(course, course.parent / "graded-lab.log")
    yield lab, grades
    lab.stop()


@pytest.mark.slow
@pytest.mark.sandbox
def test_formgrader_lists_graded_students_with_the_trusted_scores(graded_course, page):
    lab, grades = graded_course
    # JupyterLab first, as an instructor opens it: it logs the browser in (a cookie), so the
    # formgrader page's own requests to its API are authenticated
    page.page.goto(lab.url("lab?reset"))
    page.page.get_by_role("menuitem", name="Nbgrader", exact=True).wait_for(timeout=120_000)
    page.page.goto(f"http://127.0.0.1:{lab.port}/formgrader/gradebook/{ASSIGNMENT}/{ASSIGNMENT}")
    rows = page.page.locator("table tbody tr")
    rows.filter(has=page.page.locator("td.score")).first.wait_for(timeout=120_000)
    page.page.locator("#toggle_names").click()  # student ids instead of "Submission #1"
    shown = {}
    for row in rows.all():
        name = row.locator("td.name a.name-shown")
        if name.count():
            shown[name.inner_text().strip()] = (row.locator("td.score").inner_text().strip(),
                                                row.locator("td.code-score").inner_text().strip(),
                                                row.locator("td.written-score").inner_text()
                                                .strip())
    assert sorted(shown) == sorted(STUDENTS)
    for student, (overall, code, written) in shown.items():
        score, max_score = float(grades[student]["score"]), float(grades[student]["max_score"])
        assert code == f"{score:g} / {max_score:g}"
        assert overall == f"{score:g} / {max_score + WRITTEN_POINTS:g}"
        assert written == f"0 / {WRITTEN_POINTS}"
