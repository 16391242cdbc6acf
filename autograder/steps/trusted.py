"""The integrity check: score each graded exercise outside the student's process.

nbgrader runs the test cells in the student's own kernel, where the student's code can switch
them off. ``trusted_grade`` decides the score another way:

1. here (the trusted process) only the source of the exercise's solution cell is taken from the
   student's notebook (``solution_cell.py``); nothing else of the submission is used, and its
   text is not parsed here (IPython's transformers run in the sandbox);
2. the exercise's module (``exercises/<name>.py``) builds a plan: probes on inputs the grader
   chooses (seeded from ``COURSE_GRADING_SECRET``, never from the student), written with the
   solution source into a fresh folder;
3. ``harness.py`` runs in the sandbox (``python -I``), executes the import statements of the
   instructor's cells before the solution cell (from source/; those that bind a name the cell
   uses, or all of them when it can reach names dynamically), then only that cell (cell magics
   such as ``%%time`` run their body), runs the probes and writes plain results (JSON, ``.npy``
   without pickle);
4. here again, each test cell's trusted check reads the results strictly (``protocol.py``) and
   compares them with references computed in this process.

Each test cell of the notebook has a trusted twin worth the points the source notebook gives
it (all or nothing, as nbgrader scores a cell). Regrading gives the same scores: the inputs and
the harness's random seeds depend only on the secret.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autograder.exercises import GradedExercise
from autograder.isolation.preload import shared
from autograder.isolation.sandbox import run_sandboxed
from autograder.protocol import Fail, GraderFault, Results
from autograder.settings import (
    EXEC_SECONDS,
    HARNESS_MEMORY_MB,
    HARNESS_OUTPUT_BYTES,
    PROBE_SECONDS,
    STEP_SECONDS,
)
from autograder.store.solution_cell import setup_imports, solution_source

__all__ = ["CellScore", "diagnose", "trusted_grade"]

HARNESS = Path(__file__).resolve().parents[1] / "inside" / "harness.py"  # runs in the sandbox


@dataclass(frozen=True)
class CellScore:
    """The trusted score of one nbgrader test cell."""

    points: float
    max_points: float
    passed: bool
    message: str
    # the known mistakes (Mistake.name) the probes' results show; only on a failed cell
    diagnoses: tuple[str, ...] = ()


def _fresh_dir(path: Path) -> Path:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    path.mkdir(parents=True)
    return path


def _all_zero(exercise: GradedExercise, message: str) -> dict[str, CellScore]:
    return {gid: CellScore(0.0, pts, False, message) for gid, pts in exercise.points.items()}


def _write_plan(base: Path, exercise: GradedExercise, plan, source: str,
                probe_seconds: float, exec_seconds: float,
                probe_cpu_seconds: float | None = None) -> None:
    (base / "solution.py").write_text(source, encoding="utf-8")
    sandbox_code = exercise.exercise.sandbox_code
    if sandbox_code is not None:
        shutil.copyfile(sandbox_code, base / "sandbox_code.py")
    (base / "inputs").mkdir()
    for name, arr in plan.inputs.items():
        np.save(base / "inputs" / name, arr, allow_pickle=False)
    (base / "plan.json").write_text(json.dumps({
        "solution": "solution.py", "sandbox_code": sandbox_code and "sandbox_code.py",
        "setup": setup_imports(exercise.notebook, exercise.solution_id),
        "forbidden": list(exercise.exercise.forbidden),
        "probes": plan.probes, "probe_seconds": probe_seconds, "exec_seconds": exec_seconds,
        "probe_cpu_seconds": probe_cpu_seconds}),
        encoding="utf-8")


def _exec_prefix(R: Results) -> str:
    """What went wrong while the solution cell itself ran, to put before each failure."""
    try:
        rec = R.json("exec.json", 65536)
    except Fail:
        return ""
    called = rec.get("forbidden_calls") if isinstance(rec, dict) else None
    if isinstance(called, list) and called:
        names = ", ".join(str(n)[:60] for n in called[:3])
        return f"the solution cell called {names}, which the exercise forbids; "
    if isinstance(rec, dict) and rec.get("t") == "exception":
        return f"the solution cell raised {str(rec.get('name'))[:40]}; "
    if isinstance(rec, dict) and rec.get("t") == "timeout":
        return "the solution cell ran too long; "
    return ""


def diagnose(exercise: GradedExercise, recognisers: dict, R: Results) -> tuple[str, ...]:
    """The known mistakes whose behaviour the results show, in the exercise's order.

    A recogniser that cannot read what it needs (Fail) has not recognised its mistake; one that
    raises anything else is the grader's bug, as for a check.
    """
    found = []
    for mistake in exercise.exercise.mistakes:
        try:
            if recognisers[mistake.name](R) is True:
                found.append(mistake.name)
        except Fail:
            continue
        except Exception as exc:
            raise GraderFault(f"the recogniser of {mistake.name} raised {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc
    return tuple(found)


def _score(exercise: GradedExercise, checks: dict, R: Results,
           recognisers: dict | None = None) -> dict[str, CellScore]:
    scores = _cell_scores(exercise, checks, R)
    if recognisers is None or all(s.passed for s in scores.values()):
        return scores
    found = diagnose(exercise, recognisers, R)
    return {gid: s if s.passed else replace(s, diagnoses=found) for gid, s in scores.items()}


def _cell_scores(exercise: GradedExercise, checks: dict, R: Results) -> dict[str, CellScore]:
    prefix = _exec_prefix(R)
    scores = {}
    for gid, pts in exercise.points.items():
        try:
            checks[gid](R)
        except Fail as exc:
            scores[gid] = CellScore(0.0, pts, False, (prefix + str(exc))[:500])
        except Exception as exc:  # a check must say Fail: anything else is the grader's bug
            raise GraderFault(f"the trusted check {gid} raised {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc
        else:
            scores[gid] = CellScore(pts, pts, True, "passed")
    return scores


def _read_results(base: Path, exercise: GradedExercise, checks: dict,
                  reason: str, recognisers: dict | None = None) -> dict[str, CellScore]:
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return _all_zero(exercise, "the grading folder disappeared")
    results_fd = None
    try:
        try:
            results_fd = os.open("results", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                 dir_fd=dir_fd)
        except OSError:
            pass
        return _score(exercise, checks, Results(results_fd, reason), recognisers)
    finally:
        if results_fd is not None:
            os.close(results_fd)
        os.close(dir_fd)


def trusted_grade(exercise: GradedExercise, notebook_path, workdir, *,
                  timeout: float = STEP_SECONDS,
                  isolate: bool = True, memory_mb: int = HARNESS_MEMORY_MB,
                  probe_seconds: float = PROBE_SECONDS, exec_seconds: float = EXEC_SECONDS,
                  probe_cpu_seconds: float | None = None,
                  keep_work: bool = False) -> dict[str, CellScore]:
    """Score ``notebook_path``'s solution of ``exercise`` outside the student's process.

    Returns ``{grade_id: CellScore}`` for every graded test cell of the exercise. Never raises
    for a bad submission: a missing solution cell, code that crashes, loops or floods scores 0
    on the affected cells with the reason in ``message``. Raises SandboxUnavailableError when
    ``isolate`` is True and this machine cannot isolate. ``timeout`` bounds the whole sandboxed
    run, ``probe_seconds`` each call of the student's code (an endless loop in one function
    only fails the cells that need it) by the clock and ``probe_cpu_seconds`` (None: no such
    limit) by its CPU time, ``exec_seconds`` the setup imports, IPython's
    transformation of the cell and running it. The work happens in ``workdir``/trusted/,
    which afterwards holds only the results (all the harness wrote with ``keep_work``).
    """
    try:
        source = solution_source(notebook_path, exercise.solution_id, exercise.exercise.names)
    except Fail as exc:
        return _all_zero(exercise, str(exc))
    if not HARNESS.is_file():  # else every student would score 0: "the harness exited with 1"
        raise GraderFault(f"the trusted harness {HARNESS} is missing: reinstall the grader")
    plan, checks = exercise.build_plan()
    base = _fresh_dir(Path(workdir) / "trusted")
    _write_plan(base, exercise, plan, source, probe_seconds, exec_seconds, probe_cpu_seconds)
    result = run_sandboxed([sys.executable, "-I", "-B", str(HARNESS), "plan.json"],
                           workdir=base, timeout=timeout, memory_mb=memory_mb,
                           max_output_bytes=HARNESS_OUTPUT_BYTES, isolate=isolate,
                           keep=None if keep_work else ["results"],
                           preload=(shared("harness", exercise.exercise.harness_preload)
                                    if isolate else None))
    reason = result.reason or ("" if result.returncode == 0 else
                               f"the harness exited with status {result.returncode}")
    return _read_results(base, exercise, checks, reason, plan.recognisers)
