"""nbgrader's exchange end to end, with real unix users (issue 30): release, two students fetch
and submit (one correct, one not), collect, `course grade`, a manual score, `course feedback`,
`nbgrader release_feedback`; each student fetches only their own page, which shows the final
score with the manual points and the late penalty."""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

import pytest

from autograder.isolation.sandbox import isolation_available
from autograder.store.gradebook import open_gradebook
from autograder.store.samples import write_samples
from tests.unix_users import BIN, late_course, run, student_python, unix_users

ASSIGNMENT = "01_metrics"
COURSE_ID = "dl-tuning"
# the installed command, as an instructor runs it in the course folder (`python -m` would put
# that folder, with its own copy of autograder/, first on the module path)
COURSE = str(BIN / "course")
pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


def _nbgrader(user: str) -> list[str]:
    """nbgrader as ``user`` runs it (on a JupyterHub the students' environment has its own)."""
    python, path = student_python(user)
    return [*(["env", f"PYTHONPATH={path}"] if path else []), python, "-m", "nbgrader"]


@pytest.fixture(scope="module")
def students():
    """Two unix users with homes of their own; removed afterwards."""
    with unix_users("alice", "bob") as names:
        yield names


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with a deadline 25 hours ago, and an exchange every account can use."""
    with late_course(tmp_path_factory.mktemp("exchange-course"), ASSIGNMENT) as found:
        yield found


def _student_work(course: Path, students: dict, tmp: Path, exchange: Path) -> None:
    """Each student fetches the assignment, puts their answer in, and submits it."""
    samples = tmp / "samples"
    write_samples(course, ASSIGNMENT, samples)
    answers = {"alice": "solution", "bob": "f-arithmetic-mean"}
    flags = [f"--course={COURSE_ID}", f"--Exchange.root={exchange}"]
    for who, user in students.items():
        home, nbgrader = Path(pwd.getpwnam(user).pw_dir), _nbgrader(user)
        run([*nbgrader, "fetch_assignment", ASSIGNMENT, *flags], cwd=home, user=user,
             home=home)
        fetched = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert fetched.is_file()
        shutil.copyfile(samples / answers[who] / f"{ASSIGNMENT}.ipynb", fetched)
        run([*nbgrader, "submit", ASSIGNMENT, *flags], cwd=home, user=user, home=home)


def test_release_submit_collect_grade_and_each_student_fetches_their_own_page(
        course, students, tmp_path):
    course, exchange = course
    ours = {"COURSE_EXCHANGE": str(exchange)}  # the course's configuration names the exchange
    flag = f"--Exchange.root={exchange}"  # the students' side: their hub's configuration
    run(["nbgrader", "release_assignment", ASSIGNMENT], cwd=course, env=ours)
    _student_work(course, students, tmp_path, exchange)
    run(["nbgrader", "collect", ASSIGNMENT], cwd=course, env=ours)
    assert sorted(p.name for p in (course / "submitted").iterdir()) == sorted(students.values())
    isolate, _ = isolation_available()
    run([COURSE, "grade", ASSIGNMENT, str(course / "submitted"),
          "--out", str(tmp_path / "out"), "--root", str(course)]
         + ([] if isolate else ["--no-isolation"]), cwd=course)
    alice, bob = students["alice"], students["bob"]
    with open_gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        gb.find_grade("explain_f_score", ASSIGNMENT, ASSIGNMENT, alice).manual_score = 2.0
        gb.db.commit()
        final = {}
        for user in (alice, bob):
            nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, user)
            final[user] = (nb.score - (nb.late_submission_penalty or 0), nb.max_score,
                           nb.late_submission_penalty)
    # 25 h late: 2 started days x 10% of the 8 points, from the exchange's timestamp.txt
    assert final[alice] == (pytest.approx(6.4), 8.0, pytest.approx(1.6))
    assert final[bob][2] is not None and final[bob][0] < final[alice][0]
    run([COURSE, "feedback", ASSIGNMENT, "--root", str(course)]
         + ([] if isolate else ["--no-isolation"]), cwd=course)
    run(["nbgrader", "release_feedback", ASSIGNMENT], cwd=course, env=ours)
    for user in (alice, bob):
        home = Path(pwd.getpwnam(user).pw_dir)
        run([*_nbgrader(user), "fetch_feedback", ASSIGNMENT, f"--course={COURSE_ID}",
              flag], cwd=home, user=user, home=home)
        pages = sorted((home / ASSIGNMENT / "feedback").rglob("*.html"))
        assert len(pages) == 1, pages  # their own page, and only theirs
        text = pages[0].read_text(encoding="utf-8")
        score, max_score, _ = final[user]
        assert f"Final score: {score:g} / {max_score:g}" in text
        other = bob if user == alice else alice
        assert f"Final score: {final[other][0]:g} /" not in text
        assert "<script" not in text.lower()
        assert f"late penalty {final[user][2]:g} point(s) taken off" in text
