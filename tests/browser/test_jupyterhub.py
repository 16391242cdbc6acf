"""nbgrader's exchange through a real JupyterHub (issue 30), driven in Chromium for one student.

The test starts JupyterHub on 127.0.0.1 with the shipped autograder/jupyterhub_config.py (PAM
login, each student's JupyterLab a process of their own unix account), plus a second file of
what only the test needs: free ports, an exchange of its own, and the interpreter a student
account can reach. The instructor releases 01_metrics (`course release`, then nbgrader's); the
student, a unix user the test creates with a password, logs in, fetches it in the Assignments
tab, writes the solution into the exercise cell, saves and submits. The instructor collects,
grades, gives the written answer its points by hand and releases the feedback; the student
fetches it in the Assignments tab and opens the page, which must show the final score with the
manual points and the late penalty (the deadline was 25 hours before the submission).

PAM rather than JupyterHub's DummyAuthenticator: it is what the shipped configuration uses, so
the login the test passes is the one students meet; the test only sets the password.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import nbformat
import pytest

from autograder.isolation.sandbox import isolation_available
from autograder.store.gradebook import open_gradebook
from autograder.store.samples import solution_code
from tests.browser.conftest import ROOT
from tests.unix_users import BIN, late_course, run, student_python, unix_users
from tests.waiting import wait_until

pytestmark = [pytest.mark.sandbox]  # `course grade`; browser and slow come from conftest.py
ASSIGNMENT = "01_metrics"
COURSE_ID = "dl-tuning"
VENV = Path(sys.prefix)
UI_MS = 120_000  # a click's answer on a loaded 2-core machine (nbgrader's fetch and submit)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_config(hub_dir: Path, student: str, students_config: Path) -> Path:
    """The test's own settings, on top of the shipped file: free ports for the hub's API and
    the proxy's, and a student's server started from the interpreter their account can run,
    with this environment's Jupyter extensions and the test's exchange on its paths."""
    python, pythonpath = student_python(student)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin",
           "JUPYTER_PATH": str(VENV / "share" / "jupyter"),  # nbgrader's labextension
           "JUPYTERLAB_DIR": str(VENV / "share" / "jupyter" / "lab"),
           # after the shipped file's own (the instructor's extensions off), the students'
           # nbgrader_config.py (the exchange), then nbgrader's server extensions;
           # JUPYTER_DATA_DIR stays the student's own (runtime files, nbgrader's cache)
           "JUPYTER_CONFIG_PATH": os.pathsep.join([str(students_config),
                                                   str(VENV / "etc" / "jupyter")])}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    config = hub_dir / "test_jupyterhub_config.py"
    config.write_text(
        "import os\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(ROOT / 'autograder' / 'jupyterhub_config.py')!r})  # noqa: F821\n"
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{_free_port()}'\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{_free_port()}'\n"
        f"c.Spawner.cmd = [{python!r}, '-m', 'jupyterhub.singleuser']\n"
        f"env = {env!r}\n"
        "env['JUPYTER_CONFIG_PATH'] = os.pathsep.join(\n"
        "    [c.Spawner.environment['JUPYTER_CONFIG_PATH'], env['JUPYTER_CONFIG_PATH']])\n"
        "c.Spawner.environment = env\n", encoding="utf-8")
    return config


class Hub:
    """``jupyterhub`` (and the proxy it starts) in a process group of its own."""

    def __init__(self, hub_dir: Path, config: Path, group: str):
        self.dir, self.url = hub_dir, f"http://127.0.0.1:{_free_port()}"
        env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   COURSE_HUB_URL=self.url, COURSE_HUB_GROUP=group)
        self.log = hub_dir / "jupyterhub.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)],
                                        cwd=hub_dir, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._up, 120, f"JupyterHub answering at {self.url}/hub/api "
                       f"(log: {self.log})")
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"jupyterhub exited with status {self.process.returncode}; its log: "
                        f"{self.log}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{self.url}/hub/api", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self):
        """SIGTERM: the hub stops the students' servers and its proxy; then the group goes."""
        proxy_pid = self.dir / "jupyterhub-proxy.pid"
        proxy = int(proxy_pid.read_text()) if proxy_pid.exists() else None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for pgid in (self.process.pid, proxy):
            if pgid:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A course whose 01_metrics is late, one student with a password, and the hub."""
    if not sys.platform.startswith("linux"):
        pytest.skip("JupyterHub's LocalProcessSpawner with PAM users: Linux only here")
    if shutil.which("configurable-http-proxy") is None:
        pytest.fail("configurable-http-proxy (JupyterHub's proxy, from npm) is missing: run "
                    "`bash scripts/setup-system.sh`", pytrace=False)
    group = f"cg{secrets.token_hex(3)}"
    course_dir = tmp_path_factory.mktemp("hub-course")
    with late_course(course_dir, ASSIGNMENT) as (course, exchange), \
            unix_users("student", group=group) as users:
        student, password = users["student"], secrets.token_urlsafe(12)
        subprocess.run(["chpasswd"], input=f"{student}:{password}\n", text=True, check=True)
        students_config = exchange.with_name(exchange.name + "-students-config")
        students_config.mkdir(mode=0o755)  # what /etc/jupyter/nbgrader_config.py says on a hub
        (students_config / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n", encoding="utf-8")
        hub_dir = tmp_path_factory.mktemp("hub")
        server = Hub(hub_dir, _test_config(hub_dir, student, students_config), group)
        try:
            yield server, course, exchange, student, password
        finally:
            server.stop()
            shutil.rmtree(students_config, ignore_errors=True)


def _log_in(page, hub: Hub, student: str, password: str):
    """The hub's login form; then the student's JupyterLab, once the hub has started it."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", student)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(f"**/user/{student}/lab**", timeout=180_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)


