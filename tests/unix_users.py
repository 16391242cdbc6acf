"""What the tests of nbgrader's exchange share (tests/test_exchange.py, and
tests/browser/test_jupyterhub.py): real unix accounts, made for a module's tests and removed
afterwards with what they ran; commands run as one of them; the Python a student account can
run; and a course folder whose deadline has passed, with an exchange every account can use."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from course.notebooks import find_root
from tests.waiting import wait_until

__all__ = ["BIN", "LATE_HOURS", "RUNUSER", "SITE", "late_course", "run", "student_python",
           "unix_users"]

BIN = Path(sys.executable).parent
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux: root runs as a student
SITE = sysconfig.get_paths()["purelib"]
LATE_HOURS = 25  # submitted this long after the deadline: 2 started days late


def run(cmd, *, cwd, user: str | None = None, home: Path | None = None,
        env: dict | None = None) -> str:
    """``cmd`` as ``user`` (root if None), with the venv's commands first on PATH; fails the
    test, with its output, unless it exits 0."""
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


def student_python(user: str) -> tuple[str, str]:
    """(interpreter, PYTHONPATH) with which ``user`` runs this environment's packages: this
    interpreter when their account may run it, else the system's Python of the same version
    with this environment's site-packages on its path (a pyenv Python under /root is out of a
    student's reach; on a real hub the students' environment is theirs to run)."""
    for python, path in ((sys.executable, ""), ("/usr/bin/python3", SITE)):
        env = ["env", "-i", f"PYTHONPATH={path}"] if path else []
        probe = subprocess.run([RUNUSER, "-u", user, "--", *env, python, "-c",
                                "import sys, nbgrader; print(sys.version_info[:2])"],
                               cwd="/", capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return python, path
    pytest.skip("no Python a student account can run with nbgrader (see student_python)")


def _processes_of(uid: int) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    found.append(int(pid))
            except OSError:
                pass
    return found


def _remove(name: str) -> None:
    """Kill what ``name`` left running (userdel refuses a user with processes), then remove
    the account and its home."""
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                                 check=True).stdout)
    except subprocess.CalledProcessError:
        return
    for pid in _processes_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not _processes_of(uid), 30, f"the processes of {name} to end")
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@contextmanager
def unix_users(*roles: str, group: str | None = None):
    """A unix user with a home of their own for each role, named ``c<initial><tag>`` and
    members of ``group`` (made for them) when given: yields {role: name}, then removes them,
    their processes and the group."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create the students' unix accounts")
    tag = secrets.token_hex(3)
    names = {role: f"c{role[0]}{tag}" for role in roles}
    try:
        if group:
            subprocess.run(["groupadd", group], check=True)
        for name in names.values():
            subprocess.run(["useradd", "--create-home", "--home-dir", f"/home/{name}", "--shell",
                            "/bin/sh", *(["--groups", group] if group else []), name],
                           check=True)
        yield names
    finally:
        for name in names.values():
            _remove(name)
        if group:
            subprocess.run(["groupdel", group], check=False, capture_output=True)


@contextmanager
def late_course(course: Path, assignment: str):
    """``course`` made a course folder (source/, release/, autograder/ and the nbgrader config)
    whose ``assignment`` was due LATE_HOURS ago, at 10 % of its points a started day; and an
    exchange every account can reach (never under pytest's owner-only temporary folder).
    Yields (course, exchange); removes the exchange afterwards."""
    root = find_root()
    for folder in ("source", "release", "autograder"):
        shutil.copytree(root / folder, course / folder)
    shutil.copy(root / "pyproject.toml", course / "pyproject.toml")
    shutil.copy(root / "autograder" / "nbgrader_config.py", course / "nbgrader_config.py")
    deadline = datetime.now(timezone.utc) - timedelta(hours=LATE_HOURS)
    (course / "autograder" / "deadlines.yaml").write_text(
        f"assignments:\n  {assignment}:\n    deadline: '{deadline.isoformat()}'\n"
        "    late_penalty: {per_day: 0.1, max: 0.5}\n")
    exchange = Path(f"/tmp/course-exchange-{secrets.token_hex(4)}")
    exchange.mkdir(mode=0o777)
    exchange.chmod(0o777)
    try:
        yield course, exchange
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
