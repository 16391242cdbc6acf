"""Grade a class: every student's notebook, in parallel, isolated, resumable (``course grade``).

This module only orchestrates; each step is a module of its own. Before anyone is graded, the
exercise registry (``exercises/``) is checked against the source notebook and the course folder
nbgrader needs is prepared once (``release.prepare_course``). Then for each student
(``workers`` at a time), in a private folder out_dir/work/<student>/:

1. ``trusted.trusted_grade``: the student's solution cell runs in the sandbox on inputs the
   grader chooses and is scored here, with the points of the source notebook: this is the score;
2. ``nbgrader_step.run_nbgrader``: ``nbgrader autograde`` + ``generate_feedback`` in the
   sandbox; their per-cell scores go into the feedback and, when they disagree with the trusted
   ones, flag the row;
3. ``feedback.publish_feedback``: nbgrader's page, sanitised, with the recorded score on top;
4. ``results.record``: one line in out_dir/results.jsonl, at once; grades.csv is rewritten
   from it at the end. A student whose notebook hash is already there is not graded again, so
   an interrupted run resumes where it stopped.

With ``scheduler``, steps 1-3 run on the workers of a Dask cluster (``distributed.py``); step 4
stays here: this process is the only writer of results and feedback.

A broken submission gets a row with its reason; it never stops the others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from autograder import settings
from autograder.exercises import GradedExercise, exercise_for
from autograder.protocol import grading_secret
from autograder.store.gradebook import Recorder
from autograder.store.results import GradeRow, read_results, record, write_grades_csv
from autograder.store.submissions import collect
from autograder.student import Context, grade_one

__all__ = ["IsolationUnavailable", "grade"]


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot isolate here; grading continues only with isolate=False."""


def _check_options(timeout: float, cell_timeout: int | None, isolate: bool) -> None:
    if not timeout > 0 or (cell_timeout is not None and not 0 < cell_timeout < timeout):
        raise ValueError(f"need 0 < cell timeout < timeout, got cell timeout {cell_timeout} "
                         f"and timeout {timeout} (seconds)")
    if isolate:
        from autograder.isolation.sandbox import isolation_available

        ok, why = isolation_available()
        if not ok:
            raise IsolationUnavailable(why)


