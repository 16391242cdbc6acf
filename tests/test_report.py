"""`course report`'s page from a made-up class: the numbers, the ranking, and the escaping.

The class is built as ``export.read_gradebook`` returns one (no grading here); the figures
against a real graded class are checked in tests/test_gradebook.py.
"""

from __future__ import annotations

import json

from pages import assert_no_active_content, elements

from autograder.report import build_report, write_report
from autograder.store.export import CellResult, StudentResult
from autograder.store.results import GradeRow

HOSTILE = "<img src=x onerror=alert(1)>"


def student(name, scores, *, diagnoses=(), late=0.0, penalty=0.0, flagged=False,
            written_ungraded=False):
    cells = [CellResult(f"test_{i}", s, 2.0, written=False, ungraded=False, hidden=True)
             for i, s in enumerate(scores)]
    cells.append(CellResult("explain", 0.0, 2.0, written=True, ungraded=written_ungraded,
                            hidden=False))
    return StudentResult(name, "01_metrics", name, "", "", late, penalty, flagged, cells,
                         diagnoses={d: f"text of {d}" for d in diagnoses})


def made_up_class():
    results = [student("ada", [2, 2]),
               student("bob", [0, 2], diagnoses=["f_arithmetic_mean"], late=7200, penalty=0.4),
               student(HOSTILE, [0, 0], diagnoses=["f_arithmetic_mean", "f_all_zeros"],
                       flagged=True, written_ungraded=True)]
    rows = [GradeRow("ada", "01_metrics", 6, 6, "graded", seconds=3.5),
            GradeRow("bob", "01_metrics", 2, 6, "graded", seconds=4.0),
            GradeRow("eve", "01_metrics", 0, 6, "grader-error", f"boom {HOSTILE}", seconds=1.0)]
    return results, rows


def test_the_report_counts_what_the_gradebook_holds():
    reports = build_report(*made_up_class())
    r = reports["01_metrics"]
    assert r.scores == {"ada": 4.0, "bob": 1.6, HOSTILE: 0.0}  # after the late penalty
    assert r.pass_rates == {"test_0": 1 / 3, "test_1": 2 / 3}
    assert list(r.mistakes.items()) == [("f_arithmetic_mean", ["bob", HOSTILE]),
                                        ("f_all_zeros", [HOSTILE])]
    assert r.late == {"bob": (2.0, 0.4)} and r.flagged == [HOSTILE]
    assert r.grader_errors == {"eve": f"boom {HOSTILE}"} and r.ungraded == {HOSTILE: ["explain"]}
    assert r.seconds == {"ada": 3.5, "bob": 4.0, "eve": 1.0}


def test_the_page_escapes_every_name_and_shows_every_figure(tmp_path):
    page = write_report(build_report(*made_up_class()), tmp_path / "report")
    text = page.read_text()
    assert_no_active_content(text)
    assert HOSTILE not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    images = [e.attrib["src"] for e in elements(text) if e.tag == "img"]
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())["01_metrics"]
    assert sorted(images) == sorted(numbers["figures"].values()) and len(images) == 3
    for name in images:
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert numbers["mistakes"] == {"f_arithmetic_mean": ["bob", HOSTILE],
                                   "f_all_zeros": [HOSTILE]}
