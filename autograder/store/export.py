"""``course export``: the gradebook in the formats an LMS imports.

Everything is read from nbgrader's gradebook (the system of record: trusted scores, manual
scores from formgrader, late penalties), never from grades.csv. Three formats:

- ``canvas.csv``: Canvas's gradebook import: ``Student, ID, SIS User ID, SIS Login ID,
  Section``, then one column per assignment holding the score after the late penalty, and
  ``Notes`` saying what was taken off and what is still ungraded (the SIS User ID and SIS
  Login ID hold the student id; a new assignment column becomes a new Canvas assignment);
- ``grades_wide.csv``: one row per student, per assignment the total, the late penalty, the
  time handed in and the number of answers still ungraded, then one column per graded cell
  (``<assignment>/<grade_id>``: test cells and written answers); the first row, student
  ``max_score``, holds the maxima;
- ``gradescope/<assignment>/<student>/results.json``: Gradescope's autograder results, one
  test per graded cell with ``name``, ``score``, ``max_score``, ``status`` and ``visibility``.
  A cell that holds hidden tests shows only passed or failed (its checks' messages could
  reveal the hidden inputs); the late penalty is in ``output`` and taken off ``score``.

A written answer nobody has graded yet counts 0 and is named in every format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from autograder.store.gradebook import COMMENT_HEADER, DIAGNOSIS_PREFIX, open_gradebook
from course.spreadsheet import write_csv

__all__ = ["CellResult", "StudentResult", "read_gradebook", "write_canvas", "write_wide",
           "write_gradescope", "CANVAS_COLUMNS"]

CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
_MESSAGE = re.compile(r"^- (?P<gid>[\w.-]+): \S+(?: \(nbgrader [^)]*\))?(?:: (?P<msg>.*))?$")
_DIAGNOSIS = re.compile(rf"^{DIAGNOSIS_PREFIX}(?P<name>\w+): (?P<text>.*)$")


@dataclass
class CellResult:
    """One graded cell of one student."""

    name: str
    score: float
    max_score: float
    written: bool  # a manually graded answer, not a test cell
    ungraded: bool  # still needs a person (a written answer, or a cell flagged for review)
    hidden: bool  # the cell holds hidden tests
    message: str = ""


@dataclass
class StudentResult:
    """One student's record of one assignment."""

    student: str
    assignment: str
    name: str  # "Last, First" when the gradebook knows it, else the id
    lms_id: str
    timestamp: str  # ISO 8601 UTC, "" when unknown
    seconds_late: float
    late_penalty: float
    flagged: bool
    cells: list[CellResult] = field(default_factory=list)
    diagnoses: dict[str, str] = field(default_factory=dict)  # known mistake -> its text

    @property
    def raw_score(self) -> float:
        return round(sum(c.score for c in self.cells), 6)

    @property
    def max_score(self) -> float:
        return round(sum(c.max_score for c in self.cells), 6)

    @property
    def score(self) -> float:
        """After the late penalty, never below 0."""
        return round(max(0.0, self.raw_score - self.late_penalty), 6)

    @property
    def ungraded(self) -> list[str]:
        return [c.name for c in self.cells if c.ungraded]

    def notes(self) -> str:
        parts = []
        if self.late_penalty:
            parts.append(f"late by {self.seconds_late / 3600:.1f} h: -{self.late_penalty:g} "
                         f"points (score before the penalty {self.raw_score:g})")
        written = [c.name for c in self.cells if c.ungraded and c.written]
        review = [c.name for c in self.cells if c.ungraded and not c.written]
        if written:
            parts.append(f"not graded yet (counted 0): {', '.join(written)}")
        if review:
            parts.append(f"to review (flagged): {', '.join(review)}")
        return "; ".join(parts)