def _template_key(root: Path, assignment: str) -> str:
    """A hash of what a prepared template is made from: nbgrader's configuration and version,
    the assignment's folder in source/ and the code that prepares it."""
    import hashlib

    import nbgrader

    from autograder.store import release

    digest = hashlib.sha256(f"{nbgrader.__version__}\0".encode())
    src = root / "source" / assignment
    files = []  # what prepare_course copies: the same patterns left out
    for folder, dirs, names in os.walk(src):
        skip = release.IGNORE(folder, dirs + names)
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files += [Path(folder) / n for n in sorted(names) if n not in skip]
    for path, name in [(root / release.CONFIG, "config"), (Path(release.__file__), "code"),
                       *((p, p.relative_to(src).as_posix()) for p in files)]:
        digest.update(f"{name}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _cached_template(root: Path, assignment: str) -> Path | None:
    """The assignment's template, prepared once per machine and source (nbgrader's
    generate_assignment takes seconds) under ~/.cache/dl-tuning-course/templates/; None where
    that folder cannot be written."""
    import tempfile

    from autograder.steps.budget import cache_folder
    from autograder.store.release import prepare_course

    cached = cache_folder("templates") / f"{assignment}-{_template_key(root, assignment)}"
    if cached.is_dir():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{assignment}-", dir=cached.parent))
    except OSError:
        return None
    try:
        prepare_course(root, [assignment], building / "course")
        try:
            (building / "course").rename(cached)  # whole or not at all
        except OSError:
            if not cached.is_dir():  # not another process that got there first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return cached


def _prepare_template(root: Path, exercise: GradedExercise, work: Path,
                      cell_timeout: int | None) -> Path:
    from autograder.store.release import prepare_course

    template = work / "_template"
    if template.exists():
        shutil.rmtree(template)
    cached = _cached_template(root, exercise.assignment)
    if cached is None:
        prepare_course(root, [exercise.assignment], template)
    else:
        shutil.copytree(cached, template)
    if cell_timeout is not None:
        with (template / "nbgrader_config.py").open("a", encoding="utf-8") as f:
            f.write(f"\n# course grade --cell-timeout\nc.Execute.timeout = {int(cell_timeout)}\n")
    released = template / "release" / exercise.assignment / exercise.notebook_name
    if not released.is_file():
        raise ValueError(f"nbgrader did not release {released.name} for {exercise.assignment}")
    return template


def _apply_budgets(root: Path, ctx: Context, work: Path, flat_cells: bool) -> None:
    """Per-cell and per-probe limits from the reference solution (see budget.py)."""
    from autograder.steps.budget import budgets_for, cell_budget_config

    config = ctx.template / "nbgrader_config.py"
    found = budgets_for(root, ctx.exercise, ctx.template, work, isolate=ctx.isolate,
                        timeout=ctx.timeout, cell_cap=settings.flat_cell_seconds(config),
                        probe_cap=ctx.probe_seconds)
    ctx.probe_seconds, ctx.probe_cpu_seconds = found.probe, found.probe_cpu
    if flat_cells:
        with config.open("a", encoding="utf-8") as f:
            f.write(cell_budget_config(found))


def grade(assignment: str, submissions: Path, out_dir: Path, *, root: Path | None = None,
          workers: int | None = None, isolate: bool = True, timeout: float = settings.STEP_SECONDS,
          cell_timeout: int | None = None,
          on_row: Callable[[GradeRow, int, int], None] | None = None,
          gradebook: Recorder | None = None,
          scheduler: str | None = None, connect_timeout: float = settings.CONNECT_SECONDS,
          security=None, budgets: bool = True, keep_work: bool = False) -> list[GradeRow]:
    """Grade every submission of ``assignment`` in ``submissions``; rows sorted by student.

    ``timeout`` is the wall-clock limit in seconds for each sandboxed step of one student.
    ``cell_timeout`` is nbgrader's limit for one cell (default: ``Execute.timeout`` of
    autograder/nbgrader_config.py): a cell that runs longer is interrupted and fails, and the
    rest of the notebook is still graded. Keep it below ``timeout``, which discards nbgrader's
    whole report. ``on_row(row, done, total)`` is called as each student finishes.
    ``gradebook`` records the class in nbgrader's gradebook once all are graded. Raises
    ValueError for an assignment without graded exercises, RegistryError when the exercise
    modules and the source notebook disagree, and IsolationUnavailable when ``isolate`` and
    the sandbox cannot isolate on this machine.

    ``budgets`` (the default) limits each cell and each trusted probe by the reference
    solution's own time on this machine (``budget.py``: measured once, then cached), never
    above the flat limits; without it, or for cells when ``cell_timeout`` is given, the flat
    limits apply. ``scheduler`` (``tls://HOST:8786``) grades on that Dask cluster instead of
    ``workers`` local threads (``distributed.py``); this process still writes every result. Raises
    ClusterError when the scheduler cannot be reached within ``connect_timeout`` seconds or
    its workers cannot grade. ``security`` (Dask's ``Security``) defaults to the course's
    certificates (``cluster_tls.scheduler_security``: an address without TLS is refused).

    With no submission at all (an empty folder), the run only measures the budgets: do it on
    the grading machine before the deadline, so that the first run of the class does not wait
    for them.

    ``keep_work`` leaves all that each step wrote in out_dir/work/<student>/ (still within the
    per-student disk limit), to inspect a submission; by default only the files the grader
    reads stay there.
    """
    from course.notebooks import find_root

    root = find_root(Path(root) if root else None)
    exercise = exercise_for(assignment, root)
    _check_options(timeout, cell_timeout, isolate)
    grading_secret()  # made on first use; a secret the sandbox could read stops the run here
    if scheduler:  # an unreachable or misconfigured cluster fails before any work here
        from autograder.cluster import check_cluster
        from autograder.cluster_tls import scheduler_security

        security = scheduler_security(scheduler) if security is None else security
        check_cluster(scheduler, security, isolate=isolate, connect_timeout=connect_timeout)
    out_dir = Path(out_dir).resolve()
    subs = collect(Path(submissions), assignment, out_dir / "work" / "_unpacked")
    done = {(r.student_id, r.sha256): r for r in read_results(out_dir)
            if r.assignment == assignment and r.status == "graded"}
    hashed = [(sub, sub.sha256) for sub in subs]
    rows = [GradeRow(**{**asdict(done[sub.student_id, sha]), "resumed": True})
            for sub, sha in hashed if (sub.student_id, sha) in done]
    todo = [(sub, sha) for sub, sha in hashed if (sub.student_id, sha) not in done]
    if isolate and not scheduler and todo:  # the zygotes import while the template is
        from autograder.isolation.preload import warm  # prepared (a resumed run may need none)

        warm(exercise.exercise.harness_preload)
    template = _prepare_template(root, exercise, out_dir / "work", cell_timeout)
    ctx = Context(exercise, template, out_dir, isolate, timeout, keep_work=keep_work)
    # A resumed run with nothing left to grade times no reference; an empty folder does: it is
    # how the budgets are measured ahead of the deadline (and by the tests and the benchmark).
    if budgets and (todo or not subs):
        _apply_budgets(root, ctx, out_dir / "work" / "_reference",
                       flat_cells=cell_timeout is None)
    for done_count, row in enumerate(rows, 1):
        if on_row:
            on_row(row, done_count, len(subs))
    if scheduler:
        from autograder.cluster import grade_on_cluster

        graded = grade_on_cluster(scheduler, security, todo, ctx, connect_timeout=connect_timeout)
    else:
        graded = _grade_locally(todo, ctx, workers)
    try:
        for row in graded:  # this process alone records: one row per student, as it arrives
            record(out_dir, row)
            rows.append(row)
            if on_row:
                on_row(row, len(rows), len(subs))
    finally:  # on Ctrl-C: start no other student; what is recorded stays recorded
        graded.close()
        write_grades_csv(out_dir)
    rows = sorted(rows, key=lambda r: r.student_id)
    if gradebook is not None:  # 5. the class into nbgrader's gradebook (gradebook.py)
        gradebook.record(exercise, rows, template=template, out_dir=out_dir,
                         submissions=Path(submissions))
    return rows


def _grade_locally(todo: list, ctx: Context, workers: int | None):
    """The local pool: ``workers`` students at a time on this machine; yields each row."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1))
    try:
        futures = [pool.submit(grade_one, sub, sha, ctx) for sub, sha in todo]
        for future in as_completed(futures):
            yield future.result()  # grade_one never raises
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
