"""The gradebook back into the LMS, in the file the LMS itself exported.

- **Canvas**: the instructor exports the course's gradebook (Grades → Export → "Export Entire
  Gradebook"): a CSV whose columns are ``Student, ID, SIS User ID, SIS Login ID, [Integration
  ID,] Section``, one column per assignment named ``<name> (<assignment id>)``, then Canvas's
  computed scores; its second row (``Points Possible``) holds each assignment's points. Canvas
  imports the same file back (Grades → Import). :func:`fill_canvas` writes that file again with
  the assignment's column (found by its name, and its id in the header) holding each student's
  score after the late penalty; every other cell stays as Canvas wrote it. A student is matched
  by Canvas's ``ID`` (the user id: the student id of a graded Canvas download), else by ``SIS
  User ID`` or ``SIS Login ID``.
- **Moodle**: the assignment's grading worksheet (View all submissions → "Download grading
  worksheet", with "Offline grading worksheet" on): ``Identifier`` ("Participant <id>"), ``Full
  name``, ..., ``Grade``, ``Maximum Grade``, ..., ``Feedback comments``. :func:`fill_moodle`
  fills ``Grade`` (and the comments with what was taken off) for each participant graded,
  matched by the participant id (the student id of a graded Moodle download), else by ``Email
  address`` or ``ID number`` (the student ids ``course grade --roster`` maps to); Moodle
  uploads the same file back ("Upload grading worksheet").

Every cell is written through ``course.spreadsheet`` (no text a spreadsheet would run as a
formula: a student's name in the LMS is theirs), with mode 0600.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from course.spreadsheet import write_csv

__all__ = ["LmsFileError", "fill_canvas", "fill_moodle", "read_lms_csv"]

_CANVAS_ID_COLUMNS = ("ID", "SIS User ID", "SIS Login ID")
_MOODLE_ID_COLUMNS = ("Email address", "ID number")  # the student ids of roster.COLUMNS
_ASSIGNMENT_COLUMN = re.compile(r"(?P<name>.+?)\s*\((?P<id>\d+)\)")
_PARTICIPANT = re.compile(r"Participant (?P<id>\d+)")
_MAX_BYTES = 50 * 2**20


class LmsFileError(ValueError):
    """The LMS's file is not the layout this module knows: says what was expected."""


def read_lms_csv(path: Path) -> list[list[str]]:
    path = Path(path)
    if not path.is_file() or path.stat().st_size > _MAX_BYTES:
        raise LmsFileError(f"{path}: not a file of at most {_MAX_BYTES // 2**20} MB")
    with path.open(newline="", encoding="utf-8-sig") as f:  # Canvas and Moodle write a BOM
        rows = list(csv.reader(f))
    if not rows:
        raise LmsFileError(f"{path} is empty")
    return rows


def _write(path: Path, rows: list[list[str]]) -> Path:
    return write_csv(path, rows[0], rows[1:])


def fill_canvas(results, assignment: str, gradebook: Path, out: Path) -> tuple[Path, list[str]]:
    """Canvas's exported gradebook with ``assignment``'s column filled; (file, students of
    ``results`` not found in it)."""
    rows = read_lms_csv(gradebook)
    header = rows[0]
    missing = [c for c in ("Student", *_CANVAS_ID_COLUMNS[:1]) if c not in header]
    if missing:
        raise LmsFileError(f"{gradebook}: no {', '.join(missing)} column: export the gradebook "
                           "from Canvas (Grades, Export, Export Entire Gradebook)")
    columns = [i for i, h in enumerate(header)
               if (m := _ASSIGNMENT_COLUMN.fullmatch(h.strip())) and m["name"] == assignment]
    if len(columns) != 1:
        named = [h for h in header if _ASSIGNMENT_COLUMN.fullmatch(h.strip())]
        raise LmsFileError(f"{gradebook}: {len(columns)} assignment columns named {assignment!r}"
                           f" (need one; Canvas's are: {', '.join(named[:10]) or 'none'}): "
                           "create the assignment in Canvas with the chapter's name")
    column = columns[0]
    keys = [header.index(c) for c in _CANVAS_ID_COLUMNS if c in header]
    mine = {r.student: r for r in results if r.assignment == assignment}
    found = set()
    for row in rows[1:]:
        student = next((row[k] for k in keys if k < len(row) and row[k] in mine), None)
        if student is None:
            continue  # "Points Possible", a student not graded, the test student
        row += [""] * (len(header) - len(row))
        row[column] = f"{mine[student].score:g}"
        found.add(student)
    return _write(out, rows), sorted(set(mine) - found)


def fill_moodle(results, assignment: str, worksheet: Path, out: Path) -> tuple[Path, list[str]]:
    """Moodle's grading worksheet with Grade (and Feedback comments) filled; (file, students
    of ``results`` not found in it)."""
    rows = read_lms_csv(worksheet)
    header = rows[0]
    missing = [c for c in ("Identifier", "Grade") if c not in header]
    if missing:
        raise LmsFileError(f"{worksheet}: no {', '.join(missing)} column: download the grading "
                           "worksheet from the assignment (View all submissions, Grading "
                           "action, Download grading worksheet)")
    ident, grade = header.index("Identifier"), header.index("Grade")
    comments = header.index("Feedback comments") if "Feedback comments" in header else None
    keys = [header.index(c) for c in _MOODLE_ID_COLUMNS if c in header]
    mine = {r.student: r for r in results if r.assignment == assignment}
    found = set()
    for row in rows[1:]:
        match = _PARTICIPANT.fullmatch(row[ident].strip()) if ident < len(row) else None
        if match is None:
            continue
        student = next((s for s in [match["id"]] + [row[k].strip() for k in keys
                                                   if k < len(row)] if s in mine), None)
        if student is None:
            continue
        result = mine[student]
        row += [""] * (len(header) - len(row))
        row[grade] = f"{result.score:g}"
        if comments is not None and result.notes():
            row[comments] = result.notes()
        found.add(student)
    return _write(out, rows), sorted(set(mine) - found)
