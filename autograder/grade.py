"""Grade a class: every student's notebook, in parallel, isolated, resumable (``course grade``).

This module only orchestrates: :class:`Grading` calls the steps in order, each a module of its
own. **collect**: the exercise registry (``exercises/``) is checked against the source notebook,
the submissions are gathered (``submissions.collect``) and those already graded taken from
results.jsonl; **prepare**: the course folder nbgrader needs (``template.prepare_template``);
**budgets**: the limits measured from the reference solution (``budget.budgets_for``); **each
student** (``student.grade_one``, ``workers`` at a time), in a private folder
out_dir/work/<student>/:

1. ``trusted.trusted_grade``: the student's solution cell runs in the sandbox on inputs the
   grader chooses and is scored here, with the points of the source notebook: this is the score;
2. ``nbgrader_step.run_nbgrader``: ``nbgrader autograde`` + ``generate_feedback`` in the
   sandbox; their per-cell scores go into the feedback and, when they disagree with the trusted
   ones, flag the row;
3. ``feedback.publish_feedback``: nbgrader's page, sanitised, with the recorded score on top;
4. ``results.record``: one line in out_dir/results.jsonl, at once; grades.csv is rewritten
   from it at the end. A student whose notebook hash is already there is not graded again, so
   an interrupted run resumes where it stopped.

With ``scheduler``, steps 1-3 run on the workers of a Dask cluster (``cluster.py``); step 4
stays here: this process is the only writer of results and feedback.

A broken submission gets a row with its reason; it never stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

from autograder import settings
from autograder.exercises import GradedExercise, exercise_for
from autograder.protocol import grading_secret
from autograder.store.gradebook import Recorder
from autograder.store.results import GradeRow, read_results, record, write_grades_csv
from autograder.store.submissions import Submission, collect
from autograder.store.template import prepare_template
from autograder.student import Context, grade_one

__all__ = ["Grading", "IsolationUnavailable", "grade"]

Todo = list[tuple[Submission, str]]  # (submission, its sha256) still to grade


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot isolate here; grading continues only with isolate=False."""


