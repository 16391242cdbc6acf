"""Submissions as Canvas and Moodle download them (issue 30): the student each file or folder
belongs to, the latest resubmission, Canvas's late mark, and the time from the download (none
for Canvas, whose zip holds only when it was made)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime, timezone

import pytest

from autograder.isolation.sandbox import isolation_available
from autograder.store import lms
from autograder.store.deadlines import submission_time, time_source
from autograder.store.lms import CANVAS_FILE, entries, entry_of
from autograder.store.results import read_results
from autograder.store.samples import write_samples
from autograder.store.submissions import collect
from course.notebooks import find_root

real_entries = entries

ROOT = find_root()

NB = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
ASSIGNMENT = "01_metrics"


def _canvas_and_moodle(folder):
    """A folder mixing Canvas's loose files, Moodle's folders and a plain entry."""
    folder.mkdir()
    files = {
        "smithbob_340934_208490284_01_metrics.ipynb": 1_790_000_000,
        "jonesann_late_334244_394803489_01_metrics.ipynb": 1_790_000_100,
        "jonesann_late_334244_394803489_01_metrics-1.ipynb": 1_790_000_200,
        "jonesann_late_334244_394803489_notes.txt": 1_790_000_050,  # not a notebook: ignored
    }
    for name, when in files.items():
        (folder / name).write_text(NB if name.endswith(".ipynb") else "notes")
        os.utime(folder / name, (when, when))
    with zipfile.ZipFile(folder / "kimlee_777_888_work.zip", "w") as zf:
        zf.writestr("work/01_metrics.ipynb", NB)
        zf.writestr("timestamp.txt", "2020-01-01 00:00:00 UTC")  # the student's: ignored
    os.utime(folder / "kimlee_777_888_work.zip", (1_790_000_300, 1_790_000_300))
    moodle = folder / "Ann Lee_123456_assignsubmission_file_"
    moodle.mkdir()
    (moodle / "01_metrics.ipynb").write_text(NB)
    os.utime(moodle / "01_metrics.ipynb", (1_790_000_400, 1_790_000_400))
    (folder / "alice").mkdir()
    (folder / "alice" / "01_metrics.ipynb").write_text(NB)


def test_each_lms_naming_gives_its_student(tmp_path):
    subs = tmp_path / "subs"
    _canvas_and_moodle(subs)
    found = {s.student_id: s for s in collect(subs, ASSIGNMENT, tmp_path / "unpacked")}
    assert sorted(found) == ["123456", "334244", "340934", "777", "alice"]
    assert all(s.notebook is not None and s.reason == "" for s in found.values())
    # the latest resubmission (-1) of Canvas user 334244, marked late by Canvas
    assert found["334244"].notebook.name == "jonesann_late_334244_394803489_01_metrics-1.ipynb"
    assert "Canvas marks it late" in found["334244"].note
    assert "the latest of 2 files" in found["334244"].note
    assert found["340934"].note == ""
    assert found["777"].notebook == tmp_path / "unpacked" / "777" / f"{ASSIGNMENT}.ipynb"
    assert found["123456"].notebook.parent.name.endswith("_assignsubmission_file_")


def test_the_time_of_an_lms_entry_is_the_downloads(tmp_path):
    """Moodle's: the notebook's file time (a timestamp.txt uploaded beside it is the student's);
    Canvas's: none, since Canvas's zip holds only when it was made (lms_zip.py)."""
    subs = tmp_path / "subs"
    _canvas_and_moodle(subs)
    moodle = subs / "Ann Lee_123456_assignsubmission_file_"
    (moodle / "timestamp.txt").write_text("2020-01-01 00:00:00 UTC")  # uploaded by the student

    def at(seconds):
        return datetime.fromtimestamp(seconds, timezone.utc)

    for canvas in ("340934", "334244", "777"):
        assert submission_time(subs, canvas) is None
        assert time_source(subs, canvas).startswith("no time: Canvas's download holds no")
    assert submission_time(subs, "123456") == at(1_790_000_400)
    assert time_source(subs, "123456") == "the notebook's file time"
    assert submission_time(subs, "nobody") is None


def test_a_plain_name_is_not_taken_for_canvas_and_duplicates_stay_apart(tmp_path):
    assert CANVAS_FILE.fullmatch("smithbob_340934_208490284_01_metrics.ipynb")
    for plain in ("alice.ipynb", "01_metrics.ipynb", "bob_01_metrics.zip", "a_1_x.ipynb"):
        assert not CANVAS_FILE.fullmatch(plain), plain
    subs = tmp_path / "subs"
    (subs / "dave").mkdir(parents=True)
    (subs / "dave.ipynb").write_text(NB)
    assert [(name, entry is None) for name, entry in entries(subs)] == [("dave", False),
                                                                       ("dave", True)]
    (row,) = collect(subs, ASSIGNMENT, tmp_path / "unpacked")
    assert row.notebook is None and "several entries" in row.reason


def test_entry_of_lists_a_settled_folder_once_and_sees_every_change(tmp_path, monkeypatch):
    """One listing serves a whole class (recording asks for every student); an entry added,
    renamed or removed afterwards is seen, even within the file system's clock tick."""
    subs = tmp_path / "subs"
    for student in ("alice", "bob"):
        (subs / student).mkdir(parents=True)
    old = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(subs, (old, old))
    listed = []
    monkeypatch.setattr(lms, "entries", lambda *a: listed.append(a) or real_entries(*a))
    assert entry_of(subs, "alice").path == subs / "alice" and entry_of(subs, "bob") is not None
    assert entry_of(subs, "carol") is None and len(listed) == 1
    (subs / "carol.ipynb").write_text(NB)  # the folder's time is now: listed again each time
    assert entry_of(subs, "carol").path == subs / "carol.ipynb"
    (subs / "bob").rename(subs / "bob.old")
    assert entry_of(subs, "bob") is None and entry_of(subs, "bob.old") is not None
    (subs / "alice.ipynb").write_text(NB)  # two entries: none is alice's
    assert entry_of(subs, "alice") is None and len(listed) == 5

def test_moodle_without_folders_and_canvas_names_beyond_ascii(tmp_path):
    """Moodle's loose files ("Download submissions in folders" off) and Canvas's names, which
    keep every word character of the sortable name (content_zipper.rb)."""
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "Cher_42_assignsubmission_file_01_metrics.ipynb").write_text(NB)
    (subs / "müllerjörg_LATE_555_999_01_metrics.ipynb").write_text(NB)
    found = {name: entry for name, entry in entries(subs)}
    assert (found["42"].channel, found["555"].channel) == ("moodle", "canvas")
    assert found["555"].note == "Canvas marks it late"


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_canvas_download_is_graded_as_it_comes(tmp_path):
    """`course grade` on Canvas's unzipped download: ids are Canvas's, the latest resubmission
    (the correct one) is graded, Canvas's late mark is in the row."""
    samples = tmp_path / "samples"
    write_samples(ROOT, ASSIGNMENT, samples)
    subs = tmp_path / "canvas"
    subs.mkdir()
    files = {"jonesann_late_334244_394803489_01_metrics.ipynb": "f-arithmetic-mean",
             "jonesann_late_334244_394803489_01_metrics-1.ipynb": "solution",
             "smithbob_340934_208490284_01_metrics.ipynb": "f-arithmetic-mean"}
    for name, sample in files.items():
        shutil.copyfile(samples / sample / f"{ASSIGNMENT}.ipynb", subs / name)
    isolate, _ = isolation_available()
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT,
                             str(subs), "--out", str(tmp_path / "out"), "--root", str(ROOT),
                             "--db", f"sqlite:///{tmp_path}/gradebook.db"]
                            + ([] if isolate else ["--no-isolation"]),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r.student_id: r for r in read_results(tmp_path / "out")}
    assert sorted(rows) == ["334244", "340934"]
    assert rows["334244"].score == rows["334244"].max_score > rows["340934"].score
    assert "Canvas marks it late" in rows["334244"].reason
    assert "the latest of 2 files graded: 01_metrics-1" in rows["334244"].reason
