"""Time budgets measured on the grading machine, from the instructor's own solution.

A flat limit (300 s per notebook cell, 30 s per trusted probe) lets a submission that loops
hold a worker for minutes per cell. Before the class is graded, ``measure_budgets`` grades the
reference solution (the released notebook with the source notebook's solution cell) once, on
this machine, through the same two sandboxed steps as a student, and times:

- each cell of nbgrader's run (nbclient records when the kernel started and finished each cell
  in the autograded notebook's ``metadata.execution``);
- each probe of the trusted check (the harness writes one result file per probe, right after
  the probe: the gaps between the files' modification times).

A student's budget is then ``max(floor, MULTIPLE x the reference's time)``, never above the
flat limit: test cells by grade_id (nbgrader puts test cells back from the gradebook before it
runs them, so their ids are the instructor's), every other cell the slowest non-test cell of
the reference, every probe the slowest probe.

Each cell and probe has two budgets of that form: one of CPU time (what the kernel and its
children, or the harness, used while it ran: nbgrader_worker.py's ``CpuWatch``, the harness's
ITIMER_PROF) and one of wall-clock time. The CPU budget is what stops a loop that spins, after
seconds (its floor is low: CPU time hardly changes with the machine's load); the wall-clock one,
whose floor stays high because a loaded machine stretches it many times, is what stops code
that waits (``time.sleep``, a blocking read). An honest submission, even ten times slower than
the reference, keeps its time on a loaded machine. The reference must score full marks, or
grading stops here with the reason: a course that cannot grade its own solution would give
every student a wrong score.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from autograder.settings import (
    CELL_CPU_FLOOR,
    CELL_FLOOR,
    MULTIPLE,
    PROBE_CPU_FLOOR,
    PROBE_FLOOR,
    PROBE_SECONDS,
    cache_folder,
    flat_cell_seconds,
)

__all__ = ["Budgets", "BudgetError", "budgets_for", "cache_file", "cache_folder", "cell_times",
           "cell_budget_config", "clamp_budget", "measure_budgets", "probe_cpu_times",
           "probe_times"]



CPU_NOTE = ("(stopped: this cell used more than {limit:g} s of CPU time, its limit on this "
            f"machine: {MULTIPLE} times what the reference solution needs, or at least "
            f"{CELL_CPU_FLOOR:g} s)")


class BudgetError(RuntimeError):
    """The reference solution does not grade as it must on this machine."""


@dataclass
class Budgets:
    """Seconds per cell (by grade_id; ``other_cells`` for every other cell) and per probe, of
    wall-clock time and (``*_cpu``) of CPU time."""

    cells: dict[str, float] = field(default_factory=dict)
    other_cells: float = CELL_FLOOR
    probe: float = PROBE_FLOOR
    cells_cpu: dict[str, float] = field(default_factory=dict)
    other_cells_cpu: float = CELL_CPU_FLOOR
    probe_cpu: float = PROBE_CPU_FLOOR
    measured: dict = field(default_factory=dict)  # the reference's own times, for the record


def clamp_budget(seconds: float, floor: float, cap: float) -> float:
    return float(min(cap, max(floor, MULTIPLE * seconds)))


def cell_times(notebook: Path, cpu: bool = False) -> list[tuple[str | None, float]]:
    """(grade_id, seconds) for each executed code cell of an autograded notebook; ``cpu``: the
    CPU seconds the nbgrader step noted (``metadata.course.cpu_seconds``) instead of the
    wall-clock ones."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    times = []
    for cell in nb.get("cells", []):
        execution = cell.get("metadata", {}).get("execution", {})
        start, end = execution.get("iopub.execute_input"), execution.get("shell.execute_reply")
        if cell.get("cell_type") != "code" or not (start and end):
            continue
        seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                   - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cpu:
            seconds = cell.get("metadata", {}).get("course", {}).get("cpu_seconds")
            if not isinstance(seconds, (int, float)):
                raise BudgetError(f"no CPU time noted for cell {grade_id or '?'} of {notebook}")
        times.append((grade_id, max(0.0, float(seconds))))
    return times