@dataclass
class Grading:
    """One ``course grade`` of ``assignment``: the options of :func:`grade`, and its steps as
    methods, in the order :meth:`run` calls them."""

    assignment: str
    submissions: Path
    out_dir: Path
    root: Path | None = None
    workers: int | None = None
    isolate: bool = True
    timeout: float = settings.STEP_SECONDS
    cell_timeout: int | None = None
    on_row: Callable[[GradeRow, int, int], None] | None = None
    gradebook: Recorder | None = None
    scheduler: str | None = None
    connect_timeout: float = settings.CONNECT_SECONDS
    security: object = None  # Dask's Security (None: the course's certificates, cluster_tls)
    budgets: bool = True
    keep_work: bool = False
    roster: object = None  # the LMS's roster file (roster.py), read into a Roster by check()
    roster_column: str | None = None
    zip_time_zone: str | None = None  # how the DOS times of an LMS's zip are read (lms_zip.py)

    def run(self) -> list[GradeRow]:
        """collect -> prepare -> budgets -> each student -> record; rows sorted by student."""
        exercise = self.check()
        subs, resumed, todo = self.collect(exercise)
        ctx = self.prepare(exercise, todo)
        # A resumed run with nothing left to grade times no reference; an empty folder does: it
        # is how the budgets are measured ahead of the deadline (and by the tests and the
        # benchmark).
        if self.budgets and (todo or not subs):
            self.apply_budgets(ctx)
        rows = self.record(resumed, self.grade_each(todo, ctx), total=len(subs))
        if self.gradebook is not None:  # the class into nbgrader's gradebook (gradebook.py)
            self.gradebook.record(exercise, rows, template=ctx.template, out_dir=self.out_dir,
                                  submissions=Path(self.submissions), roster=self.roster)
        return rows

    def check(self) -> GradedExercise:
        """The exercise, once the options, the sandbox, the secret and the cluster are fine."""
        from course.notebooks import find_root

        self.root = find_root(Path(self.root) if self.root else None)
        self.out_dir = Path(self.out_dir).resolve()
        exercise = exercise_for(self.assignment, self.root)
        _check_options(self.timeout, self.cell_timeout, self.isolate)
        grading_secret()  # made on first use; a secret the sandbox could read stops the run here
        if self.scheduler:  # an unreachable or misconfigured cluster fails before any work
            from autograder.cluster import check_cluster
            from autograder.cluster_tls import scheduler_security

            if self.security is None:  # an address without TLS is refused here
                self.security = scheduler_security(self.scheduler)
            check_cluster(self.scheduler, self.security, isolate=self.isolate,
                          connect_timeout=self.connect_timeout)
        self.open_lms_files()
        return exercise

    def open_lms_files(self) -> None:
        """The LMS's download zip unpacked into out_dir/work/_download (``lms_zip.py``), and
        its roster read (``roster.py``); each raises a ValueError that says what to do."""
        if Path(self.submissions).is_file():
            from autograder.store.lms_zip import unpack_download

            self.submissions = unpack_download(Path(self.submissions),
                                               self.out_dir / "work" / "_download",
                                               zone=self.zip_time_zone)
        elif self.zip_time_zone is not None:
            raise ValueError(f"--zip-time-zone reads the times of an LMS's download zip; "
                             f"{self.submissions} is a folder, whose file times count as they "
                             "are (unzip with TZ=<zone> unzip to read them in that zone)")
        if self.roster is not None:
            from autograder.store.roster import read_roster

            self.roster = read_roster(Path(self.roster), self.roster_column)

    def collect(self, exercise: GradedExercise) -> tuple[list[Submission], list[GradeRow], Todo]:
        """Every submission; the rows of those already graded (same notebook hash, status
        graded: an error or a grader error is graded again); the others, to grade."""
        subs = collect(Path(self.submissions), self.assignment,
                       self.out_dir / "work" / "_unpacked", roster=self.roster)
        done = {(r.student_id, r.sha256): r for r in read_results(self.out_dir)
                if r.assignment == exercise.assignment and r.status == "graded"}
        resumed = [GradeRow(**{**asdict(done[sub.student_id, sub.sha256]), "resumed": True})
                   for sub in subs if (sub.student_id, sub.sha256) in done]
        todo = [(sub, sub.sha256) for sub in subs if (sub.student_id, sub.sha256) not in done]
        return subs, resumed, todo

    def prepare(self, exercise: GradedExercise, todo: Todo) -> Context:
        """The nbgrader template in out_dir/work/_template, and what each student gets."""
        if self.isolate and not self.scheduler and todo:  # the zygotes import while the
            from autograder.isolation.preload import warm  # template is prepared

            warm(exercise.exercise.harness_preload)
        template = prepare_template(self.root, exercise, self.out_dir / "work",
                                    self.cell_timeout)
        return Context(exercise, template, self.out_dir, self.isolate, self.timeout,
                       keep_work=self.keep_work)

    def apply_budgets(self, ctx: Context) -> None:
        """Per-cell and per-probe limits from the reference solution (see budget.py)."""
        from autograder.steps.budget import budgets_for, cell_budget_config

        config = ctx.template / "nbgrader_config.py"
        found = budgets_for(self.root, ctx.exercise, ctx.template,
                            self.out_dir / "work" / "_reference", isolate=ctx.isolate,
                            timeout=ctx.timeout, cell_cap=settings.flat_cell_seconds(config),
                            probe_cap=ctx.probe_seconds)
        ctx.probe_seconds, ctx.probe_cpu_seconds = found.probe, found.probe_cpu
        if self.cell_timeout is None:  # --cell-timeout: the flat limit the instructor set
            with config.open("a", encoding="utf-8") as f:
                f.write(cell_budget_config(found))

    def grade_each(self, todo: Todo, ctx: Context) -> Iterator[GradeRow]:
        """Each student's row as it is graded: on the cluster, or ``workers`` at a time here."""
        if self.scheduler:
            from autograder.cluster import grade_on_cluster

            return grade_on_cluster(self.scheduler, self.security, todo, ctx,
                                    connect_timeout=self.connect_timeout)
        return _grade_locally(todo, ctx, self.workers)

    def record(self, resumed: list[GradeRow], graded: Iterator[GradeRow], *,
               total: int) -> list[GradeRow]:
        """Each row into results.jsonl as it arrives (this process alone writes), then
        grades.csv; ``on_row`` hears of each, the resumed ones first."""
        rows = []
        try:
            for row in chain(resumed, graded):  # one student at a time, as graded
                if not row.resumed:
                    record(self.out_dir, row)
                rows.append(row)
                if self.on_row:
                    self.on_row(row, len(rows), total)
        finally:  # on Ctrl-C: start no other student; what is recorded stays recorded
            graded.close()
            write_grades_csv(self.out_dir)
        return sorted(rows, key=lambda r: r.student_id)


