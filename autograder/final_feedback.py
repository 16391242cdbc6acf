"""``course feedback``: every student's page again, from the gradebook's final state.

``course grade`` publishes a page at grading time; a person may then grade the written answers
in formgrader, comment, flag, or grant an extension. ``final_feedback`` renders each graded
student's page again with nbgrader's own feedback step, from the gradebook as it is now (manual
scores, comments, late penalty), from the notebook formgrader shows (hidden tests withheld,
sanitised), in the sandbox; the page is sanitised again and topped with the final score, and
put where nbgrader's ``release_feedback`` looks (``feedback/<student>/<assignment>/`` of the
course directory), with the ``timestamp.txt`` and ``submission_secret.txt`` it needs beside it.

The gradebook is read once, as one consistent snapshot taken into a SQLite file (a SQLite
gradebook by its backup API, a PostgreSQL one table by table in one repeatable-read
transaction): the banners and nbgrader's pages come from the same state, even while formgrader
writes, and the sandbox sees a file, never the instructors' database server.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autograder.exercises import exercise_for
from autograder.inside.feedback_worker import RESULT
from autograder.inside.tree import remove
from autograder.isolation.environment import sandbox_env
from autograder.isolation.sandbox import run_sandboxed
from autograder.settings import FEEDBACK_MEMORY_MB, FEEDBACK_SECONDS
from autograder.steps.feedback import publish_feedback
from autograder.store.gradebook import course_dir, nbgrader_settings, open_gradebook, safe_url
from autograder.store.submissions import STUDENT_ID

__all__ = ["FeedbackError", "Final", "final_feedback"]

_BESIDE = ("timestamp.txt", "submission_secret.txt")


class FeedbackError(RuntimeError):
    """The pages cannot be made (a gradebook this command cannot read): says what to do."""


@dataclass
class Final:
    """One student's final state in the gradebook: what the page's banner shows."""

    student_id: str
    score: float
    max_score: float
    late_penalty: float
    cells: dict = field(default_factory=dict)


def _snapshot(db_url: str, course_id: str, dest: Path) -> None:
    """The gradebook at ``db_url`` as it is now, in the SQLite file ``dest``."""
    from sqlalchemy import create_engine, delete, insert, select
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database) as src, sqlite3.connect(dest) as dst:
            src.backup(dst)  # a gradebook formgrader may be writing: never a torn copy
        return
    from nbgrader.api import Base

    with open_gradebook(f"sqlite:///{dest}", course_id):
        pass  # nbgrader's schema, stamped with its revision as nbgrader expects
    source, target = create_engine(db_url), create_engine(f"sqlite:///{dest}")
    try:
        with source.connect().execution_options(isolation_level="REPEATABLE READ") as src, \
                target.begin() as dst:
            for table in reversed(Base.metadata.sorted_tables):
                dst.execute(delete(table))  # the course row nbgrader made: the source's instead
            for table in Base.metadata.sorted_tables:
                rows = [dict(row._mapping) for row in src.execute(select(table))]
                if rows:
                    dst.execute(insert(table), rows)
    finally:
        source.dispose()
        target.dispose()


def _finals(db_url: str, course_id: str, assignment: str, notebook: str) -> list[Final]:
    finals = []
    with open_gradebook(db_url, course_id) as gb:
        for sub in gb.assignment_submissions(assignment):
            nb = next((n for n in sub.notebooks if n.name == notebook), None)
            if nb is None:
                continue
            penalty = nb.late_submission_penalty or 0.0
            cells = {g.name: {"points": g.score, "max_points": g.max_score,
                              "passed": g.score >= g.max_score,
                              "message": "to be graded by hand" if g.needs_manual_grade else ""}
                     for g in sorted(nb.grades, key=lambda g: g.name)}
            finals.append(Final(sub.student.id, nb.score - penalty, nb.max_score, penalty,
                                cells))
    return finals


def _scratch_course(scratch: Path, root: Path, snapshot: Path, graded: Path, student: str,
                    assignment: str) -> None:
    """The course folder the sandbox sees: configuration, the gradebook's snapshot, the
    student's graded notebook and nothing else."""
    scratch.mkdir(parents=True)
    shutil.copyfile(Path(root) / "autograder" / "nbgrader_config.py",
                    scratch / "nbgrader_config.py")
    shutil.copyfile(snapshot, scratch / "gradebook.db")
    shutil.copytree(graded, scratch / "autograded" / student / assignment)