def _assignments_tab(page):
    """Nbgrader > Assignments, once nbgrader has listed what the exchange holds."""
    page.locator("#jp-menu-panel div.lm-MenuBar-itemLabel:text-is('Nbgrader')").click()
    page.locator("#jp-mainmenu-nbgrader li[data-command='nbgrader:open-assignment-list']").click()
    page.locator("#released_assignments_list").wait_for(timeout=UI_MS)
    page.wait_for_selector("#released_assignments_list_loading", state="hidden", timeout=UI_MS)


def _rows(page, status: str):
    return page.locator(f"#{status}_assignments_list > .list_item").filter(has_text=ASSIGNMENT)


def _write_solution(page, hub: Hub, student: str, home: Path) -> str:
    """Open the fetched notebook, put the solution into the exercise cell, save; the saved
    file must hold it."""
    page.goto(f"{hub.url}/user/{student}/lab/tree/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")
    cell = page.locator(".jp-Notebook .jp-CodeCell").filter(
        has_text="def f_score(precision, recall").filter(has_text="raise NotImplementedError")
    editor = cell.locator(".cm-content")
    editor.wait_for(timeout=UI_MS)
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    code = solution_code(ROOT, ASSIGNMENT)
    page.keyboard.insert_text(code)  # typed keys would be auto-indented by the editor
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.locator("li[data-command='docmanager:save']").click()
    saved = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"

    def holds_it() -> bool:
        try:
            nb = nbformat.read(saved, as_version=4)
        except (nbformat.reader.NotJSONError, ValueError):
            return False  # read while the server writes it
        return any(c.source == code for c in nb.cells
                   if c.metadata.get("nbgrader", {}).get("grade_id") == "f_score_solution")

    wait_until(holds_it, 60, f"{saved} holding the solution typed in the browser")
    return code


def _grade_and_release_feedback(course: Path, exchange: Path, student: str, tmp: Path):
    """The instructor's side, as in tests/test_exchange.py; returns the final score."""
    ours = {"COURSE_EXCHANGE": str(exchange)}
    run(["nbgrader", "collect", ASSIGNMENT], cwd=course, env=ours)
    assert [p.name for p in (course / "submitted").iterdir()] == [student]
    isolate, _ = isolation_available()
    flags = [] if isolate else ["--no-isolation"]
    run([str(BIN / "course"), "grade", ASSIGNMENT, str(course / "submitted"),
         "--out", str(tmp / "out"), "--root", str(course), *flags], cwd=course)
    with open_gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        gb.find_grade("explain_f_score", ASSIGNMENT, ASSIGNMENT, student).manual_score = 2.0
        gb.db.commit()
        nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        final = (nb.score - (nb.late_submission_penalty or 0), nb.max_score,
                 nb.late_submission_penalty)
    run([str(BIN / "course"), "feedback", ASSIGNMENT, "--root", str(course), *flags], cwd=course)
    run(["nbgrader", "release_feedback", ASSIGNMENT], cwd=course, env=ours)
    return final


def test_a_student_fetches_submits_and_reads_their_feedback_in_jupyterhub(hub, page, tmp_path):
    server, course, exchange, student, password = hub
    home = Path(pwd.getpwnam(student).pw_dir)
    run([str(BIN / "course"), "release", ASSIGNMENT, "--root", str(course)], cwd=course)
    run(["nbgrader", "release_assignment", ASSIGNMENT], cwd=course,
        env={"COURSE_EXCHANGE": str(exchange)})
    tab = page.page
    _log_in(tab, server, student, password)
    _no_instructor_parts(tab, server, student)
    _assignments_tab(tab)
    _rows(tab, "released").locator(".item_status button").click()  # Fetch
    _rows(tab, "fetched").wait_for(timeout=UI_MS)
    assert (home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").stat().st_uid == pwd.getpwnam(
        student).pw_uid  # fetched by the student's own server

    _write_solution(tab, server, student, home)
    _assignments_tab(tab)
    _rows(tab, "fetched").locator(".item_status button:text-is('Submit')").click()
    _rows(tab, "submitted").wait_for(timeout=UI_MS)

    final = _grade_and_release_feedback(course, exchange, student, tmp_path)
    # 25 h late: 2 started days x 10 % of the 8 points; the written answer's 2 points by hand
    assert final == (pytest.approx(6.4), 8.0, pytest.approx(1.6))

    tab.locator("#refresh_assignments_list").click()
    submitted = _rows(tab, "submitted")
    submitted.locator(".item_status button:text-is('Fetch Feedback')").click()
    tab.get_by_text("(view feedback)").click(timeout=UI_MS)  # the file browser, at the page
    listing = tab.locator(".jp-DirListing-item").filter(has_text=f"{ASSIGNMENT}.html")
    listing.dblclick(timeout=UI_MS)
    body = tab.frame_locator(".jp-HTMLViewer iframe").locator("body")
    body.get_by_text("Final score").first.wait_for(timeout=UI_MS)
    text = body.inner_text()
    score, max_score, penalty = final
    assert f"Final score: {score:g} / {max_score:g}" in text
    assert f"late penalty {penalty:g} point(s) taken off" in text
    assert "explain_f_score: 2 / 2" in text  # the points given by hand


def _no_instructor_parts(tab, hub: Hub, student: str) -> None:
    """The shipped config turns formgrader, the course list and Create Assignment off for
    students; the Assignments tab stays."""
    config = json.loads(tab.locator("#jupyter-config-data").text_content())
    off = set(config.get("disabledExtensions") or [])
    assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
            "@jupyter/nbgrader:course-list"} <= off, off
    assert "@jupyter/nbgrader:assignment-list" not in off
    assert tab.request.get(f"{hub.url}/user/{student}/formgrader").status == 404
