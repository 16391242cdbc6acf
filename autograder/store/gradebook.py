"""The course's nbgrader gradebook: ``course grade`` records the trusted scores there.

The gradebook is nbgrader's own database, read and written through ``nbgrader.api.Gradebook``
(any SQLAlchemy URL: the SQLite file gradebook.db of the course directory by default, or a
PostgreSQL server shared by several instructors and TAs). formgrader, ``nbgrader export`` and
``course export`` read it. ``course grade`` is its only writer of scores; people add manual
scores, comments and flags in formgrader. After a class is graded, :meth:`Recorder.record`:

- puts the assignment's cells in the gradebook (from the gradebook nbgrader made when it
  generated the assignment for this run) and its deadline (autograder/deadlines.yaml);
- for each graded student: the submission and its time, each test cell's trusted score as
  nbgrader's ``auto_score``, nbgrader's in-process score and the trusted checks' messages as the
  solution cell's comment, and the late penalty;
- marks for review (``needs_manual_grade``) each test cell where nbgrader's in-process score
  disagreed with the trusted one, and flags the notebook;
- leaves written answers (manually graded markdown cells) for a person: an answered one needs
  a manual grade, an untouched one scores 0, as nbgrader does;
- never overwrites a person's ``manual_score``: it keeps it and says so;
- puts the graded notebook (outputs reduced to text and images) in autograded/ of the course
  directory, where formgrader shows it.

Two runs never record into one gradebook at once: the recording holds a lock (a lock file next
to a SQLite gradebook, an advisory lock on PostgreSQL); a second run waits for it, and after
``wait`` seconds stops with :class:`GradebookBusy` having recorded nothing.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from autograder.settings import GRADEBOOK_WAIT_SECONDS, course_id
from autograder.store.deadlines import LatePolicy, submission_time, time_source

__all__ = ["GradebookBusy", "Recorder", "nbgrader_settings", "gradebook_lock", "safe_url",
           "open_gradebook", "recorded", "course_dir", "diagnosis_lines", "COMMENT_HEADER",
           "DIAGNOSIS_PREFIX"]

COMMENT_HEADER = "course grade (trusted checks)"
DIAGNOSIS_PREFIX = "diagnosis "  # a comment line naming a known mistake (diagnosis_lines)
_PG_LOCK_KEY = 0x636F75727365  # "course": one advisory lock per PostgreSQL database
_KEEP_MIME = ("text/plain", "image/png", "image/jpeg")


class GradebookBusy(RuntimeError):
    """Another ``course grade`` held the gradebook for longer than this run would wait."""


def nbgrader_settings(root: Path) -> tuple[str, str]:
    """(db_url, course_id) of the course, as autograder/nbgrader_config.py sets them.

    nbgrader's default db_url is the SQLite file gradebook.db in the course directory.
    """
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py",
                                path=str(Path(root) / "autograder")).load_config()
    coursedir = CourseDirectory(config=config)
    coursedir.root = str(Path(root).resolve())
    return coursedir.db_url, coursedir.course_id


def course_dir(db: str | None, root: Path) -> Path:
    """Where formgrader's autograded/ goes: beside a SQLite gradebook given with --db (nbgrader
    keeps gradebook.db in its course directory), else the course repository ``root``."""
    from sqlalchemy.engine import make_url

    if db:
        url = make_url(db)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent
    return Path(root)


def safe_url(db_url: str) -> str:
    """The URL with its password hidden, to print."""
    from sqlalchemy.engine import make_url

    return make_url(db_url).render_as_string(hide_password=True)


@contextmanager
def open_gradebook(db_url: str, course_id: str):
    """nbgrader's Gradebook at ``db_url`` (created if new), closed afterwards."""
    from nbgrader.api import Gradebook

    from autograder.inside.nbgrader_api import alembic_head_in_process

    alembic_head_in_process()  # a new gradebook's revision, without a new Python
    gb = Gradebook(db_url, course_id)
    try:
        yield gb
    finally:
        gb.close()


def _busy(db_url: str, wait: float) -> GradebookBusy:
    return GradebookBusy(
        f"another `course grade` is still recording into {safe_url(db_url)} after {wait:g} s; "
        "this run recorded nothing there. Run the same command again once it has finished "
        "(students already graded are not graded again), or raise --db-wait.")


def _wait_for_lock(try_lock: Callable[[], bool], db_url: str, wait: float,
                   on_wait: Callable[[str], None]) -> None:
    """Call ``try_lock`` until it holds the lock, saying once that it waits; GradebookBusy
    after ``wait`` seconds."""
    deadline, told = time.monotonic() + wait, False
    while not try_lock():
        if time.monotonic() >= deadline:
            raise _busy(db_url, wait)
        if not told:
            on_wait(f"waiting for another `course grade` to finish recording into "
                    f"{safe_url(db_url)} (up to {wait:g} s)")
            told = True
        time.sleep(0.2)


