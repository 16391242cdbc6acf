"""Grade a class: every student's notebook, in parallel, isolated, resumable (``course grade``).

For each student (``workers`` at a time) in a private folder out_dir/work/<student>/:

1. the trusted check (:func:`course.grading.trusted.trusted_grade`) runs the student's solution
   cells in the sandbox on inputs the grader chooses and scores them here: this is the score;
2. ``nbgrader autograde`` + ``generate_feedback`` run in the sandbox on a scratch course folder
   that holds only the notebook, the configuration and a copy of the assignment's gradebook
   (no source/, no other student): their per-cell scores go into the feedback and, when they
   disagree with the trusted ones, flag the row.

This process is the only writer of out_dir/results.jsonl (one JSON line per finished student,
flushed at once) and out_dir/grades.csv (rewritten from it). A student whose notebook hash is
already in results.jsonl is not graded again, so an interrupted run resumes where it stopped.
A broken submission gets a row with its reason; it never stops the others.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from course.grading.submissions import Submission, collect

__all__ = ["GradeRow", "CSV_COLUMNS", "IsolationUnavailable", "grade", "read_results",
           "write_grades_csv"]

CSV_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "reason",
               "nbgrader_score", "flagged"]
RESULTS = "results.jsonl"
MAX_FEEDBACK_BYTES = 50 * 2**20
# Address space of each process of the nbgrader step (RLIMIT_AS): a kernel that has imported
# torch, scikit-learn and matplotlib maps several GB without using them; 4 GB is too little.
NBGRADER_MEMORY_MB = 12288


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot isolate here; grading continues only with isolate=False."""


@dataclass
class GradeRow:
    """One line of grades.csv, plus what results.jsonl keeps for resuming and feedback."""

    student_id: str
    assignment: str
    score: float
    max_score: float
    status: str  # "graded", or "error" when no score could be given
    reason: str = ""
    nbgrader_score: float | None = None
    flagged: bool = False
    sha256: str = ""
    seconds: float = 0.0
    cells: dict = field(default_factory=dict)  # grade_id -> trusted and nbgrader details
    resumed: bool = False  # taken from results.jsonl instead of graded in this run

    def csv_row(self) -> list:
        return [_csv_safe(getattr(self, name)) for name in CSV_COLUMNS]


def _csv_safe(value):
    """Spreadsheets run cells starting with = + - @ as formulas: quote such text."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def read_results(out_dir: Path) -> list[GradeRow]:
    """The rows of out_dir/results.jsonl, in the order they were recorded (bad lines skipped)."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return []
    names = {f.name for f in fields(GradeRow)}
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            rows.append(GradeRow(**{k: v for k, v in data.items() if k in names}))
        except (ValueError, TypeError):
            continue  # a line cut short by an interruption
    return rows


def write_grades_csv(out_dir: Path) -> Path:
    """Rewrite out_dir/grades.csv from results.jsonl: the latest row per student and assignment."""
    latest = {(r.assignment, r.student_id): r for r in read_results(out_dir)}
    path = Path(out_dir) / "grades.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for key in sorted(latest):
            writer.writerow(latest[key].csv_row())
    tmp.replace(path)
    return path


@dataclass
class _Context:
    assignment: str
    notebook_name: str
    template: Path
    out_dir: Path
    isolate: bool
    timeout: float
    max_score: float