def probe_cpu_times(results: Path, probes: list[str]) -> list[float]:
    """CPU seconds of each probe, as the harness noted them in its result files."""
    return [float(json.loads((results / f"{pid}.json").read_text(encoding="utf-8"))["cpu"])
            for pid in probes]


def probe_times(results: Path, probes: list[str]) -> list[float]:
    """Seconds of each probe: gaps between the result files, in the order they were run."""
    order = ["exec", *probes]
    stamps = [os.stat(results / f"{pid}.json").st_mtime_ns for pid in order]
    return [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:], strict=False)]


def _reference_notebook(root: Path, exercise, template: Path, dest: Path) -> Path:
    """dest/<notebook>: the template's released notebook with the instructor's solution."""
    import nbformat

    from autograder.store.samples import reference_notebook

    try:
        nb = reference_notebook(root, exercise.assignment, release_dir=template / "release")
    except ValueError as err:  # not one solution cell in the released notebook
        raise BudgetError(str(err)) from err
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest / exercise.notebook_name)
    return dest / exercise.notebook_name


def measure_budgets(root: Path, exercise, template: Path, work: Path, *, isolate: bool,
                    timeout: float, cell_cap: float, probe_cap: float = PROBE_SECONDS) -> Budgets:
    """Grade the reference solution in ``work`` and derive the budgets (see the module)."""
    from autograder.steps.nbgrader_step import run_nbgrader
    from autograder.steps.trusted import trusted_grade

    if work.exists():
        shutil.rmtree(work)
    notebook = _reference_notebook(root, exercise, template, work / "in")
    plan, _ = exercise.build_plan()
    trusted = trusted_grade(exercise, notebook, work, timeout=timeout, isolate=isolate,
                            probe_seconds=probe_cap)
    failed = {gid: c.message for gid, c in trusted.items() if not c.passed}
    if failed:
        raise BudgetError(f"the reference solution of {exercise.assignment} fails the trusted "
                          f"check on this machine: {failed}")
    probe_ids = [p["id"] for p in plan.probes]
    probes = probe_times(work / "trusted" / "results", probe_ids)
    probes_cpu = probe_cpu_times(work / "trusted" / "results", probe_ids)
    scores, problem = run_nbgrader("_reference", notebook, work / "nbgrader", template=template,
                                   assignment=exercise.assignment, timeout=timeout,
                                   isolate=isolate)
    if problem or any(scores.get(gid) != pts for gid, pts in exercise.points.items()):
        raise BudgetError(f"the reference solution of {exercise.assignment} does not get full "
                          f"marks from nbgrader on this machine: {problem or scores}")
    autograded = (work / "nbgrader" / "autograded" / "_reference" / exercise.assignment
                  / exercise.notebook_name)
    cells, cells_cpu = cell_times(autograded), cell_times(autograded, cpu=True)
    if not cells:
        raise BudgetError(f"nbgrader recorded no cell times in {autograded}")
    tests = {gid: s for gid, s in cells if gid in exercise.points}
    others = [s for gid, s in cells if gid not in exercise.points]
    tests_cpu = {gid: s for gid, s in cells_cpu if gid in exercise.points}
    others_cpu = [s for gid, s in cells_cpu if gid not in exercise.points]
    budgets = Budgets(
        cells={gid: clamp_budget(s, CELL_FLOOR, cell_cap) for gid, s in tests.items()},
        other_cells=clamp_budget(max(others, default=0.0), CELL_FLOOR, cell_cap),
        probe=clamp_budget(max(probes, default=0.0), PROBE_FLOOR, probe_cap),
        cells_cpu={gid: clamp_budget(s, CELL_CPU_FLOOR, cell_cap)
                   for gid, s in tests_cpu.items()},
        other_cells_cpu=clamp_budget(max(others_cpu, default=0.0), CELL_CPU_FLOOR, cell_cap),
        probe_cpu=clamp_budget(max(probes_cpu, default=0.0), PROBE_CPU_FLOOR, probe_cap),
        measured={"test cells": tests, "slowest other cell": max(others, default=0.0),
                  "slowest probe": max(probes, default=0.0),
                  "notebook": sum(s for _, s in cells),
                  "test cells (CPU)": tests_cpu,
                  "slowest other cell (CPU)": max(others_cpu, default=0.0),
                  "slowest probe (CPU)": max(probes_cpu, default=0.0)})
    shutil.rmtree(work, ignore_errors=True)
    return budgets


