"""The nbgrader step of ``course grade``: autograde + feedback for one student, in the sandbox.

``run_nbgrader`` builds a scratch course folder holding only the notebook, the configuration,
a copy of the assignment's gradebook and the released files (nothing of source/, no other
student), runs ``autograder.inside.nbgrader_worker`` there in the sandbox, and reads back nbgrader's
per-cell scores strictly (the worker's output is as untrusted as the student's code it ran).
While the student's code runs, the worker keeps the gradebook and nbgrader's copy of the notebook
with the hidden tests off the disk, and it kills what the code left running before it writes the
feedback page (see ``nbgrader_worker``).

The student's code may have read the hidden tests (nbgrader's kernel runs them), so nothing the
sandbox produced becomes a reason: the worker's result counts only after a normal exit, its
error is one of ``nbgrader_worker.ERRORS``, and a failed step says why in words made here (the
sandbox's stderr is never quoted). After a failure the step's autograded/ and feedback/ folders
are removed, so nothing left there reaches the feedback or the gradebook.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

from autograder.inside.nbgrader_worker import ERRORS, RESULT
from autograder.inside.tree import remove
from autograder.isolation.environment import sandbox_env
from autograder.isolation.preload import shared
from autograder.isolation.sandbox import run_sandboxed
from autograder.settings import NBGRADER_MEMORY_MB

__all__ = ["run_nbgrader", "parse_scores", "scratch_course", "step_env"]


def step_env(folder: Path) -> dict[str, str]:
    """The sandbox's environment, with Jupyter's and IPython's folders in the step's folder
    (the worker removes what the kernel left there before it writes the feedback)."""
    return sandbox_env(folder, {"JUPYTER_RUNTIME_DIR": folder / ".jupyter" / "runtime",
                                "JUPYTER_DATA_DIR": folder / ".jupyter" / "data",
                                "IPYTHONDIR": folder / ".ipython"})


def scratch_course(folder: Path, template: Path, assignment: str, student: str,
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
                 assignment: str, timeout: float, isolate: bool,
                 keep_work: bool = False) -> tuple[dict[str, float], str]:
    """nbgrader's per-cell scores for the notebook, or ({}, why they are missing).

    ``template`` is the course folder ``course grade`` prepared (configuration, gradebook,
    release/); the feedback lands in folder/feedback/<student>/<assignment>/. Afterwards the
    folder holds only what ``_outputs`` names (all the step wrote with ``keep_work``).
    """
    scratch_course(folder, template, assignment, student, notebook)
    result = run_sandboxed(
        [sys.executable, "-P", "-m", "autograder.inside.nbgrader_worker", assignment, student,
         *(["--isolated"] if isolate else [])],
        workdir=folder, timeout=timeout, env=step_env(folder), isolate=isolate,
        memory_mb=NBGRADER_MEMORY_MB, readable=[p for p in ("/etc/fonts",) if Path(p).is_dir()],
        keep=None if keep_work else _outputs(student, assignment, notebook.name),
        preload=shared("notebook") if isolate else None)
    scores, problem = _read_result(folder, result, timeout)
    if not problem and not all(_plain_dirs(folder, top, student, assignment)
                               for top in ("autograded", "feedback")):
        problem = "a link where nbgrader writes its outputs"
    if problem:
        for top in ("autograded", "feedback"):
            remove(folder / top)
        return {}, problem
    return scores, ""


def _read_result(folder: Path, result, timeout: float) -> tuple[dict[str, float], str]:
    """The worker's scores, or why there are none, in words made here (the sandbox's stderr
    and nbgrader's log can quote the kernel, which may have read the hidden tests)."""
    if result.timed_out:
        return {}, f"timed out after {timeout:g} s"
    if result.returncode != 0 or result.reason:  # what it left is not the worker's own
        return {}, result.reason or f"the nbgrader step exited with status {result.returncode}"
    try:
        out = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}, "no result"
    return parse_scores(out)


def _plain_dirs(folder: Path, *parts: str) -> bool:
    """Whether each of folder/parts[0], folder/parts[0]/parts[1], ... is a directory, not a link
    (or is absent): a link planted in the sandbox would point this process elsewhere."""
    path = folder
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return True
        if not stat.S_ISDIR(mode):
            return False
    return True


def parse_scores(out) -> tuple[dict[str, float], str]:
    """Strictly typed scores from the worker's JSON (written in the sandbox: untrusted)."""
    if not (isinstance(out, dict) and isinstance(out.get("scores"), dict)
            and isinstance(out.get("error"), str)):
        return {}, "malformed result"
    if out["error"] or out.get("ok") is not True:
        return {}, ERRORS.get(out["error"], "failed")
    scores = {}
    for gid, value in out["scores"].items():
        ok = (isinstance(gid, str) and isinstance(value, list) and len(value) == 2
              and all(type(v) in (int, float) and math.isfinite(v) for v in value))
        if not ok:
            return {}, "malformed scores"
        scores[gid] = float(value[0])
    return scores, ""
