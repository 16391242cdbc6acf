"""The gradebook back into Canvas and Moodle in the files they exported (issue 30), built from
the layouts the LMSs document: Canvas's gradebook export (Student, ID, SIS User ID, SIS Login
ID, Section, "<name> (<id>)" columns, a Points Possible row) and Moodle's grading worksheet
(Identifier "Participant <id>", Grade, Feedback comments)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from autograder.store.lms_export import LmsFileError, fill_canvas, fill_moodle

CANVAS = [
    ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "01_metrics (4501)",
     "04_learning_rate (4502)", "Current Score"],
    ["    Points Possible", "", "", "", "", "8", "10", "(read only)"],
    ["Smith, Bob", "340934", "s1001", "bob@uni.edu", "A", "", "7", "70"],
    ["Jones, Ann", "334244", "s1002", "ann@uni.edu", "A", "3", "", "30"],
    ["=HYPERLINK(1)", "999", "s1003", "eve@uni.edu", "A", "", "", ""],
    ["Student, Test", "1", "", "", "A", "", "", ""],
]
MOODLE = [
    ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
     "Grade can be changed", "Last modified (submission)", "Feedback comments"],
    ["Participant 123456", "Ann Lee", "ann@uni.edu", "Submitted", "", "8.00", "Yes", "", ""],
    ["Participant 654321", "Bo Park", "bo@uni.edu", "No submission", "", "8.00", "Yes", "", ""],
]


def _result(student, score, notes=""):
    return SimpleNamespace(student=student, assignment="01_metrics", score=score,
                           notes=lambda: notes)


def _write(path, rows):
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows(rows)
    return path


def _read(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_canvas_gets_its_own_file_back_with_the_assignment_column_filled(tmp_path):
    exported = _write(tmp_path / "export.csv", CANVAS)
    results = [_result("340934", 6.4), _result("s1002", 5.0), _result("nobody", 1.0)]
    out, missing = fill_canvas(results, "01_metrics", exported, tmp_path / "canvas_import.csv")
    rows = _read(out)
    assert rows[0] == CANVAS[0] and rows[1] == CANVAS[1]  # header and Points Possible kept
    column = CANVAS[0].index("01_metrics (4501)")
    assert [r[column] for r in rows[2:]] == ["6.4", "5", "", ""]  # by ID, then by SIS User ID
    assert rows[2][CANVAS[0].index("04_learning_rate (4502)")] == "7"  # the rest untouched
    assert rows[4][0] == "'=HYPERLINK(1)"  # no formula, even from the LMS
    assert missing == ["nobody"]


def test_canvas_without_the_assignment_says_what_to_do(tmp_path):
    exported = _write(tmp_path / "export.csv", [[c for c in CANVAS[0] if "01_" not in c]])
    with pytest.raises(LmsFileError, match="create the assignment in Canvas"):
        fill_canvas([], "01_metrics", exported, tmp_path / "out.csv")
    with pytest.raises(LmsFileError, match="Export Entire Gradebook"):
        fill_canvas([], "01_metrics", _write(tmp_path / "x.csv", [["Name", "Score"]]),
                    tmp_path / "out.csv")


def test_moodle_gets_its_worksheet_back_with_grades_and_comments(tmp_path):
    sheet = _write(tmp_path / "worksheet.csv", MOODLE)
    results = [_result("123456", 6.4, "late by 25.0 h: -1.6 points")]
    out, missing = fill_moodle(results, "01_metrics", sheet, tmp_path / "moodle_import.csv")
    rows = _read(out)
    assert rows[0] == MOODLE[0]
    assert rows[1][4] == "6.4" and rows[1][-1] == "late by 25.0 h: -1.6 points"
    assert rows[2] == MOODLE[2] and missing == []
    # a student graded under the roster's Email address (course grade --roster) finds their row
    out, missing = fill_moodle([_result("bo@uni.edu", 7.0)], "01_metrics", sheet,
                               tmp_path / "by_email.csv")
    assert _read(out)[2][4] == "7" and missing == []
    with pytest.raises(LmsFileError, match="Download grading worksheet"):
        fill_moodle([], "01_metrics", _write(tmp_path / "x.csv", [["Name"]]), tmp_path / "o.csv")