@contextmanager
def _sqlite_lock(path: Path, db_url: str, wait: float, on_wait: Callable[[str], None]):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as f:
        def try_lock() -> bool:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        _wait_for_lock(try_lock, db_url, wait, on_wait)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _postgres_lock(db_url: str, wait: float, on_wait: Callable[[str], None]):
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            _wait_for_lock(lambda: bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                                     {"k": _PG_LOCK_KEY}).scalar()),
                           db_url, wait, on_wait)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
    finally:
        engine.dispose()


@contextmanager
def gradebook_lock(db_url: str, *, wait: float = GRADEBOOK_WAIT_SECONDS,
                   on_wait: Callable[[str], None] = print):
    """Hold the gradebook for one recording; GradebookBusy after ``wait`` seconds."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            yield  # a private in-memory database: nobody else can write it
            return
        with _sqlite_lock(Path(url.database).resolve(), db_url, wait, on_wait):
            yield
    elif backend == "postgresql":
        with _postgres_lock(db_url, wait, on_wait):
            yield
    else:
        raise ValueError(f"course grade records into SQLite or PostgreSQL gradebooks, not "
                         f"{backend} ({safe_url(db_url)})")


def _naive_utc(when):
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when is not None else None


def _sync_assignment(gb, template_db: Path, course_id: str, name: str,
                     policy: LatePolicy | None) -> None:
    """The assignment, its notebooks and cells as nbgrader generated them for this run."""
    with open_gradebook(f"sqlite:///{template_db}", course_id) as src:
        source = src.find_assignment(name)
        extra = {"duedate": _naive_utc(policy.deadline)} if policy and policy.deadline else {}
        gb.update_or_create_assignment(name, **extra)
        for nb in source.notebooks:
            gb.update_or_create_notebook(nb.name, name, kernelspec=nb.kernelspec)
            for cell in nb.grade_cells:
                gb.update_or_create_grade_cell(cell.name, nb.name, name,
                                               max_score=cell.max_score,
                                               cell_type=cell.cell_type)
            for cell in nb.solution_cells:
                gb.update_or_create_solution_cell(cell.name, nb.name, name)
            for cell in nb.task_cells:
                gb.update_or_create_task_cell(cell.name, nb.name, name,
                                              max_score=cell.max_score,
                                              cell_type=cell.cell_type)
            for cell in nb.source_cells:
                gb.update_or_create_source_cell(cell.name, nb.name, name,
                                                cell_type=cell.cell_type, locked=cell.locked,
                                                source=cell.source, checksum=cell.checksum)


def _submitted_notebook(gb, assignment: str, notebook: str, student: str):
    """The student's SubmittedNotebook, with a Grade and a Comment for every current cell."""
    from nbgrader.api import Comment, Grade, MissingEntry

    gb.update_or_create_student(student)
    try:
        gb.find_submission(assignment, student)
    except MissingEntry:
        with warnings.catch_warnings():  # nbgrader's own add_submission, under SQLAlchemy 2
            warnings.filterwarnings("ignore", message=".*not in session.*")
            gb.add_submission(assignment, student)
    snb = gb.find_submission_notebook(notebook, assignment, student)
    master = snb.notebook
    graded = {g.cell_id for g in snb.grades}
    commented = {c.cell_id for c in snb.comments}
    for cell in [*master.grade_cells, *master.task_cells]:
        if cell.id not in graded:  # a cell added to the notebook after this student's record
            gb.db.add(Grade(cell_id=cell.id, notebook=snb))
    for cell in [*master.solution_cells, *master.task_cells]:
        if cell.id not in commented:
            gb.db.add(Comment(cell_id=cell.id, notebook=snb))
    gb.db.commit()
    return snb


def _answered_cells(notebook: Path | None, checksums: dict[str, str]) -> dict[str, bool]:
    """For each written-answer cell: whether the student changed it (True when unknown)."""
    from nbgrader.utils import compute_checksum

    answered = dict.fromkeys(checksums, True)
    if notebook is None:
        return answered
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    found = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for name, checksum in checksums.items():
        cell = found.get(name)
        if cell is None:
            answered[name] = False  # deleted: nothing to grade, as an untouched answer
            continue
        cell.metadata.nbgrader.pop("checksum", None)
        answered[name] = compute_checksum(cell) != checksum
    return answered


def diagnosis_lines(exercise, row) -> list[str]:
    """The comment's lines naming each known mistake the trusted checks found in ``row``
    (``exercise``: the GradedExercise), as ``diagnosis NAME: text``; course export and
    course report read them back."""
    found = (exercise.exercise.mistake(name) for name in getattr(row, "diagnoses", []))
    return [f"{DIAGNOSIS_PREFIX}{m.name}: {m.text()}" for m in found if m is not None]


