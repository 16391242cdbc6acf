"""nbgrader's exchange end to end, with real unix users (issue 30): release, two students fetch
and submit (one correct, one not), collect, `course grade`, a manual score, `course feedback`,
`nbgrader release_feedback`; each student fetches only their own page, which shows the final
score with the manual points and the late penalty."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from autograder.isolation.sandbox import isolation_available
from autograder.store.gradebook import open_gradebook
from autograder.store.samples import write_samples
from course.notebooks import find_root

ROOT = find_root()
ASSIGNMENT = "01_metrics"
COURSE_ID = "dl-tuning"
BIN = Path(sys.executable).parent
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux: root runs as a student
SITE = sysconfig.get_paths()["purelib"]
# the installed command, as an instructor runs it in the course folder (`python -m` would put
# that folder, with its own copy of autograder/, first on the module path)
COURSE = str(BIN / "course")
pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


def _run(cmd, *, cwd, user: str | None = None, home: Path | None = None,
         env: dict | None = None) -> str:
    """``cmd`` as ``user`` (root if None), with the venv's commands first on PATH."""
    base = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home or cwd), "LANG": "C.UTF-8",
            **(env or {})}
    if user:
        cmd = [RUNUSER, "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in base.items()],
               *cmd]
        base = {**os.environ, "PATH": base["PATH"]}
    else:
        base = {**os.environ, **base}
    proc = subprocess.run(cmd, cwd=cwd, env=base, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _student_python(user: str) -> list[str]:
    """How a student runs nbgrader: this interpreter when their account may run it, else the
    system's Python of the same version with this environment's packages on its path (a
    pyenv Python under /root is out of a student's reach); on a JupyterHub the students'
    environment has nbgrader of its own."""
    for python, path in ((sys.executable, ""), ("/usr/bin/python3", SITE)):
        env = ["env", "-i", f"PYTHONPATH={path}"] if path else []
        probe = subprocess.run([RUNUSER, "-u", user, "--", *env, python, "-c",
                                "import sys, nbgrader; print(sys.version_info[:2])"],
                               cwd="/", capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return [*(["env", f"PYTHONPATH={path}"] if path else []), python, "-m", "nbgrader"]
    pytest.skip("no Python a student account can run with nbgrader (see _student_python)")


@pytest.fixture(scope="module")
def students():
    """Two unix users with homes of their own; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create the students' unix accounts")
    tag = secrets.token_hex(3)
    names = {"alice": f"ca{tag}", "bob": f"cb{tag}"}
    for name in names.values():
        subprocess.run(["useradd", "--create-home", "--home-dir", f"/home/{name}", "--shell",
                        "/bin/sh", name], check=True)
    yield names
    for name in names.values():
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with a deadline 25 hours ago, and an exchange every account can use."""
    course = tmp_path_factory.mktemp("exchange-course")
    for folder in ("source", "release", "autograder"):
        shutil.copytree(ROOT / folder, course / folder)
    shutil.copy(ROOT / "pyproject.toml", course / "pyproject.toml")
    shutil.copy(ROOT / "autograder" / "nbgrader_config.py", course / "nbgrader_config.py")
    deadline = datetime.now(timezone.utc) - timedelta(hours=25)
    (course / "autograder" / "deadlines.yaml").write_text(
        f"assignments:\n  {ASSIGNMENT}:\n    deadline: '{deadline.isoformat()}'\n"
        "    late_penalty: {per_day: 0.1, max: 0.5}\n")
    exchange = Path(f"/tmp/course-exchange-{secrets.token_hex(4)}")  # reachable by every user
    exchange.mkdir(mode=0o777)
    exchange.chmod(0o777)
    yield course, exchange
    shutil.rmtree(exchange, ignore_errors=True)


def _student_work(course: Path, students: dict, tmp: Path, exchange: Path) -> None:
    """Each student fetches the assignment, puts their answer in, and submits it."""
    samples = tmp / "samples"
    write_samples(course, ASSIGNMENT, samples)
    answers = {"alice": "solution", "bob": "f-arithmetic-mean"}
    flags = [f"--course={COURSE_ID}", f"--Exchange.root={exchange}"]
    for who, user in students.items():
        home, nbgrader = Path(pwd.getpwnam(user).pw_dir), _student_python(user)
        _run([*nbgrader, "fetch_assignment", ASSIGNMENT, *flags], cwd=home, user=user,
             home=home)
        fetched = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert fetched.is_file()
        shutil.copyfile(samples / answers[who] / f"{ASSIGNMENT}.ipynb", fetched)
        _run([*nbgrader, "submit", ASSIGNMENT, *flags], cwd=home, user=user, home=home)


def test_release_submit_collect_grade_and_each_student_fetches_their_own_page(
        course, students, tmp_path):
    course, exchange = course
    ours = {"COURSE_EXCHANGE": str(exchange)}  # the course's configuration names the exchange
    flag = f"--Exchange.root={exchange}"  # the students' side: their hub's configuration
    _run(["nbgrader", "release_assignment", ASSIGNMENT], cwd=course, env=ours)
    _student_work(course, students, tmp_path, exchange)
    _run(["nbgrader", "collect", ASSIGNMENT], cwd=course, env=ours)
    assert sorted(p.name for p in (course / "submitted").iterdir()) == sorted(students.values())
    isolate, _ = isolation_available()
    _run([COURSE, "grade", ASSIGNMENT, str(course / "submitted"),
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
    _run([COURSE, "feedback", ASSIGNMENT, "--root", str(course)]
         + ([] if isolate else ["--no-isolation"]), cwd=course)
    _run(["nbgrader", "release_feedback", ASSIGNMENT], cwd=course, env=ours)
    for user in (alice, bob):
        home = Path(pwd.getpwnam(user).pw_dir)
        _run([*_student_python(user), "fetch_feedback", ASSIGNMENT, f"--course={COURSE_ID}",
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