def final_feedback(root: Path, assignment: str, *, db_url: str | None = None,
                   isolate: bool = True, say=print,
                   cdir: Path | None = None) -> tuple[list[str], list[str]]:
    """(students whose page was made, students whose page could not be) for ``assignment``.

    ``cdir`` is the course directory holding formgrader's ``autograded/`` (default: beside a
    SQLite gradebook, else ``root``, as ``course grade`` records it)."""
    exercise = exercise_for(assignment, root)
    default_url, course_id = nbgrader_settings(root)
    db_url = db_url or default_url
    cdir = Path(cdir) if cdir else course_dir(db_url, root)
    page = Path(exercise.notebook_name).with_suffix(".html").name
    work = cdir / ".course-feedback"
    remove(work)
    work.mkdir(parents=True)
    snapshot = work / "gradebook.db"
    try:
        try:
            _snapshot(db_url, course_id, snapshot)
        except Exception as err:  # noqa: BLE001 - said with what to do, nothing is written
            reason = " ".join(str(err).split())[:200]
            raise FeedbackError(f"cannot read the gradebook {safe_url(db_url)} "
                                f"({type(err).__name__}: {reason}); check --db and that "
                                "the server is reachable, then run `course feedback` again") \
                from err
        return _pages(root, assignment, exercise, course_id, snapshot, cdir, page, isolate, say)
    finally:
        remove(work)


def _pages(root, assignment, exercise, course_id, snapshot, cdir, page, isolate, say):
    made, failed = [], []
    for final in _finals(f"sqlite:///{snapshot}", course_id, assignment,
                         Path(exercise.notebook_name).stem):
        student = final.student_id
        graded = cdir / "autograded" / student / assignment
        if not STUDENT_ID.fullmatch(student) or not (graded / exercise.notebook_name).is_file():
            failed.append(student)
            say(f"{student}: no graded notebook in {graded}: run `course grade` first")
            continue
        if _render(root, snapshot, graded, student, assignment, page, final, cdir, isolate):
            made.append(student)
            say(f"{student}: {final.score:g} / {final.max_score:g}"
                + (f" (late penalty {final.late_penalty:g})" if final.late_penalty else ""))
        else:
            failed.append(student)
            say(f"{student}: nbgrader could not render the page (see its notebook in "
                f"formgrader)")
    return made, failed


def _render(root: Path, snapshot: Path, graded: Path, student: str, assignment: str, page: str,
            final: Final, cdir: Path, isolate: bool) -> bool:
    scratch = cdir / ".course-feedback" / student
    remove(scratch)
    try:
        _scratch_course(scratch, root, snapshot, graded, student, assignment)
        result = run_sandboxed(
            [sys.executable, "-P", "-m", "autograder.inside.feedback_worker", assignment,
             student], workdir=scratch, timeout=FEEDBACK_SECONDS, isolate=isolate,
            env=sandbox_env(scratch), memory_mb=FEEDBACK_MEMORY_MB,
            readable=[p for p in ("/etc/fonts",) if Path(p).is_dir()],
            keep=[RESULT, f"feedback/{student}/{assignment}/{page}"])
        ok = result.ok and '"ok": true' in _small(scratch / RESULT)
        dest = cdir / "feedback" / student / assignment
        if not ok or not publish_feedback(scratch / "feedback" / student / assignment, dest,
                                          final, page, isolate=isolate,
                                          title="Final score", detail=_detail(final)):
            return False
        for name in _BESIDE:
            if (graded / name).is_file():
                shutil.copyfile(graded / name, dest / name)
        # nbgrader's release_feedback copies the page with its mode into the exchange, where
        # the student reads it under a name only their secret gives: readable there, and kept
        # here in folders only the instructor may open (umask 077)
        (dest / page).chmod(0o644)
        return True
    finally:
        remove(scratch)


def _detail(final: Final) -> str:
    late = (f"late penalty {final.late_penalty:g} point(s) taken off" if final.late_penalty
            else "no late penalty")
    return f"written answers as graded by hand; {late}"


def _small(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.read(1000).decode("utf-8", "replace")
    except OSError:
        return ""