def grade(assignment: str, submissions: Path, out_dir: Path, *, root: Path | None = None,
          workers: int | None = None, isolate: bool = True, timeout: float = 600,
          cell_timeout: int | None = None,
          on_row: Callable[[GradeRow, int, int], None] | None = None) -> list[GradeRow]:
    """Grade every submission of ``assignment`` in ``submissions``; rows sorted by student.

    ``timeout`` is the wall-clock limit in seconds for each sandboxed step of one student.
    ``cell_timeout`` is nbgrader's limit for one cell (default: ``Execute.timeout`` of
    autograder/nbgrader_config.py): a cell that runs longer is interrupted and fails, and the
    rest of the notebook is still graded. Keep it below ``timeout``, which discards nbgrader's
    whole report. ``on_row(row, done, total)`` is called as each student finishes. Raises
    IsolationUnavailable when ``isolate`` and the sandbox cannot isolate on this machine.
    """
    from course.grading.release import prepare_course
    from course.grading.trusted import GRADED
    from course.notebooks import find_root

    if assignment not in GRADED:
        raise ValueError(f"{assignment} has no graded exercises; graded: {', '.join(GRADED)}")
    if not timeout > 0 or (cell_timeout is not None and not 0 < cell_timeout < timeout):
        raise ValueError(f"need 0 < cell timeout < timeout, got cell timeout {cell_timeout} "
                         f"and timeout {timeout} (seconds)")
    if isolate:
        from course.grading.sandbox import isolation_available

        ok, why = isolation_available()
        if not ok:
            raise IsolationUnavailable(why)
    root = find_root(Path(root) if root else None)
    out_dir = Path(out_dir).resolve()
    work = out_dir / "work"
    template = work / "_template"
    if template.exists():
        shutil.rmtree(template)
    prepare_course(root, [assignment], template)
    if cell_timeout is not None:
        with (template / "nbgrader_config.py").open("a", encoding="utf-8") as f:
            f.write(f"\n# course grade --cell-timeout\nc.Execute.timeout = {int(cell_timeout)}\n")
    notebooks = sorted(p.name for p in (template / "release" / assignment).glob("*.ipynb"))
    if len(notebooks) != 1:
        raise ValueError(f"{assignment} should hold one notebook, not {notebooks}")
    ctx = _Context(assignment, notebooks[0], template, out_dir, isolate, timeout,
                   _max_score(template, assignment))

    subs = collect(Path(submissions), assignment, work / "_unpacked")
    done = {(r.student_id, r.sha256): r for r in read_results(out_dir)
            if r.assignment == assignment and r.status == "graded"}
    rows: list[GradeRow] = []
    todo: list[tuple[Submission, str]] = []
    for sub in subs:
        sha = sub.sha256
        if (sub.student_id, sha) in done:
            rows.append(GradeRow(**{**asdict(done[sub.student_id, sha]), "resumed": True}))
        else:
            todo.append((sub, sha))
    total = len(subs)
    for done_count, row in enumerate(rows, 1):
        if on_row:
            on_row(row, done_count, total)
    pool = ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1))
    try:
        futures = [pool.submit(_grade_one, sub, sha, ctx) for sub, sha in todo]
        for future in as_completed(futures):
            row = future.result()  # _grade_one never raises
            _record(out_dir, row)
            rows.append(row)
            if on_row:
                on_row(row, len(rows), total)
    finally:  # on Ctrl-C: start no other student; what is recorded stays recorded
        pool.shutdown(wait=True, cancel_futures=True)
        write_grades_csv(out_dir)
    return sorted(rows, key=lambda r: r.student_id)


def _max_score(template: Path, assignment: str) -> float:
    from nbgrader.api import Gradebook

    from course.grading.release import nbgrader_api

    course_id = nbgrader_api(template).coursedir.course_id
    with Gradebook(f"sqlite:///{template / 'gradebook.db'}", course_id) as gb:
        return float(gb.find_assignment(assignment).max_score)


def _record(out_dir: Path, row: GradeRow) -> None:
    row_dict = asdict(row)
    row_dict.pop("resumed")
    with (out_dir / RESULTS).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row_dict) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _grade_one(sub: Submission, sha: str, ctx: _Context) -> GradeRow:
    """Grade one student; every failure becomes the row's reason."""
    start = time.perf_counter()
    row = GradeRow(sub.student_id, ctx.assignment, 0.0, ctx.max_score, "error", sub.reason,
                   sha256=sha)
    if sub.notebook is not None:
        try:
            _grade_notebook(sub, ctx, row)
        except Exception as err:  # a bug here must not stop the class: record it
            row.status, row.reason = "error", f"internal error: {type(err).__name__}: {err}"
    row.reason = row.reason[:500]
    row.seconds = round(time.perf_counter() - start, 2)
    return row


