"""One student's grading, the same on this machine and on a Dask worker.

``grade_one`` takes a submission and a ``Context`` (the exercise, the prepared nbgrader
template, the limits) and runs the steps in order: the student's notebook copied into a fresh
work folder, the trusted check (``steps/trusted.py``: the score), nbgrader's autograde and
feedback in the sandbox (``steps/nbgrader_step.py``), the published feedback page
(``steps/feedback.py``). It never raises: a student's problem becomes the row's ``error`` and
reason, a fault of the grader itself (an exception in a step) the row's ``grader-error``.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from autograder.exercises import GradedExercise
from autograder.inside.tree import remove
from autograder.protocol import Fail
from autograder.settings import FEEDBACK_SECONDS, MAX_REASON_CHARS, PROBE_SECONDS
from autograder.steps.feedback import publish_feedback
from autograder.steps.nbgrader_step import run_nbgrader
from autograder.steps.trusted import CellScore, trusted_grade
from autograder.store.results import GRADED, GRADER_ERROR, GradeRow
from autograder.store.solution_cell import read_notebook
from autograder.store.submissions import Submission

__all__ = ["Context", "grade_one"]


@dataclass
class Context:
    exercise: GradedExercise
    template: Path  # the prepared course folder: configuration, gradebook, release/
    out_dir: Path
    isolate: bool
    timeout: float
    probe_seconds: float = PROBE_SECONDS  # each trusted probe (budget.py measures it per machine)
    probe_cpu_seconds: float | None = None  # CPU time of each probe (None: only the clock)
    keep_work: bool = False  # leave each student's whole work folder (for inspection)


def grade_one(sub: Submission, sha: str, ctx: Context) -> GradeRow:
    """Grade one student; every failure becomes the row's reason, and an exception in the
    grader's own code a ``grader-error`` row (the student's score is not known: never a 0)."""
    start = time.perf_counter()
    row = GradeRow.unscored(sub.student_id, ctx.exercise, sub.reason, sha256=sha)
    if sub.notebook is not None:
        try:
            _grade_notebook(sub, ctx, row)
        except Exception as err:  # a bug here must not stop the class: record it as ours
            row = GradeRow.unscored(  # nothing a step had filled in: cells, nbgrader's score
                sub.student_id, ctx.exercise, f"grader error (not the student's): "
                f"{type(err).__name__}: {err}; at {_where(err)}", sha256=sha, status=GRADER_ERROR)
    row.reason = row.reason[:MAX_REASON_CHARS]
    row.seconds = round(time.perf_counter() - start, 2)
    return row


def _copy_notebook(sub: Submission, ctx: Context) -> tuple[Path, str, str]:
    """The student's notebook (nbformat 4) in a fresh work folder, why it cannot be read ("" if
    it can) and what was changed to read it (``solution_cell.read_notebook``)."""
    import nbformat

    work = ctx.out_dir / "work" / sub.student_id
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    notebook = work / ctx.exercise.notebook_name
    try:
        nb, note = read_notebook(sub.notebook)
    except Fail as err:  # invalid JSON, not a notebook, undecodable bytes, too old
        return notebook, str(err)[:300], ""
    nbformat.write(nb, notebook)
    return notebook, "", note


def _grade_notebook(sub: Submission, ctx: Context, row: GradeRow) -> None:
    notebook, problem, note = _copy_notebook(sub, ctx)
    if problem:
        row.reason = problem
        return
    work = notebook.parent
    trusted = trusted_grade(ctx.exercise, notebook, work, timeout=ctx.timeout,
                            isolate=ctx.isolate, probe_seconds=ctx.probe_seconds,
                            probe_cpu_seconds=ctx.probe_cpu_seconds,
                            keep_work=ctx.keep_work)  # in work/trusted/
    if not ctx.keep_work:
        shutil.rmtree(work / "trusted", ignore_errors=True)  # its inputs and outputs: ~40 MB
    nbgrader_scores, problem = run_nbgrader(
        sub.student_id, notebook, work / "nbgrader", template=ctx.template,
        assignment=ctx.exercise.assignment, timeout=ctx.timeout, isolate=ctx.isolate,
        keep_work=ctx.keep_work)
    _fill_row(row, trusted, nbgrader_scores, problem)
    row.reason = "; ".join(filter(None, [sub.note, note, row.reason]))
    if not problem:
        page = Path(ctx.exercise.notebook_name).with_suffix(".html").name
        where = Path(row.student_id) / row.assignment
        published = publish_feedback(work / "nbgrader" / "feedback" / where,
                                     ctx.out_dir / "feedback" / where, row, page,
                                     isolate=ctx.isolate,
                                     timeout=min(ctx.timeout, FEEDBACK_SECONDS),
                                     mistakes=[ctx.exercise.exercise.mistake(n)
                                               for n in row.diagnoses])
        if not published:
            row.reason = "; ".join(filter(None, [
                row.reason, "no feedback page (missing, over the size limit or not sanitised "
                            "in time)"]))
    if not ctx.keep_work:  # nbgrader's own page runs the student's script: only the sanitised
        remove(work / "nbgrader" / "feedback")  # copy in OUT/feedback/ stays


def _fill_row(row: GradeRow, trusted: dict[str, CellScore], nbgrader_scores: dict[str, float],
              problem: str) -> None:
    """The score is the trusted one; nbgrader's scores are kept, and flag a disagreement."""
    row.status = GRADED
    row.score = round(sum(c.points for c in trusted.values()), 6)
    row.max_score = round(sum(c.max_points for c in trusted.values()), 6)
    row.cells = {gid: {"points": c.points, "max_points": c.max_points, "passed": c.passed,
                       "message": c.message, "nbgrader": nbgrader_scores.get(gid),
                       "diagnoses": list(c.diagnoses)}
                 for gid, c in sorted(trusted.items())}
    row.diagnoses = list(dict.fromkeys(d for c in trusted.values() for d in c.diagnoses))
    failed = [f"{gid} ({c.message[:80]})" if c.message else gid
              for gid, c in sorted(trusted.items()) if not c.passed]
    row.reason = "; ".join(filter(None, [f"nbgrader: {problem}" if problem else "",
                                         "failed " + ", ".join(failed) if failed else ""]))
    if problem:
        row.flagged = True
        return
    row.nbgrader_score = round(sum(nbgrader_scores.values()), 6)
    row.flagged = (set(nbgrader_scores) != set(trusted) or any(
        not math.isclose(nbgrader_scores[gid], c.points, abs_tol=1e-9)
        for gid, c in trusted.items() if gid in nbgrader_scores))


def _where(err: BaseException) -> str:
    """The grader's line that raised ``err`` (file:line in function), for the instructor."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"
