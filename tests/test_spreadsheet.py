"""Every CSV the course writes opens in a spreadsheet as text, never as a formula, and is
readable by its owner only (issue 29, points 3 and 4): grades.csv, canvas.csv,
grades_wide.csv and chapter 7's leaderboard.csv."""

from __future__ import annotations

import csv
import stat
from pathlib import Path

import numpy as np
import pytest

from autograder.cli import main
from autograder.store.export import CellResult, StudentResult, write_canvas, write_wide
from autograder.store.results import GradeRow, record, write_grades_csv
from course.cifar import CIFAR10_CLASSES, read_cifar10
from course.spreadsheet import safe_cell, write_csv

HOSTILE = ["=1+2", "+SUM(1)", "@A1", "-3+4", "\tx", "\r=1"]


def _cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [cell for row in csv.reader(f) for cell in row]


def _assert_inert_and_private(path: Path) -> None:
    """No cell starts as a formula would, and only the owner may read the file."""
    cells = _cells(path)
    assert cells, path
    for cell in cells:
        numeric = cell.lstrip("-").replace(".", "", 1).replace("e-", "", 1).isdigit()
        assert numeric or not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (path, cell)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)


def test_text_that_a_spreadsheet_would_evaluate_is_quoted_and_numbers_stay_numbers():
    for text in HOSTILE:
        assert safe_cell(text) == "'" + text
    assert safe_cell(-1.5) == -1.5 and safe_cell(3) == 3
    assert safe_cell(None) == "" and safe_cell(float("nan")) == ""
    assert safe_cell("failed test_x (1 - 2)") == "failed test_x (1 - 2)"


def test_write_csv_replaces_the_file_whole_with_mode_0600(tmp_path):
    path = tmp_path / "out" / "table.csv"
    path.parent.mkdir()
    path.write_text("old\n")
    path.chmod(0o644)
    write_csv(path, ["name", "score"], [[name, -1.0] for name in HOSTILE])
    _assert_inert_and_private(path)
    assert _cells(path)[2:4] == ["'=1+2", "-1.0"]
    assert [p.name for p in path.parent.iterdir()] == ["table.csv"]  # no temporary left


def test_grades_csv_quotes_a_hostile_student_id_and_reason(tmp_path):
    for name in HOSTILE[:4]:
        record(tmp_path, GradeRow(name, "01_metrics", 1.0, 6.0, "graded", "=cmd|' /C calc'!A0"))
    _assert_inert_and_private(write_grades_csv(tmp_path))
    assert "'=1+2" in _cells(tmp_path / "grades.csv")


def test_canvas_and_wide_exports_quote_hostile_ids_and_names(tmp_path):
    results = [StudentResult(student, "01_metrics", "=HYPERLINK(\"x\")", "@lms", "", 0.0, 0.0,
                             False, [CellResult("test_f", 1.0, 2.0, False, False, False, "-x")])
               for student in HOSTILE[:4]]
    for path in (write_canvas(results, tmp_path / "canvas.csv"),
                 write_wide(results, tmp_path / "grades_wide.csv")):
        _assert_inert_and_private(path)


def test_the_leaderboard_quotes_hand_ins_named_as_formulas(tmp_path, fake_cifar10):
    y_true = read_cifar10(fake_cifar10, train=False, verify=False)[1].numpy()
    hand_ins = tmp_path / "hand-ins"
    hand_ins.mkdir()
    rng = np.random.default_rng(0)
    for name in ("=1+2", "+SUM(1)", "@A1", "-3+4"):
        y_pred = np.where(rng.random(len(y_true)) < 0.7, y_true, (y_true + 1) % 10)
        lines = ["id,label", *(f"{i},{CIFAR10_CLASSES[c]}" for i, c in enumerate(y_pred))]
        (hand_ins / f"{name}.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores"
    assert main(["score", str(hand_ins), "--data-root", str(fake_cifar10), "--no-verify",
                 "--out", str(out)]) == 0
    board = out / "leaderboard.csv"
    _assert_inert_and_private(board)
    assert {"'=1+2", "'+SUM(1)", "'@A1", "'-3+4"} <= set(_cells(board))


@pytest.mark.parametrize("value", ["=1+2", "-3+4"])
def test_a_quoted_cell_reads_back_as_the_text_with_its_quote(tmp_path, value):
    """What a spreadsheet shows: the text, marked as text by the leading quote."""
    path = write_csv(tmp_path / "t.csv", ["v"], [[value]])
    assert _cells(path) == ["v", "'" + value]


def test_a_grader_error_row_has_no_score_in_grades_csv(tmp_path):
    """The grader failed on this student: grades.csv must not say 0 (an LMS would import it)."""
    record(tmp_path, GradeRow("amy", "01_metrics", 0.0, 6.0, "grader-error", "grader error"))
    record(tmp_path, GradeRow("bo", "01_metrics", 0.0, 6.0, "graded", "failed all"))
    with (write_grades_csv(tmp_path)).open(newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert rows["amy"]["score"] == "" and rows["amy"]["status"] == "grader-error"
    assert rows["bo"]["score"] == "0.0"


def test_a_private_command_leaves_the_callers_umask_as_it_was(tmp_path):
    """`course score` in process (a notebook, a test) must not change what the caller creates."""
    import os

    before = os.umask(0o022)
    try:
        assert main(["score", str(tmp_path / "missing.csv")]) == 2
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
