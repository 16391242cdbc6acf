"""Faults of one entry stay that entry's row; a crash never changes grades.csv (issue 16).

Fast tests of the pieces (collecting submissions, the results store, the bounded readers);
the sandboxed ones are marked ``sandbox``.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import nbformat
import pytest

from course.grading.results import GradeRow, read_results, record, write_grades_csv
from course.grading.submissions import STUDENT_ID, collect

ROOT = Path(__file__).resolve().parents[1]
NB = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))


# --------------------------------------------------------------------------- class 1: archives


def _damaged_zip(path: Path, compression: int) -> None:
    """A zip whose one notebook member has its compressed bytes overwritten."""
    buf = io.BytesIO()
    name = "01_metrics.ipynb"
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr(name, NB * 50)
    data = bytearray(buf.getvalue())
    start = 30 + len(name)  # the local header, then the member's data
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression,error", [(zipfile.ZIP_DEFLATED, "error"),
                                               (zipfile.ZIP_BZIP2, "OSError"),
                                               (zipfile.ZIP_LZMA, "BadZipFile")])
def test_a_damaged_compressed_member_is_that_students_row(tmp_path, compression, error):
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "01_metrics.ipynb").write_text(NB)
    _damaged_zip(subs / "mallory.zip", compression)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert set(found) == {"alice", "mallory"}
    assert found["mallory"].notebook is None
    assert found["mallory"].reason.startswith(f"unreadable zip file: {error}")
    assert found["alice"].notebook is not None and found["alice"].reason == ""


# --------------------------------------------------------------------------- class 2: trees


def _deep_folder(base: Path, depth: int, leaf: str | None = None) -> None:
    """base/d/d/.../d (``depth`` levels, beyond PATH_MAX), optionally a notebook at the end."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = new
    if leaf is not None:
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, NB.encode())
        os.close(out)
    os.close(fd)


