"""The LMS's own roster: which student id each Canvas user or Moodle participant is graded as.

``course grade ... --roster FILE`` reads the file the LMS exports, as it exports it:

- **Canvas**'s gradebook export (Grades, Export, "Export Entire Gradebook"): ``Student, ID, SIS
  User ID, SIS Login ID, [Integration ID,] Section, ...`` with a ``Points Possible`` row under
  the header. ``ID`` is Canvas's user id, the id in each file of Canvas's download. The student
  id is ``SIS User ID`` by default (the institution's number for the student), or ``SIS Login
  ID`` (``--roster-column``).
- **Moodle**'s grading worksheet of the assignment (View all submissions, "Download grading
  worksheet"): ``Identifier`` ("Participant <id>", the id in each folder of Moodle's download),
  ``Full name``, ``Email address``, and ``ID number`` where the site shows it. The student id is
  ``Email address`` by default, or ``ID number``.

Only those columns can be chosen: they are the ones ``course export --canvas-gradebook`` /
``--moodle-worksheet`` match a student back by, so every mapped student finds their row in the
same file again. The cells are the LMS's data: a cell that is not a valid student id
(``lms.STUDENT_ID``), or empty, gives that student a row saying so, never an id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from autograder.store.lms import STUDENT_ID
from autograder.store.lms_export import LmsFileError, read_lms_csv

__all__ = ["COLUMNS", "Roster", "RosterError", "read_roster"]

# per LMS: the columns a student id may come from, the default first
COLUMNS = {"canvas": ("SIS User ID", "SIS Login ID"), "moodle": ("Email address", "ID number")}
_LMS = {"canvas": "Canvas user", "moodle": "Moodle participant"}
_PARTICIPANT = re.compile(r"Participant (?P<id>\d{1,20})")


class RosterError(LmsFileError):
    """The roster is not an export this module knows, or the column asked for is not in it."""


@dataclass(frozen=True)
class Roster:
    """LMS id -> the chosen column's cell, for the one LMS whose export it is."""

    path: Path
    lms: str  # "canvas" or "moodle"
    column: str
    cells: dict[str, str] = field(default_factory=dict)

    def student_of(self, channel: str, lms_id: str) -> tuple[str | None, str]:
        """(the student id, "") for an entry of ``channel``, or (None, why there is none)."""
        who = f"{_LMS.get(channel, channel)} {lms_id}"
        if channel != self.lms:
            return None, (f"{who}: the roster {self.path.name} is {self.lms.title()}'s export, "
                          f"not {channel.title()}'s: pass that LMS's own file to --roster")
        if lms_id not in self.cells:
            return None, (f"{who} is not in the roster {self.path.name}: export it again from "
                          f"{self.lms.title()} (the student may have joined since), or grade "
                          "without --roster")
        cell = self.cells[lms_id].strip()
        if not STUDENT_ID.fullmatch(cell):
            return None, (f"{who} has {self.column} {cell[:60]!r} in the roster "
                          f"{self.path.name}, which is not a valid student id: fill it in the "
                          "LMS, or choose another --roster-column")
        return cell, ""

    def says(self, channel: str, lms_id: str, student: str) -> str:
        """What the row says of the mapping."""
        return f"{_LMS[channel]} {lms_id} is {self.column} {student}"


def _lms_of(header: list[str], path: Path) -> str:
    if "Identifier" in header:
        return "moodle"
    if "Student" in header and "ID" in header:
        return "canvas"
    raise RosterError(f"{path}: neither Canvas's gradebook export (Student, ID, SIS User ID, "
                      "...: Grades, Export, Export Entire Gradebook) nor Moodle's grading "
                      "worksheet (Identifier, Full name, Email address, ...: View all "
                      "submissions, Download grading worksheet)")


def read_roster(path: Path, column: str | None = None) -> Roster:
    """The roster in ``path`` (Canvas's gradebook export or Moodle's grading worksheet), its
    student ids from ``column`` (default: the LMS's first of :data:`COLUMNS`)."""
    path = Path(path)
    rows = read_lms_csv(path)
    header = [h.strip() for h in rows[0]]
    lms = _lms_of(header, path)
    column = column or COLUMNS[lms][0]
    if column not in COLUMNS[lms]:
        raise RosterError(f"--roster-column {column!r}: a {lms.title()} roster gives the "
                          f"student id from {' or '.join(COLUMNS[lms])} (the columns `course "
                          "export` matches students back by)")
    if column not in header:
        raise RosterError(f"{path} has no {column!r} column (its columns: "
                          f"{', '.join(header[:12])}): choose another --roster-column, or "
                          "export the file with it (Moodle: the site's identity fields)")
    key, value = header.index("ID" if lms == "canvas" else "Identifier"), header.index(column)
    cells = {}
    for row in rows[1:]:
        if max(key, value) >= len(row):
            continue
        lms_id = row[key].strip()
        if lms == "moodle":
            match = _PARTICIPANT.fullmatch(lms_id)
            lms_id = match["id"] if match else ""
        if lms_id.isascii() and lms_id.isdigit():  # not Canvas's "Points Possible" row
            cells[lms_id] = row[value]
    return Roster(path, lms, column, cells)