def _cell_order(notebook: Path) -> dict[str, bool]:
    """grade_id -> whether the cell holds hidden tests, in the source notebook's order."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    order = {}
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            source = "".join(cell.get("source", ""))
            order[meta.get("grade_id")] = "### BEGIN HIDDEN TESTS" in source
    return order


def _trusted_comment(notebook) -> list[str]:
    """The lines of the comment ``course grade`` wrote on the notebook ([] if none)."""
    for comment in notebook.comments:
        if (comment.auto_comment or "").startswith(COMMENT_HEADER):
            return comment.auto_comment.splitlines()
    return []


def _diagnoses(notebook) -> dict[str, str]:
    """The known mistakes the trusted checks found: name -> what the student is told."""
    found = (_DIAGNOSIS.match(line) for line in _trusted_comment(notebook))
    return {m["name"]: m["text"] for m in found if m}


def _messages(notebook) -> dict[str, str]:
    found = (_MESSAGE.match(line) for line in _trusted_comment(notebook))
    return {m["gid"]: m["msg"] or "" for m in found if m}


def _student(submission, order: dict[str, bool]) -> StudentResult:
    person = submission.student
    name = ", ".join(filter(None, (person.last_name, person.first_name))) or person.id
    penalty = sum(nb.late_submission_penalty or 0.0 for nb in submission.notebooks)
    result = StudentResult(
        person.id, submission.assignment.name, name, person.lms_user_id or "",
        submission.timestamp.isoformat() + "Z" if submission.timestamp else "",
        submission.total_seconds_late, round(penalty, 6),
        any(nb.flagged for nb in submission.notebooks))
    position = {gid: i for i, gid in enumerate(order)}
    for notebook in submission.notebooks:
        messages = _messages(notebook)
        result.diagnoses.update(_diagnoses(notebook))
        for grade in sorted(notebook.grades, key=lambda g: position.get(g.name, len(order))):
            result.cells.append(CellResult(
                grade.name, float(grade.score), float(grade.max_score),
                written=grade.cell.cell_type == "markdown", ungraded=grade.needs_manual_grade,
                hidden=order.get(grade.name, True), message=messages.get(grade.name, "")))
    return result


def read_gradebook(db_url: str, course_id: str, notebooks: dict[str, Path]) -> list[StudentResult]:
    """Every recorded submission of the assignments in ``notebooks`` (assignment -> its source
    notebook), sorted by assignment and student."""
    from nbgrader.api import MissingEntry

    results = []
    with open_gradebook(db_url, course_id) as gb:
        for assignment, notebook in notebooks.items():
            try:
                gb.find_assignment(assignment)
            except MissingEntry:
                continue
            order = _cell_order(notebook)
            results += [_student(s, order) for s in gb.assignment_submissions(assignment)]
    return sorted(results, key=lambda r: (r.assignment, r.student))


def write_canvas(results: list[StudentResult], path: Path) -> Path:
    """Canvas's gradebook import CSV: one row per student, one column per assignment."""
    assignments = sorted({r.assignment for r in results})
    by_student: dict[str, dict[str, StudentResult]] = {}
    for r in results:
        by_student.setdefault(r.student, {})[r.assignment] = r
    rows = []
    for student, records in sorted(by_student.items()):
        first = next(iter(records.values()))
        notes = "; ".join(f"{a}: {records[a].notes()}" for a in assignments
                          if a in records and records[a].notes())
        rows.append([first.name, first.lms_id, student, student, "",
                     *(records[a].score if a in records else "" for a in assignments), notes])
    return write_csv(path, [*CANVAS_COLUMNS, *assignments, "Notes"], rows)


def write_wide(results: list[StudentResult], path: Path) -> Path:
    """One row per student; per assignment its totals, then one column per graded cell."""
    cells: dict[str, list[CellResult]] = {}
    for r in results:
        cells.setdefault(r.assignment, r.cells)
    header, maxima = ["student_id"], ["max_score"]
    for a, cs in sorted(cells.items()):
        header += [a, f"{a} late_penalty", f"{a} submitted", f"{a} ungraded",
                   *(f"{a}/{c.name}" for c in cs)]
        maxima += [sum(c.max_score for c in cs), "", "", "", *(c.max_score for c in cs)]
    by_student: dict[str, dict[str, StudentResult]] = {}
    for r in results:
        by_student.setdefault(r.student, {})[r.assignment] = r
    rows = [maxima]
    for student, records in sorted(by_student.items()):
        row = [student]
        for a, cs in sorted(cells.items()):
            r = records.get(a)
            if r is None:
                row += [""] * (4 + len(cs))
                continue
            score = {c.name: c.score for c in r.cells}
            row += [r.score, r.late_penalty, r.timestamp, len(r.ungraded),
                    *(score.get(c.name, "") for c in cs)]
        rows.append(row)
    return write_csv(path, header, rows)


def gradescope_results(result: StudentResult) -> dict:
    """One student's results.json, as Gradescope's autograder specification describes it."""
    tests = []
    for cell in result.cells:
        if cell.written and cell.ungraded:
            continue  # named in the output instead: a person has not graded it yet
        passed = cell.score >= cell.max_score
        status = "passed" if passed else "failed"
        tests.append({"name": cell.name, "score": cell.score, "max_score": cell.max_score,
                      "status": status, "visibility": "visible",
                      "output": status if cell.hidden or not cell.message else cell.message})
    output = [f"What your code does: {text}" for text in result.diagnoses.values()]
    output.append(f"{result.assignment}: {result.score:g}/{result.max_score:g}")
    if result.notes():
        output.append(result.notes())
    return {"score": result.score, "output": "\n".join(output), "visibility": "visible",
            "tests": tests,
            "extra_data": {"late_penalty": result.late_penalty, "submitted": result.timestamp,
                           "diagnoses": list(result.diagnoses)}}


def write_gradescope(results: list[StudentResult], folder: Path) -> list[Path]:
    """folder/<assignment>/<student>/results.json for every student."""
    written = []
    for result in results:
        path = Path(folder) / result.assignment / result.student / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gradescope_results(result), indent=1), encoding="utf-8")
        written.append(path)
    return written