def _remove_deep(base: Path) -> None:
    """Remove a tree made by _deep_folder without recursion (pytest's cleanup recurses)."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    while True:
        names = os.listdir(fds[-1])
        if "d" in names:
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            continue
        for name in names:
            os.unlink(name, dir_fd=fds[-1])
        os.close(fds.pop())
        if not fds:
            return
        os.rmdir("d", dir_fd=fds[-1])


@pytest.mark.parametrize("depth,leaf", [(1500, None), (1200, "01_metrics.ipynb")])
def test_a_very_deep_folder_is_that_students_row(tmp_path, depth, leaf):
    subs = tmp_path / "subs"
    (subs / "deep").mkdir(parents=True)
    (subs / "zoe").mkdir()
    (subs / "zoe" / "01_metrics.ipynb").write_text(NB)
    _deep_folder(subs / "deep", depth, leaf)
    try:
        found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    finally:
        _remove_deep(subs / "deep")
    assert set(found) == {"deep", "zoe"}
    assert (found["deep"].notebook, found["deep"].reason) == (None, "no notebook in the submission")
    assert found["zoe"].notebook is not None


def test_a_notebook_four_levels_down_is_found_and_five_is_not(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ann" / "a" / "b" / "c").mkdir(parents=True)
    (subs / "ann" / "a" / "b" / "c" / "01_metrics.ipynb").write_text(NB)
    (subs / "ben" / "a" / "b" / "c" / "d").mkdir(parents=True)
    (subs / "ben" / "a" / "b" / "c" / "d" / "01_metrics.ipynb").write_text(NB)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert found["ann"].notebook == subs / "ann" / "a" / "b" / "c" / "01_metrics.ipynb"
    assert (found["ben"].notebook, found["ben"].reason) == (None, "no notebook in the submission")


def test_any_failure_reading_one_entry_is_that_students_row(tmp_path, monkeypatch):
    """Whatever goes wrong inside one entry (here: a fault no check foresaw) is its reason."""
    from course.grading import submissions

    subs = tmp_path / "subs"
    for name in ("kim", "lee"):
        (subs / name).mkdir(parents=True)
        (subs / name / "01_metrics.ipynb").write_text(NB)
    real = submissions._from_folder

    def failing(folder, expected):
        if folder.name == "kim":
            raise PermissionError(13, "Permission denied")
        return real(folder, expected)

    monkeypatch.setattr(submissions, "_from_folder", failing)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert found["kim"].notebook is None
    assert found["kim"].reason == "unreadable submission: PermissionError: [Errno 13] " \
                                  "Permission denied"
    assert found["lee"].sha256 != "" and found["lee"].reason == ""


# --------------------------------------------------------------------------- class 3: ids


@pytest.mark.parametrize("invalid", ["alice!", "-alice", "ali ce", "alice\u00e9", "_alice"])
def test_an_invalid_id_never_takes_a_real_students_row(tmp_path, invalid):
    subs = tmp_path / "subs"
    for name in ("alice", "alice_", invalid):
        (subs / name).mkdir(parents=True)
        (subs / name / "01_metrics.ipynb").write_text(NB)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert len(found) == 3
    for real in ("alice", "alice_"):
        assert found[real].notebook is not None and found[real].reason == "", real
    (fake,) = set(found) - {"alice", "alice_"}
    assert not STUDENT_ID.fullmatch(fake) and fake.startswith("_")
    assert found[fake].notebook is None
    assert found[fake].reason == f"invalid student id {invalid!r}"


def test_two_invalid_ids_keep_two_rows(tmp_path):
    subs = tmp_path / "subs"
    for name in ("bad name!", "bad name?", "bad_name_"):
        (subs / name).mkdir(parents=True)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert len(found) == 3 and "bad_name_" in found
    assert found["bad_name_"].reason == "no notebook in the submission"
    invalid = sorted(s.reason for s in found.values() if s.student_id != "bad_name_")
    assert invalid == ["invalid student id 'bad name!'", "invalid student id 'bad name?'"]


# --------------------------------------------------------------------------- class 4: resume


def _rows(n: int) -> list[GradeRow]:
    return [GradeRow(f"s{i:02d}", "01_metrics", float(i % 4), 4.0, "graded",
                     "" if i % 4 == 3 else "failed test_x", 1.0 * (i % 3), i % 5 == 0,
                     sha256=f"{i:064x}", cells={"t": {"points": 1.0, "message": "é" * i}})
            for i in range(n)]


def _resume(out: Path, rows: list[GradeRow]) -> None:
    """What `course grade` does when run again: grade whoever has no intact row, then write."""
    done = {(r.student_id, r.sha256) for r in read_results(out) if r.status == "graded"}
    for row in rows:
        if (row.student_id, row.sha256) not in done:
            record(out, row)
    write_grades_csv(out)


def test_a_run_cut_at_any_byte_resumes_to_the_same_grades(tmp_path):
    """Stale rows first (an earlier grading of changed notebooks), then this run's rows."""
    rows = _rows(6)
    stale = [GradeRow(**{**r.__dict__, "score": 0.0, "sha256": "0" * 64}) for r in rows]
    clean = tmp_path / "clean"
    clean.mkdir()
    for row in stale + rows:
        record(clean, row)
    expected = write_grades_csv(clean).read_bytes()
    full = (clean / "results.jsonl").read_bytes()
    start = len(b"".join(full.splitlines(keepends=True)[:len(stale)]))
    cut_dir = tmp_path / "cut"
    for cut in range(start, len(full) + 1, 7):
        cut_dir.mkdir()
        (cut_dir / "results.jsonl").write_bytes(full[:cut])
        _resume(cut_dir, rows)
        assert (cut_dir / "grades.csv").read_bytes() == expected, cut
        _resume(cut_dir, rows)  # and again: nothing changes
        assert (cut_dir / "grades.csv").read_bytes() == expected, cut
        for path in cut_dir.iterdir():
            path.unlink()
        cut_dir.rmdir()


def test_a_cut_line_never_swallows_the_next_row(tmp_path):
    rows = _rows(2)
    record(tmp_path, rows[0])
    data = (tmp_path / "results.jsonl").read_bytes()
    for cut, kept in ((1, ["s01"]), (len(data) // 2, ["s01"]), (len(data) - 2, ["s01"]),
                      (len(data) - 1, ["s00", "s01"])):  # only the newline lost: s00 is whole
        (tmp_path / "results.jsonl").write_bytes(data[:cut])
        record(tmp_path, rows[1])
        assert [r.student_id for r in read_results(tmp_path)] == kept, cut
