"""The results store of ``course grade``: results.jsonl (a line per graded student), grades.csv.

Only the grading process writes here. results.jsonl is appended one flushed line per finished
student, so an interrupted run resumes from it; grades.csv is rewritten from it (the latest row
per student and assignment), with text that a spreadsheet would run as a formula quoted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from course.spreadsheet import write_csv

__all__ = ["GradeRow", "CSV_COLUMNS", "ERROR", "GRADED", "GRADER_ERROR", "RESULTS",
           "read_results", "record", "write_grades_csv"]

CSV_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "reason",
               "nbgrader_score", "flagged"]
RESULTS = "results.jsonl"
GRADED = "graded"  # scored
ERROR = "error"  # the submission could not be scored (no notebook, not a notebook): the reason
GRADER_ERROR = "grader-error"  # the grader failed: not the student's score; rerun after a fix


@dataclass
class GradeRow:
    """One line of grades.csv, plus what results.jsonl keeps for resuming and feedback."""

    student_id: str
    assignment: str
    score: float
    max_score: float
    status: str  # GRADED, ERROR (the submission's fault) or GRADER_ERROR (the grader's)
    reason: str = ""
    nbgrader_score: float | None = None
    flagged: bool = False
    sha256: str = ""
    seconds: float = 0.0
    cells: dict = field(default_factory=dict)  # grade_id -> trusted and nbgrader details
    diagnoses: list = field(default_factory=list)  # the known mistakes found (Mistake.name)
    resumed: bool = False  # taken from results.jsonl instead of graded in this run

    @classmethod
    def unscored(cls, student_id: str, exercise, reason: str, sha256: str = "",
                 status: str = ERROR) -> GradeRow:
        """The row of a student who got no score, and why (``exercise``: a GradedExercise)."""
        return cls(student_id, exercise.assignment, 0.0, exercise.max_score, status, reason,
                   sha256=sha256)

    def csv_row(self) -> list:
        """grades.csv's cells; a grader-error row has no score (never a 0 an LMS would import)."""
        row = [getattr(self, name) for name in CSV_COLUMNS]
        if self.status == GRADER_ERROR:
            row[CSV_COLUMNS.index("score")] = None
        return row


def read_results(out_dir: Path) -> list[GradeRow]:
    """The rows of out_dir/results.jsonl, in the order they were recorded (bad lines skipped)."""
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return []
    names = {f.name for f in fields(GradeRow)}
    rows = []
    for line in path.read_bytes().split(b"\n"):
        try:
            data = json.loads(line.decode("utf-8"))
            rows.append(GradeRow(**{k: v for k, v in data.items() if k in names}))
        except (ValueError, TypeError, AttributeError, RecursionError):
            continue  # a line cut short by an interruption
    return rows


def record(out_dir: Path, row: GradeRow) -> None:
    """Append ``row`` to results.jsonl, on disk before this returns.

    A line cut short by an earlier crash is ended first, so it stays one bad line (skipped by
    ``read_results``) and never swallows this row.
    """
    row_dict = asdict(row)
    row_dict.pop("resumed")
    line = json.dumps(row_dict, ensure_ascii=True).encode("ascii") + b"\n"
    with (Path(out_dir) / RESULTS).open("a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_grades_csv(out_dir: Path) -> Path:
    """Rewrite out_dir/grades.csv from results.jsonl: the latest row per student and assignment."""
    latest = {(r.assignment, r.student_id): r for r in read_results(out_dir)}
    return write_csv(Path(out_dir) / "grades.csv", CSV_COLUMNS,
                     [latest[key].csv_row() for key in sorted(latest)])