def _comment_text(row, cells: dict, diagnoses: list[str] = ()) -> str:
    """The solution cell's comment: what the trusted checks found (the known mistakes first),
    and nbgrader's view."""
    lines = [f"{COMMENT_HEADER}: {row.score:g}/{row.max_score:g}; notebook sha256 "
             f"{row.sha256[:16]}.", *diagnoses]
    if row.nbgrader_score is not None:
        lines.append(f"nbgrader's in-process score: {row.nbgrader_score:g}/{row.max_score:g}.")
    if row.flagged:
        lines.append("FLAGGED for review: nbgrader's own test cells disagree with the trusted "
                     "checks (see the cells marked for manual grading).")
    for gid, cell in cells.items():
        nb = "" if cell.get("nbgrader") is None else f" (nbgrader {cell['nbgrader']:g})"
        message = f": {cell['message']}" if cell.get("message") else ""
        lines.append(f"- {gid}: {cell['points']:g}/{cell['max_points']:g}{nb}{message}")
    if row.reason and not row.reason.startswith("failed "):
        lines.append(f"note: {row.reason}")
    return "\n".join(lines)


def _previous_sha(comment) -> str:
    text = comment.auto_comment or "" if comment is not None else ""
    head = text.split("\n", 1)[0]
    return head.rsplit("sha256 ", 1)[-1].rstrip(".") if "sha256 " in head else ""


def _sanitised_copy(src: Path, dest: Path) -> None:
    """The graded notebook for formgrader, with nothing active from the student: no HTML or
    script in the outputs, markdown (the written answers) and attachments through nh3's
    allowlist, no metadata but nbgrader's (``inside/sanitise.py``)."""
    import nbformat

    from autograder.inside.sanitise import sanitize_notebook

    nb = nbformat.read(src, as_version=4)
    sanitize_notebook(nb, keep_output=_KEEP_MIME)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)


_SECRET = "submission_secret.txt"


def _exchange_files(dest: Path, when, submissions: Path, student: str, roster=None) -> None:
    """Beside formgrader's copy, what nbgrader's feedback and ``release_feedback`` need: the
    submission's time as recorded (``timestamp.txt``) and, from nbgrader's exchange, the
    submission's secret (the student finds their page by it; 128 hex digits, nothing else)."""
    import re

    from autograder.store.lms import entry_of

    if when is not None:
        (dest / "timestamp.txt").write_text(f"{_naive_utc(when):%Y-%m-%d %H:%M:%S.%f} UTC")
    entry = entry_of(submissions, student, roster)
    secrets = [] if entry is None or not entry.path.is_dir() else [
        p for p in entry.path.rglob(_SECRET)
        if len(p.relative_to(entry.path).parts) <= 3 and p.is_file() and not p.is_symlink()]
    (dest / _SECRET).unlink(missing_ok=True)
    if len(secrets) == 1 and secrets[0].stat().st_size <= 256:
        secret = secrets[0].read_text(encoding="ascii", errors="replace").strip()
        if re.fullmatch(r"[0-9a-f]{16,128}", secret):
            (dest / _SECRET).write_text(secret)


def _verified(path: Path, sha256: str) -> Path | None:
    if not path.is_file():
        return None
    return path if hashlib.sha256(path.read_bytes()).hexdigest() == sha256 else None


