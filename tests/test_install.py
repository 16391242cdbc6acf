"""The grader installed as a wheel (``pip install .``, not editable) grades as the checkout does.

A fresh environment would download and unpack torch (minutes, gigabytes); the test environment
is copied with hard links instead (``cp -al``: seconds, no space), the editable install of the
project removed from the copy and the project's wheel installed there. Then ``course grade``
runs from that environment in a course directory that holds only data (source/, release/,
autograder/'s nbgrader configuration and samples, pyproject.toml): the same secret path, the
same scores as the checkout, and the sandbox hides the trusted checks of site-packages too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder.protocol import secret_path
from autograder.store.results import read_results
from autograder.store.samples import write_samples

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_metrics"
STUDENTS = {"solution", "untouched", "f-arithmetic-mean", "f-no-zero-division"}
PACKAGE_DATA = ["autograder/nbgrader_config.py", "autograder/deadlines.yaml",
                "autograder/book.yaml", "autograder/jupyterhub_config.py",
                "autograder/hub_students/labconfig/page_config.json",
                "autograder/samples/README.md", "autograder/samples/01_metrics/f_all_zeros.py"]
_NO_CACHE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _run(cmd: list, **kwargs) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900,
                         **kwargs)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _wheel(tmp: Path) -> Path:
    """The project's wheel, built from a copy of its tracked sources (nothing in the checkout)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("course", "autograder"):
        shutil.copytree(ROOT / package, src / package, ignore=_NO_CACHE)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def _venv_with(wheel: Path, venv: Path) -> Path:
    """A hard-linked copy of this environment with the wheel instead of the editable install."""
    _run(["cp", "-al", sys.prefix, venv])
    python = venv / "bin" / "python"  # never the copied scripts: their #! is the original's
    _run([python, "-m", "pip", "uninstall", "-q", "-y", "dl-tuning-course"])
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    return python


def _course_dir(dest: Path) -> Path:
    """The course's data, without a line of the grader's code."""
    for part in ("source", "release", "autograder/samples"):  # the registry checks every chapter
        shutil.copytree(ROOT / part, dest / part, ignore=_NO_CACHE)
    for part in ("pyproject.toml", "autograder/nbgrader_config.py", "autograder/deadlines.yaml"):
        shutil.copy2(ROOT / part, dest / part)
    return dest


def _grade(course: list, root: Path, subs: Path, out: Path, cwd: Path) -> dict:
    _run([*course, "grade", ASSIGNMENT, subs, "--out", out, "--workers", "2", "--flat-limits",
          "--db", f"sqlite:///{out.parent / (out.name + '.db')}", "--root", root], cwd=cwd)
    return {r.student_id: (r.status, r.score, {g: c["passed"] for g, c in r.cells.items()})
            for r in read_results(out)}


_WHERE = """
import json, sys, autograder, course
from autograder.protocol import secret_path
print(json.dumps({"autograder": autograder.__file__, "course": course.__file__,
                  "secret": str(secret_path()), "prefix": sys.prefix}))
"""
_PEEK = """
import json, sys
from pathlib import Path
import autograder
from autograder.isolation.sandbox import run_sandboxed
package = Path(autograder.__file__).parent
probe = ("import os, sys\\nfor p in sys.argv[1:]:\\n"
         "    try:\\n        open(p).read(1); print('read', p)\\n"
         "    except OSError as e:\\n        print('refused', p, type(e).__name__)\\n")
wanted = [package / "exercises" / "metrics.py", package / "steps" / "trusted.py",
          package / "inside" / "harness.py"]
res = run_sandboxed([sys.executable, "-c", probe, *map(str, wanted)], workdir=Path(sys.argv[1]),
                    timeout=120, isolate=True)
print(json.dumps({"rc": res.returncode, "out": res.stdout, "err": res.stderr[-500:]}))
"""


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_wheel_install_grades_the_samples_as_the_checkout(tmp_path):
    wheel = _wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [p for p in PACKAGE_DATA if p not in names], sorted(names)
    assert "autograder/inside/harness.py" in names and "autograder/exercises/metrics.py" in names

    python = _venv_with(wheel, tmp_path / "venv")
    where = json.loads(_run([python, "-c", _WHERE], cwd=tmp_path).splitlines()[-1])
    site = tmp_path / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for package in ("autograder", "course"):
        assert Path(where[package]).is_relative_to(site / "site-packages"), where
    assert where["secret"] == str(secret_path())

    work = tmp_path / "peek"
    work.mkdir()
    peek = json.loads(_run([python, "-c", _PEEK, work], cwd=tmp_path).splitlines()[-1])
    lines = peek["out"].splitlines()
    assert peek["rc"] == 0 and len(lines) == 3, peek
    assert lines[0].startswith("refused") and lines[1].startswith("refused"), peek
    assert lines[2].startswith("read"), peek  # what runs inside is there

    subs = tmp_path / "subs"
    for student in write_samples(ROOT, ASSIGNMENT, subs):
        if student not in STUDENTS:
            shutil.rmtree(subs / student)
    course_dir = _course_dir(tmp_path / "course")
    assert os.environ.get("COURSE_GRADING_SECRET")  # conftest.py: both runs, the same inputs
    installed = _grade([tmp_path / "venv" / "bin" / "course"], course_dir, subs,
                       tmp_path / "out-installed", cwd=course_dir)
    checkout = _grade([sys.executable, "-m", "autograder.cli"], ROOT, subs,
                      tmp_path / "out-checkout", cwd=ROOT)
    assert set(installed) == STUDENTS
    assert installed == checkout
    assert installed["solution"][:2] == ("graded", 6.0)
    assert installed["untouched"][:2] == ("graded", 0.0)
