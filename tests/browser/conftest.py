"""What the browser tests share: JupyterLab servers on scratch folders, and Chromium.

Playwright drives the system's Chromium (``scripts/setup-system.sh`` installs it; Playwright's
own browser download is not used). Each pytest-xdist worker that runs a browser test starts one
Chromium and one JupyterLab per folder it needs. When a test fails, a screenshot and the page's
console log go to build/browser/, and the failure message names them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from course.notebooks import find_root

ROOT = find_root()
ARTIFACTS = ROOT / "build" / "browser"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)  # each starts JupyterLab and runs a notebook


def find_chromium() -> str | None:
    """The Chromium (or Chrome) to drive: $COURSE_CHROMIUM, one on PATH, or Playwright's own."""
    for name in (os.environ.get("COURSE_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    for path in ("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
                 "/Applications/Chromium.app/Contents/MacOS/Chromium"):
        if Path(path).exists():
            return path
    return None


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for this worker."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail('Playwright is missing: pip install -e ".[dev]"', pytrace=False)
    executable = find_chromium()
    if executable is None:
        why = ("no Chromium or Chrome found (looked for $COURSE_CHROMIUM, chromium, "
               "chromium-browser, google-chrome)")
        if sys.platform.startswith("linux"):
            pytest.fail(f"{why}: run `bash scripts/setup-system.sh`", pytrace=False)
        pytest.skip(f"{why}: install Chrome, or set COURSE_CHROMIUM to a Chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


class Lab:
    """``jupyter lab`` serving ``root`` on a free localhost port, with a token."""

    def __init__(self, root: Path, log: Path):
        self.root = root
        self.token = secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # as in an activated environment: nbgrader's gradebook runs the `alembic` command
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = dict(os.environ, PATH=path, JUPYTER_CONFIG_DIR=str(root / ".jupyter-config"),
                   JUPYTER_RUNTIME_DIR=str(root / ".jupyter-runtime"),
                   JUPYTERLAB_WORKSPACES_DIR=str(root / ".jupyter-workspaces"))
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT)
        self._wait_until_up(timeout=180)

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def kernel_ready(self, notebook: str) -> bool:
        """Whether the notebook's kernel is idle with a client (the page) connected to it."""
        with urllib.request.urlopen(self.url("api/sessions"), timeout=10) as answer:
            sessions = json.load(answer)
        return any(s.get("path") == notebook and s["kernel"].get("execution_state") == "idle"
                   and s["kernel"].get("connections", 0) > 0 for s in sessions)

    def _wait_until_up(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited with status {self.process.returncode}; "
                            f"its log: {self.log}", pytrace=False)
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s; its log: {self.log}",
                    pytrace=False)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def student_lab(tmp_path_factory):
    """JupyterLab in a scratch copy of release/, as a student starts it."""
    root = tmp_path_factory.mktemp("student")
    shutil.copytree(ROOT / "release", root, dirs_exist_ok=True)
    lab = Lab(root, root.parent / "student-lab.log")
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def instructor_lab(tmp_path_factory):
    """JupyterLab in a scratch course folder (source/, release/ and the nbgrader config)."""
    root = tmp_path_factory.mktemp("course")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    shutil.copy(ROOT / "autograder" / "nbgrader_config.py", root / "nbgrader_config.py")
    lab = Lab(root, root.parent / "instructor-lab.log")
    yield lab
    lab.stop()


class Page:
    """A Playwright page that keeps its console log, to save both when a test fails."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    def save_artifacts(self, name: str) -> tuple[Path, Path]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        png, log = ARTIFACTS / f"{stem}.png", ARTIFACTS / f"{stem}.console.log"
        try:
            self.page.screenshot(path=str(png), full_page=True, timeout=30_000)
        except Exception as exc:  # a crashed page: keep the console log anyway
            self.console.append(f"[test] no screenshot: {exc}")
        log.write_text("\n".join(self.console) + "\n", encoding="utf-8")
        return png, log


@pytest.fixture
def page(browser):
    """A fresh browser context and page; closed after the test."""
    tab = Page(browser)
    yield tab
    tab.context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    tab = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.failed and call.when == "call" and isinstance(tab, Page):
        png, log = tab.save_artifacts(item.nodeid.split("::", 1)[-1])
        note = f"screenshot: {png}; console log: {log}"
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("browser", note)
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            crash.message = f"{crash.message} [{note}]"
    return report