@dataclass
class Recorder:
    """Where and how ``course grade`` records a class: gradebook URL, course directory, lock."""

    db_url: str
    course_dir: Path  # formgrader's course directory: autograded/<student>/<assignment>/
    course_id: str = field(default_factory=course_id)  # nbgrader's, from nbgrader_config.py
    wait: float = GRADEBOOK_WAIT_SECONDS
    policies: dict[str, LatePolicy] = field(default_factory=dict)
    say: Callable[[str], None] = print

    def record(self, exercise, rows, *, template: Path, out_dir: Path,
               submissions: Path, roster=None) -> list[str]:
        """Record ``rows`` of ``exercise`` (graded this run or resumed); returns what it said.
        ``roster`` is the one ``collect`` mapped the students' ids with."""
        notes: list[str] = []
        assignment = exercise.assignment
        graded = [r for r in rows if r.status == "graded"]
        skipped = [r.student_id for r in rows if r.status != "graded"]
        with gradebook_lock(self.db_url, wait=self.wait, on_wait=self.say), \
                open_gradebook(self.db_url, self.course_id) as gb:
            _sync_assignment(gb, Path(template) / "gradebook.db", self.course_id, assignment,
                             self.policies.get(assignment))
            for row in graded:
                notes += self._record_row(gb, exercise, row, Path(out_dir),
                                          Path(submissions), roster)
            pending = [g.cell.cell_type for s in gb.assignment_submissions(assignment)
                       for nb in s.notebooks for g in nb.grades if g.needs_manual_grade]
        if skipped:
            notes.append(f"not recorded (nothing to grade, see grades.csv): "
                         f"{', '.join(skipped)}")
        notes.append(f"gradebook {safe_url(self.db_url)}: {len(graded)} submission(s) of "
                     f"{assignment} recorded; still to do in formgrader: "
                     f"{pending.count('markdown')} written answer(s) to grade, "
                     f"{pending.count('code')} flagged test cell(s) to review")
        for note in notes:
            self.say(note)
        return notes

    def _record_row(self, gb, exercise, row, out_dir: Path, submissions: Path,
                    roster=None) -> list[str]:
        assignment, student = exercise.assignment, row.student_id
        nb_name = Path(exercise.notebook_name).stem
        snb = _submitted_notebook(gb, assignment, nb_name, student)
        solution_comment = next((c for c in snb.comments
                                 if c.name == exercise.solution_id), None)
        changed = _previous_sha(solution_comment) != row.sha256[:16]
        own = _verified(out_dir / "work" / student / exercise.notebook_name, row.sha256)
        notes = self._record_grades(gb, snb, row, own, changed)
        when, source = submission_time(submissions, student, roster), time_source(
            submissions, student, roster)
        if solution_comment is not None:
            solution_comment.auto_comment = _comment_text(
                row, row.cells, diagnosis_lines(exercise, row)) + (
                f"\n{source}." if when is None else
                f"\nhanded in {when:%Y-%m-%d %H:%M:%S} UTC, from {source}.")
        if changed:  # a person's flag on the same notebook stands
            snb.flagged = bool(row.flagged)
        if when is not None:
            snb.assignment.timestamp = _naive_utc(when)
        gb.db.commit()
        self._late_penalty(gb, snb, assignment)
        graded = out_dir / "work" / student / "nbgrader" / "autograded" / student / assignment
        source = graded / exercise.notebook_name
        if source.is_file() or own is not None:
            dest = self.course_dir / "autograded" / student / assignment
            _sanitised_copy(source if source.is_file() else own, dest / exercise.notebook_name)
            _exchange_files(dest, when, submissions, student, roster)
        return notes

    def _record_grades(self, gb, snb, row, own: Path | None, changed: bool) -> list[str]:
        from nbgrader.api import MissingEntry

        notes = []
        written = {}
        for grade in snb.grades:
            name = grade.name
            cell = row.cells.get(name)
            if cell is None:  # a written answer, or another cell nbgrader grades by hand
                try:
                    written[name] = gb.find_source_cell(name, snb.name, row.assignment).checksum
                except MissingEntry:
                    written[name] = ""
                continue
            points = float(cell["points"])
            nb_points = cell.get("nbgrader")
            disagree = row.flagged and (nb_points is None
                                        or not math.isclose(nb_points, points, abs_tol=1e-9))
            grade.auto_score = points
            if grade.manual_score is not None:
                notes.append(f"{row.student_id} {name}: kept the manual score "
                             f"{grade.manual_score:g} given in formgrader (trusted score "
                             f"{points:g})")
                if changed:
                    grade.needs_manual_grade = True  # a new notebook since it was given
            else:
                grade.needs_manual_grade = bool(disagree)
        answered = _answered_cells(own, written)
        for grade in snb.grades:
            if grade.name not in written:
                continue
            if grade.manual_score is not None:
                notes.append(f"{row.student_id} {grade.name}: kept the manual score "
                             f"{grade.manual_score:g} given in formgrader")
                if changed:
                    grade.needs_manual_grade = True
                continue
            grade.auto_score = None if answered[grade.name] else 0.0
            grade.needs_manual_grade = answered[grade.name]
        return notes

    def _late_penalty(self, gb, snb, assignment: str) -> None:
        policy = self.policies.get(assignment)
        submission = snb.assignment
        if policy is None or submission.duedate is None or submission.timestamp is None:
            snb.late_submission_penalty = None
        else:
            gb.db.refresh(snb)
            penalty = policy.penalty(submission.total_seconds_late, snb.score, snb.max_score)
            snb.late_submission_penalty = penalty or None
        gb.db.commit()


def recorded(db_url: str, course_id: str, assignment: str) -> dict[str, dict]:
    """student -> {grade name: score} as the gradebook holds them (for checks and tests)."""
    with open_gradebook(db_url, course_id) as gb:
        return {s.student.id: {g.name: g.score for nb in s.notebooks for g in nb.grades}
                for s in gb.assignment_submissions(assignment)}