_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")


def cell_budget_config(budgets: Budgets) -> str:
    """Lines for nbgrader_config.py: nbclient asks ``timeout_func(cell)`` for each cell's
    wall-clock budget; the sandboxed worker's GuardedExecute reads the CPU budgets."""
    cells = {gid: round(s, 1) for gid, s in budgets.cells.items() if _SAFE_ID.fullmatch(gid)}
    cpu = {gid: round(s, 1) for gid, s in budgets.cells_cpu.items() if _SAFE_ID.fullmatch(gid)}
    return (
        "\n# course grade: per-cell budgets measured from the reference solution "
        "(autograder/steps/budget.py)\n"
        f"_COURSE_CELL_BUDGETS = {cells!r}\n"
        f"_COURSE_OTHER_CELLS = {round(budgets.other_cells, 1)!r}\n\n\n"
        "def _course_cell_budget(cell):\n"
        "    grade_id = cell.get('metadata', {}).get('nbgrader', {}).get('grade_id')\n"
        "    return int(_COURSE_CELL_BUDGETS.get(grade_id, _COURSE_OTHER_CELLS))\n\n\n"
        "c.Execute.timeout_func = _course_cell_budget\n"
        f"c.GuardedExecute.cpu_budgets = {cpu!r}\n"
        f"c.GuardedExecute.cpu_other = {round(budgets.other_cells_cpu, 1)!r}\n"
        f"c.GuardedExecute.cpu_note = {CPU_NOTE!r}\n")


def cache_file(root: Path, exercise, template: Path, isolate: bool) -> Path:
    """Where this machine keeps the budgets of this exact released notebook and solution."""
    import hashlib
    import platform

    from autograder.protocol import grader_fingerprint
    from autograder.store.samples import solution_code

    digest = hashlib.sha256()
    for part in ((template / "release" / exercise.assignment / exercise.notebook_name)
                 .read_bytes(), solution_code(root, exercise.assignment).encode(),
                 grader_fingerprint().encode(), platform.node().encode(),
                 f"{isolate} {MULTIPLE} {CELL_FLOOR} {PROBE_FLOOR} cpu {CELL_CPU_FLOOR} "
                 f"{PROBE_CPU_FLOOR}".encode()):
        digest.update(hashlib.sha256(part).digest())
    return cache_folder("budgets") / f"{exercise.assignment}-{digest.hexdigest()[:16]}.json"


def budgets_for(root: Path, exercise, template: Path, work: Path, *, isolate: bool,
                timeout: float, cell_cap: float, probe_cap: float = PROBE_SECONDS) -> Budgets:
    """The budgets, measured once per machine and released notebook (then read from a cache
    under ~/.cache/dl-tuning-course/budgets/), capped by this run's flat limits."""
    import fcntl

    cache = cache_file(root, exercise, template, isolate)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock = cache.with_suffix(".lock").open("a")
    except OSError:
        lock = None  # no cache folder: measure every time
    try:
        if lock is not None:  # one process measures, the others wait and read its result
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = Budgets(**json.loads(cache.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            found = measure_budgets(root, exercise, template, work, isolate=isolate,
                                    timeout=timeout, cell_cap=flat_cell_seconds(),
                                    probe_cap=PROBE_SECONDS)
            try:
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(found.__dict__), encoding="utf-8")
                tmp.replace(cache)
            except OSError:
                pass  # no cache: measured again next time
    finally:
        if lock is not None:
            lock.close()
    return Budgets({gid: min(s, cell_cap) for gid, s in found.cells.items()},
                   min(found.other_cells, cell_cap), min(found.probe, probe_cap),
                   {gid: min(s, cell_cap) for gid, s in found.cells_cpu.items()},
                   min(found.other_cells_cpu, cell_cap), min(found.probe_cpu, probe_cap),
                   found.measured)
