"""The nbgrader step of ``course grade``: autograde + feedback for one student, in the sandbox.

``run_nbgrader`` builds a scratch course folder holding only the notebook, the configuration,
a copy of the assignment's gradebook and the released files (nothing of source/, no other
student), runs ``course.grading.nbgrader_worker`` there in the sandbox, and reads back nbgrader's
per-cell scores strictly (the worker's output is as untrusted as the student's code it ran).
While the student's code runs, the worker keeps the gradebook and nbgrader's copy of the notebook
with the hidden tests off the disk, and it kills what the code left running before it writes the
feedback page (see ``nbgrader_worker``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

from course.grading.nbgrader_worker import RESULT
from course.grading.sandbox import run_sandboxed

__all__ = ["run_nbgrader", "parse_scores", "NBGRADER_MEMORY_MB"]

# Address space of each process of the nbgrader step (RLIMIT_AS): a kernel that has imported
# torch, scikit-learn and matplotlib maps several GB without using them; 4 GB is too little.
NBGRADER_MEMORY_MB = 12288


def _sandbox_env(folder: Path) -> dict[str, str]:
    """The environment of the sandboxed nbgrader: nothing of the instructor's but PATH."""
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "JUPYTER_PLATFORM_DIRS": "1",  # silences jupyter_core's deprecation warning
        "JUPYTER_RUNTIME_DIR": str(folder / ".jupyter" / "runtime"),
        "JUPYTER_DATA_DIR": str(folder / ".jupyter" / "data"),
        "IPYTHONDIR": str(folder / ".ipython"),
        "MPLCONFIGDIR": str(folder / ".matplotlib"),
        "MPLBACKEND": "Agg",
        "COURSE_PROGRESS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # workers run side by side: one core each
        "MKL_NUM_THREADS": "1",
    }


def _scratch_course(folder: Path, template: Path, assignment: str, student: str,
                    notebook: Path) -> None:
    folder.mkdir()
    shutil.copyfile(template / "nbgrader_config.py", folder / "nbgrader_config.py")
    shutil.copyfile(template / "gradebook.db", folder / "gradebook.db")
    # autograde copies the assignment's other files (data, helpers) from source/ next to the
    # notebook; they are the released ones, never the instructor's notebook
    shutil.copytree(template / "release" / assignment, folder / "source" / assignment,
                    ignore=shutil.ignore_patterns("*.ipynb"))
    submitted = folder / "submitted" / student / assignment
    submitted.mkdir(parents=True)
    shutil.copyfile(notebook, submitted / notebook.name)


def _outputs(student: str, assignment: str, notebook: str) -> list[str]:
    """What the step leaves in its folder, all ``course grade`` reads (nothing else stays on
    disk): the worker's result, nbgrader's autograded notebook and its feedback page."""
    page = Path(notebook).with_suffix(".html").name
    return [RESULT, f"autograded/{student}/{assignment}/{notebook}",
            f"feedback/{student}/{assignment}/{page}"]


def run_nbgrader(student: str, notebook: Path, folder: Path, *, template: Path,
                 assignment: str, timeout: float, isolate: bool) -> tuple[dict[str, float], str]:
    """nbgrader's per-cell scores for the notebook, or ({}, why they are missing).

    ``template`` is the course folder ``course grade`` prepared (configuration, gradebook,
    release/); the feedback lands in folder/feedback/<student>/<assignment>/.
    """
    _scratch_course(folder, template, assignment, student, notebook)
    result = run_sandboxed(
        [sys.executable, "-P", "-m", "course.grading.nbgrader_worker", assignment, student,
         *(["--isolated"] if isolate else [])],
        workdir=folder, timeout=timeout, env=_sandbox_env(folder), isolate=isolate,
        memory_mb=NBGRADER_MEMORY_MB, readable=[p for p in ("/etc/fonts",) if Path(p).is_dir()],
        keep=_outputs(student, assignment, notebook.name))
    if result.timed_out:
        return {}, f"timed out after {timeout:g} s"
    try:
        out = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        tail = (result.reason or _tail(result.stderr) or f"exit status {result.returncode}")
        return {}, f"no result ({tail})"
    return parse_scores(out)


def _tail(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def parse_scores(out) -> tuple[dict[str, float], str]:
    """Strictly typed scores from the worker's JSON (written in the sandbox: untrusted)."""
    if not (isinstance(out, dict) and isinstance(out.get("scores"), dict)
            and isinstance(out.get("error"), str)):
        return {}, "malformed result"
    if out["error"] or out.get("ok") is not True:
        return {}, out["error"][:300] or "failed"
    scores = {}
    for gid, value in out["scores"].items():
        ok = (isinstance(gid, str) and isinstance(value, list) and len(value) == 2
              and all(type(v) in (int, float) and math.isfinite(v) for v in value))
        if not ok:
            return {}, "malformed scores"
        scores[gid] = float(value[0])
    return scores, ""