def _grade_notebook(sub: Submission, ctx: _Context, row: GradeRow) -> None:
    import nbformat

    from course.grading.trusted import trusted_grade

    work = ctx.out_dir / "work" / sub.student_id
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    notebook = work / ctx.notebook_name
    shutil.copyfile(sub.notebook, notebook)
    try:
        nbformat.read(notebook, as_version=4)
    except Exception as err:  # invalid JSON, not a notebook, undecodable bytes
        row.reason = f"invalid notebook: {type(err).__name__}: {str(err)[:200]}"
        return

    trusted = trusted_grade(ctx.assignment, notebook, work, timeout=ctx.timeout,
                            isolate=ctx.isolate)  # runs in work/trusted/
    shutil.rmtree(work / "trusted", ignore_errors=True)  # its inputs and outputs: ~40 MB
    nbgrader_scores, problem = _run_nbgrader(sub.student_id, notebook, work / "nbgrader", ctx)

    row.status = "graded"
    row.score = round(sum(c.points for c in trusted.values()), 6)
    row.max_score = round(sum(c.max_points for c in trusted.values()), 6)
    if not math.isclose(row.max_score, ctx.max_score):
        raise RuntimeError(f"trusted checks total {row.max_score} points, the gradebook "
                           f"{ctx.max_score}: the graded cells of {ctx.assignment} changed")
    row.cells = {gid: {"points": c.points, "max_points": c.max_points, "passed": c.passed,
                       "message": c.message, "nbgrader": nbgrader_scores.get(gid)}
                 for gid, c in sorted(trusted.items())}
    failed = [f"{gid} ({c.message[:80]})" if c.message else gid
              for gid, c in sorted(trusted.items()) if not c.passed]
    row.reason = "; ".join(filter(None, [f"nbgrader: {problem}" if problem else "",
                                         "failed " + ", ".join(failed) if failed else ""]))
    if problem:
        row.flagged = True
    else:
        row.nbgrader_score = round(sum(nbgrader_scores.values()), 6)
        row.flagged = (set(nbgrader_scores) != set(trusted) or any(
            not math.isclose(nbgrader_scores[gid], c.points, abs_tol=1e-9)
            for gid, c in trusted.items() if gid in nbgrader_scores))
        _copy_feedback(work / "nbgrader", row, ctx)


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


def _run_nbgrader(student: str, notebook: Path, folder: Path,
                  ctx: _Context) -> tuple[dict[str, float], str]:
    """nbgrader's per-cell scores for the notebook, or ({}, why they are missing)."""
    from course.grading.nbgrader_worker import RESULT
    from course.grading.sandbox import run_sandboxed

    folder.mkdir()
    shutil.copyfile(ctx.template / "nbgrader_config.py", folder / "nbgrader_config.py")
    shutil.copyfile(ctx.template / "gradebook.db", folder / "gradebook.db")
    # autograde copies the assignment's other files (data, helpers) from source/ next to the
    # notebook; they are the released ones, never the instructor's notebook
    shutil.copytree(ctx.template / "release" / ctx.assignment, folder / "source" / ctx.assignment,
                    ignore=shutil.ignore_patterns("*.ipynb"))
    submitted = folder / "submitted" / student / ctx.assignment
    submitted.mkdir(parents=True)
    shutil.copyfile(notebook, submitted / ctx.notebook_name)
    result = run_sandboxed(
        [sys.executable, "-P", "-m", "course.grading.nbgrader_worker", ctx.assignment, student],
        workdir=folder, timeout=ctx.timeout, env=_sandbox_env(folder), isolate=ctx.isolate,
        memory_mb=NBGRADER_MEMORY_MB, readable=[p for p in ("/etc/fonts",) if Path(p).is_dir()])
    if result.timed_out:
        return {}, f"timed out after {ctx.timeout:g} s"
    try:
        out = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = (result.reason or _tail(result.stderr) or f"exit status {result.returncode}")
        return {}, f"no result ({tail})"
    return _parse_scores(out)


def _tail(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _parse_scores(out) -> tuple[dict[str, float], str]:
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


def _copy_feedback(folder: Path, row: GradeRow, ctx: _Context) -> None:
    """Copy nbgrader's feedback HTML to out_dir/feedback/<student>/<assignment>/, sanitised,
    with the recorded (trusted) score on top: nbgrader's numbers below are its own."""
    from course.grading.sandbox import sanitize_feedback_html

    source = folder / "feedback" / row.student_id / ctx.assignment
    dest = ctx.out_dir / "feedback" / row.student_id / ctx.assignment
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for page in sorted(source.glob("*.html")) if source.is_dir() else []:
        if page.is_file() and not page.is_symlink() and page.stat().st_size <= MAX_FEEDBACK_BYTES:
            shutil.copyfile(page, dest / page.name)
            sanitize_feedback_html(dest / page.name)
            _add_banner(dest / page.name, row)


def _add_banner(page: Path, row: GradeRow) -> None:
    """Put the recorded score and each test cell's result at the top of a feedback page."""
    items = "".join(
        f"<li>{html.escape(gid)}: {c['points']:g} / {c['max_points']:g}"
        f"{'' if c['passed'] else ' — ' + html.escape(c['message'][:300])}</li>"
        for gid, c in row.cells.items())
    banner = (f'<div style="border:2px solid #444;padding:0.5em 1em;margin:1em">'
              f"<b>Recorded score: {row.score:g} / {row.max_score:g}</b> (checked by running "
              f"your solution cell on the grader's own inputs)<ul>{items}</ul></div>")
    text = page.read_text(encoding="utf-8")
    start = text.find("<body")
    end = text.find(">", start) + 1 if start >= 0 else 0
    page.write_text(text[:end] + banner + text[end:], encoding="utf-8")