def grade(assignment: str, submissions: Path, out_dir: Path, *, root: Path | None = None,
          workers: int | None = None, isolate: bool = True, timeout: float = settings.STEP_SECONDS,
          cell_timeout: int | None = None,
          on_row: Callable[[GradeRow, int, int], None] | None = None,
          gradebook: Recorder | None = None,
          scheduler: str | None = None, connect_timeout: float = settings.CONNECT_SECONDS,
          security=None, budgets: bool = True, keep_work: bool = False,
          roster: Path | None = None, roster_column: str | None = None,
          zip_time_zone: str | None = None) -> list[GradeRow]:
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
    ``workers`` local threads (``cluster.py``); this process still writes every result. Raises
    ClusterError when the scheduler cannot be reached within ``connect_timeout`` seconds or
    its workers cannot grade. ``security`` (Dask's ``Security``) defaults to the course's
    certificates (``cluster_tls.scheduler_security``: an address without TLS is refused).

    With no submission at all (an empty folder), the run only measures the budgets: do it on
    the grading machine before the deadline, so that the first run of the class does not wait
    for them.

    ``keep_work`` leaves all that each step wrote in out_dir/work/<student>/ (still within the
    per-student disk limit), to inspect a submission; by default only the files the grader
    reads stay there.

    ``submissions`` may be the LMS's download zip itself (``lms_zip.py``; ``zip_time_zone``
    names the zone its DOS times are read in). ``roster`` is the LMS's own export (Canvas's
    gradebook, Moodle's grading worksheet, ``roster.py``): Canvas's and Moodle's ids become its
    ``roster_column`` (default SIS User ID, or Email address). Both raise ValueError (a bad
    zip, zone, roster or column) before anyone is graded.
    """
    return Grading(assignment, submissions, out_dir, root=root, workers=workers,
                   isolate=isolate, timeout=timeout, cell_timeout=cell_timeout, on_row=on_row,
                   gradebook=gradebook, scheduler=scheduler, connect_timeout=connect_timeout,
                   security=security, budgets=budgets, keep_work=keep_work, roster=roster,
                   roster_column=roster_column, zip_time_zone=zip_time_zone).run()


def _check_options(timeout: float, cell_timeout: int | None, isolate: bool) -> None:
    if not timeout > 0 or (cell_timeout is not None and not 0 < cell_timeout < timeout):
        raise ValueError(f"need 0 < cell timeout < timeout, got cell timeout {cell_timeout} "
                         f"and timeout {timeout} (seconds)")
    from autograder.isolation.environment import packages_mismatch

    mismatch = packages_mismatch()
    if mismatch:
        raise ValueError(mismatch)
    if isolate:
        from autograder.isolation.sandbox import isolation_available

        ok, why = isolation_available()
        if not ok:
            raise IsolationUnavailable(why)


def _grade_locally(todo: list, ctx: Context, workers: int | None):
    """The local pool: ``workers`` students at a time on this machine; yields each row."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1))
    try:
        futures = [pool.submit(grade_one, sub, sha, ctx) for sub, sha in todo]
        for future in as_completed(futures):
            yield future.result()  # grade_one never raises
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
