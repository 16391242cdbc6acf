"""formgrader, in a real JupyterLab driven by Chromium, shows what `course grade` recorded:
each graded student with the trusted scores of grades.csv, written answers out of their points;
and neither formgrader's view of a submission nor the student's feedback page runs anything the
student wrote (issue 29, point 1): a listener on 127.0.0.1 counts the payloads' calls.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nbformat
import pytest
from conftest import Lab

from autograder.isolation.sandbox import isolation_available
from autograder.settings import course_id
from autograder.store.gradebook import open_gradebook
from autograder.store.samples import write_samples
from course.notebooks import find_root

ROOT = find_root()
ASSIGNMENT = "01_metrics"
STUDENTS = ("solution", "f-arithmetic-mean")
WRITTEN_POINTS = 2  # explain_f_score, graded by hand
ATTACKER = "written-payload"  # a correct solution whose written answer and outputs carry script
ANSWER = "My answer: precision is the share of flagged cases that are real"
# {url} is the listener's; each payload, were it active, would call it with its own path
PAYLOADS = [
    '<img src="x" onerror="fetch(\'{url}/img-onerror\')">',
    '<svg onload="fetch(\'{url}/svg-onload\')"><circle r="1"/></svg>',
    "<script>fetch('{url}/script')</script>",
    '<iframe srcdoc="&lt;script&gt;fetch(\'{url}/iframe-srcdoc\')&lt;/script&gt;"></iframe>',
    '<details open ontoggle="fetch(\'{url}/details-ontoggle\')">more</details>',
    '<img src="{url}/remote-img">',
    "<p style=\"background:url('{url}/style-url')\">styled</p>",
    '<object data="{url}/object"></object>',
    '<link rel="stylesheet" href="{url}/link-css">',
    '<video><source onerror="fetch(\'{url}/source-onerror\')"></video>',
    "<math><mtext><table><mglyph><style><img src=x onerror=fetch('{url}/mglyph')>",
]


class Listener(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records the path of every request it gets."""

    def __init__(self):
        self.hits: list[str] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                listener.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _attacker_notebook(folder, listener: Listener) -> None:
    """The solution, then an HTML output, and the written answer with every payload."""
    payloads = "\n".join(p.format(url=listener.url) for p in PAYLOADS)
    path = next(folder.glob("*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    cells = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    cells["f_score_solution"].source += ("\n\nfrom IPython.display import HTML, display\n"
                                         f"display(HTML({payloads!r}))\n")
    cells["explain_f_score"].source = f"{ANSWER}\n\n{payloads}\n"
    nbformat.write(nb, path)


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
    listener = Listener()
    shutil.copytree(samples / "solution", subs / ATTACKER)
    _attacker_notebook(subs / ATTACKER, listener)
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
    yield lab, grades, listener, course
    lab.stop()
    listener.shutdown()


@pytest.mark.slow
@pytest.mark.sandbox
def test_formgrader_lists_graded_students_with_the_trusted_scores(graded_course, page):
    lab, grades, _, _ = graded_course
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
    assert sorted(shown) == sorted((*STUDENTS, ATTACKER))
    for student, (overall, code, written) in ((s, shown[s]) for s in STUDENTS):
        score, max_score = float(grades[student]["score"]), float(grades[student]["max_score"])
        assert code == f"{score:g} / {max_score:g}"
        assert overall == f"{score:g} / {max_score + WRITTEN_POINTS:g}"
        assert written == f"0 / {WRITTEN_POINTS}"


def _settle(page) -> None:
    """Time for every load, handler and toggle on the page to have happened."""
    page.wait_for_load_state("networkidle", timeout=60_000)
    time.sleep(2)


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_payloads_call_the_listener_when_left_active(graded_course, page):
    """The control: in this browser the payloads, unsanitised, do reach the listener (else
    the zero counts below would prove nothing)."""
    _, _, listener, _ = graded_course
    listener.hits.clear()
    page.page.set_content("\n".join(p.format(url=listener.url) for p in PAYLOADS))
    _settle(page.page)
    called = {hit.strip("/") for hit in listener.hits}
    assert {"img-onerror", "svg-onload", "script", "remote-img", "object"} <= called, called


@pytest.mark.slow
@pytest.mark.sandbox
def test_formgrader_shows_a_written_answer_and_runs_none_of_it(graded_course, page):
    lab, grades, listener, course = graded_course
    assert grades[ATTACKER]["status"] == "graded", grades[ATTACKER]
    with open_gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id()) as gb:
        submission = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, ATTACKER).id
    page.page.goto(lab.url("lab?reset"))  # the instructor's login, as above
    page.page.get_by_role("menuitem", name="Nbgrader", exact=True).wait_for(timeout=120_000)
    listener.hits.clear()
    page.page.goto(f"http://127.0.0.1:{lab.port}/formgrader/submissions/{submission}/")
    page.page.get_by_text(ANSWER).first.wait_for(timeout=120_000)
    _settle(page.page)
    assert listener.hits == []
    assert not [m for m in page.console if "pageerror" in m and "fetch" in m]


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_feedback_page_shows_the_answer_and_runs_none_of_it(graded_course, page):
    _, _, listener, course = graded_course
    feedback = course.parent / "out" / "feedback" / ATTACKER / ASSIGNMENT / f"{ASSIGNMENT}.html"
    listener.hits.clear()
    page.page.goto(feedback.as_uri())
    page.page.get_by_text(ANSWER).first.wait_for(timeout=60_000)
    _settle(page.page)
    assert listener.hits == []


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_gradebook_stores_nothing_the_student_wrote(graded_course):
    """formgrader also shows what the gradebook holds (cell sources, comments): none of it is
    the student's markup; every payload names the listener's address."""
    _, _, listener, course = graded_course
    with sqlite3.connect(course / "gradebook.db") as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")]
        texts = [value for table in tables
                 for row in db.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (our tables)
                 for value in row if isinstance(value, str)]
    assert any(ATTACKER in t for t in texts)  # the student is there
    assert [t for t in texts if listener.url in t or "onerror" in t] == []
