"""The LMS's download zip given to `course grade` as it is, and the LMS's roster (issue 30).

The fixtures are built as the LMSs name their downloads:

- Canvas ("Download Submissions", Canvas Instructor Guide "How do I download all student
  submissions for an assignment?"; the names from canvas-lms lib/content_zipper.rb,
  ``get_filename`` and ``add_upload_submission``): loose files
  ``<sortable name>[_LATE]_<user id>_<attachment id>_<display name>`` at the top of the zip,
  the sortable name lowercased with everything but word characters removed;
- Moodle ("Download all submissions" with "Download submissions in folders"; the names from
  mod/assign/locallib.php ``download_submissions``, mod/assign/classes/downloader.php since
  4.2): ``<Full Name>_<participant id>_assignsubmission_file/<file>``;
- the rosters as the LMSs export them: Canvas's gradebook export (Student, ID, SIS User ID, SIS
  Login ID, Section, "<assignment> (<id>)", a Points Possible row) and Moodle's grading
  worksheet (Identifier "Participant <id>", Full name, Email address, Status, Grade, ...).

One real grading per download (Canvas's and Moodle's, in the sandbox) is shared by the slow
tests; the others read the zips without grading.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from autograder.store.lms_zip import DownloadError, unpack_download
from autograder.store.roster import RosterError, read_roster
from autograder.store.submissions import MAX_NOTEBOOK_BYTES, collect
from course.notebooks import find_root

ROOT = find_root()
ASSIGNMENT = "01_metrics"
NB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
DEADLINE = datetime(2026, 10, 5, 21, 59, tzinfo=timezone.utc)
LATE_BERLIN = (2026, 10, 7, 10, 0, 0)  # 08:00 UTC (CEST): 34 h late, 2 started days
EARLY = (DEADLINE - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S.%f UTC")

CANVAS_ROSTER = [
    ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{ASSIGNMENT} (4501)",
     "Current Score"],
    ["    Points Possible", "", "", "", "", "8", "(read only)"],
    ["Smith, Bob", "340934", "s1001", "bob@uni.edu", "A", "", ""],
    ["Jones, Ann", "334244", "s1002", "ann@uni.edu", "A", "", ""],
    ["Lee, Kim", "777", "s1003", "kim@uni.edu", "A", "", ""],
    ["Müller, Jörg", "555", "s 1004", "joerg@uni.edu", "A", "", ""],  # not a valid student id
]
MOODLE_ROSTER = [
    ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
     "Grade can be changed", "Last modified (submission)", "Feedback comments"],
    ["Participant 123456", "Ann Lee", "ann@uni.edu", "Submitted for grading", "", "8.00",
     "Yes", "Wednesday, 7 October 2026, 10:00 AM", ""],
    ["Participant 654321", "Bo Park", "bo@uni.edu", "Submitted for grading", "", "8.00", "Yes",
     "Wednesday, 7 October 2026, 10:00 AM", ""],
    ["Participant 111", "Cy Dee", "cy@uni.edu", "Submitted for grading", "", "8.00", "Yes",
     "Monday, 5 October 2026, 9:00 PM", ""],
]


def _write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # both LMSs write a BOM
        csv.writer(f).writerows(rows)
    return path


def _student_zip(notebook: bytes, forged: bool) -> bytes:
    """A student's own zip: the notebook, and a timestamp.txt claiming three hours early."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"work/{ASSIGNMENT}.ipynb", notebook)
        if forged:
            zf.writestr("timestamp.txt", EARLY)
    return buffer.getvalue()


def canvas_zip(path: Path, nb) -> Path:
    """Canvas's download: ``nb(kind)`` gives a notebook's bytes. Canvas writes each entry with
    rubyzip's get_output_stream (the time it made the zip, no extended timestamp)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("smithbob_340934_208490284_01_metrics.ipynb", nb("f-arithmetic-mean"))
        zf.writestr("jonesann_LATE_334244_394803489_01_metrics.ipynb", nb("f-arithmetic-mean"))
        zf.writestr("jonesann_LATE_334244_394803490_01_metrics-1.ipynb", nb("solution"))
        zf.writestr("leekim_LATE_777_888_work.zip", _student_zip(nb("solution"), forged=True))
        zf.writestr("müllerjörg_555_999_01_metrics.ipynb", nb("solution"))
        zf.writestr("newkid_4242_1111_01_metrics.ipynb", nb("solution"))  # not in the roster
    return path


def moodle_zip(path: Path, nb, *, utc: bool = False) -> Path:
    """Moodle's download with folders: Ann and Bo 34 h late (Bo's folder also holds a
    timestamp.txt he uploaded, claiming three hours early), Cy on time. Moodle's entries hold
    DOS times (its file pool's, in the server's zone: Europe/Berlin here); ``utc`` adds the
    extended timestamp field to Cy's."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, kind, when in (("Ann Lee_123456", "solution", LATE_BERLIN),
                                   ("Bo Park_654321", "solution", LATE_BERLIN),
                                   ("Cy Dee_111", "f-arithmetic-mean", (2026, 10, 5, 22, 0, 0))):
            info = zipfile.ZipInfo(f"{folder}_assignsubmission_file/{ASSIGNMENT}.ipynb", when)
            if utc and folder.startswith("Cy"):  # 20:00 UTC, as Info-ZIP's zip writes it
                stamp = int(datetime(2026, 10, 5, 20, 0, tzinfo=timezone.utc).timestamp())
                info.extra = struct.pack("<HHBi", 0x5455, 5, 1, stamp)
            zf.writestr(info, nb(kind))
        zf.writestr(zipfile.ZipInfo("Bo Park_654321_assignsubmission_file/timestamp.txt",
                                    LATE_BERLIN), EARLY)
    return path


def _nb(kind: str) -> bytes:
    return NB.replace(b'"metadata": {}', b'"metadata": {"kind": "%s"}' % kind.encode())


def test_canvas_zip_is_read_as_its_unzipped_folder(tmp_path):
    download = unpack_download(canvas_zip(tmp_path / "submissions.zip", _nb),
                               tmp_path / "download")
    found = {s.student_id: s for s in collect(download, ASSIGNMENT, tmp_path / "unpacked")}
    assert sorted(found) == ["334244", "340934", "4242", "555", "777"]
    assert all(s.reason == "" for s in found.values())
    assert b"solution" in found["334244"].notebook.read_bytes()  # the latest resubmission
    assert "Canvas marks it late" in found["334244"].note
    assert "the latest of 2 files graded: 01_metrics-1" in found["334244"].note
    assert b"solution" in found["777"].notebook.read_bytes()  # the student's own zip, read


def test_moodle_zip_times_need_a_zone_or_a_utc_field(tmp_path):
    from autograder.store.deadlines import submission_time, time_source

    download = moodle_zip(tmp_path / "moodle.zip", _nb)
    with pytest.raises(DownloadError, match="--zip-time-zone.*TZ=Europe/Berlin unzip"):
        unpack_download(download, tmp_path / "a")
    subs = unpack_download(download, tmp_path / "b", zone="Europe/Berlin")
    late = datetime(2026, 10, 7, 8, 0, tzinfo=timezone.utc)
    assert submission_time(subs, "123456") == late
    assert submission_time(subs, "654321") == late  # his timestamp.txt is not read
    assert "read in Europe/Berlin" in time_source(subs, "654321")
    with_utc = moodle_zip(tmp_path / "utc.zip", _nb, utc=True)
    subs = unpack_download(with_utc, tmp_path / "c", zone="Asia/Tokyo")
    assert submission_time(subs, "111") == datetime(2026, 10, 5, 20, 0, tzinfo=timezone.utc)
    assert "extended timestamp, in UTC" in time_source(subs, "111")
    with pytest.raises(DownloadError, match="not a time zone"):
        unpack_download(download, tmp_path / "d", zone="Mars/Olympus")


def test_hostile_names_and_sizes_in_a_download_stay_data(tmp_path):
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("../evil_1_2_01_metrics.ipynb", "/abs_1_2_x.ipynb", "C:/x_1_2_y.ipynb",
                     ".hidden_1_2_x.ipynb", "a/../../up.ipynb", "__MACOSX/x_1_2_y.ipynb"):
            zf.writestr(name, NB)
        link = zipfile.ZipInfo("linky_5_6_01_metrics.ipynb")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("Eve Ok_9_assignsubmission_file/" + "d/" * 8 + "deep.ipynb", NB)
        zf.writestr("bob_3_4_01_metrics.ipynb", NB)
    subs = unpack_download(archive, tmp_path / "download")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["download/.course-download-times.json",
                       "download/bob_3_4_01_metrics.ipynb", "hostile.zip"]
    assert [s.student_id for s in collect(subs, ASSIGNMENT, tmp_path / "u")] == ["3"]
    with zipfile.ZipFile(archive, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("bob_3_4_01_metrics.ipynb", NB)  # the same name twice: no LMS's download
    with pytest.raises(DownloadError, match="twice"):
        unpack_download(archive, tmp_path / "again")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big_1_2_01_metrics.ipynb", b"0" * (MAX_NOTEBOOK_BYTES + 1))
    with pytest.raises(DownloadError, match="larger than 20 MB"):
        unpack_download(bomb, tmp_path / "bomb")
    (tmp_path / "not.zip").write_text("not a zip")
    with pytest.raises(DownloadError, match="download it again"):
        unpack_download(tmp_path / "not.zip", tmp_path / "not")


def test_the_roster_maps_lms_ids_and_says_why_when_it_cannot(tmp_path):
    subs = unpack_download(canvas_zip(tmp_path / "submissions.zip", _nb), tmp_path / "d")
    roster = read_roster(_write_csv(tmp_path / "gradebook.csv", CANVAS_ROSTER))
    assert (roster.lms, roster.column) == ("canvas", "SIS User ID")
    found = {s.student_id: s for s in collect(subs, ASSIGNMENT, tmp_path / "u", roster)}
    assert {"s1001", "s1002", "s1003"} <= set(found)
    assert "Canvas user 334244 is SIS User ID s1002" in found["s1002"].note
    problems = {s.student_id: s.reason for s in found.values() if s.notebook is None}
    assert len(problems) == 2 and all(sid.startswith("_canvas-") for sid in problems)
    reasons = " | ".join(problems.values())
    assert "Canvas user 4242 is not in the roster gradebook.csv" in reasons
    assert "Canvas user 555 has SIS User ID 's 1004'" in reasons
    by_login = read_roster(tmp_path / "gradebook.csv", "SIS Login ID")
    ids = {s.student_id for s in collect(subs, ASSIGNMENT, tmp_path / "u2", by_login)}
    assert {"bob@uni.edu", "ann@uni.edu", "kim@uni.edu", "joerg@uni.edu"} <= ids
    moodle = read_roster(_write_csv(tmp_path / "worksheet.csv", MOODLE_ROSTER))
    assert moodle.cells == {"123456": "ann@uni.edu", "654321": "bo@uni.edu", "111": "cy@uni.edu"}
    wrong = {s.reason for s in collect(subs, ASSIGNMENT, tmp_path / "u3", moodle)}
    assert any("is Moodle's export, not Canvas's" in r for r in wrong)
    with pytest.raises(RosterError, match="SIS User ID or SIS Login ID"):
        read_roster(tmp_path / "gradebook.csv", "Student")
    with pytest.raises(RosterError, match="no 'ID number' column"):
        read_roster(tmp_path / "worksheet.csv", "ID number")
    with pytest.raises(RosterError, match="neither Canvas's gradebook export"):
        read_roster(_write_csv(tmp_path / "other.csv", [["Name", "Score"]]))


# ---- the real grading of both downloads, shared by the tests below ----------------------

def _course(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args, "--root", str(ROOT)],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def graded_downloads(tmp_path_factory):
    """Canvas's and Moodle's zips graded by `course grade` with their rosters; (folder, the
    results of each)."""
    from autograder.isolation.sandbox import isolation_available
    from autograder.store.results import read_results
    from autograder.store.samples import write_samples

    base = tmp_path_factory.mktemp("lms-zips")
    write_samples(ROOT, ASSIGNMENT, base / "samples")

    def nb(kind):
        return (base / "samples" / kind / f"{ASSIGNMENT}.ipynb").read_bytes()

    isolate, _ = isolation_available()
    runs = {"canvas": (canvas_zip(base / "canvas.zip", nb),
                       _write_csv(base / "gradebook.csv", CANVAS_ROSTER), []),
            "moodle": (moodle_zip(base / "moodle.zip", nb),
                       _write_csv(base / "worksheet.csv", MOODLE_ROSTER),
                       ["--zip-time-zone", "Europe/Berlin"])}
    results = {}
    for lms, (download, roster, extra) in runs.items():
        result = _course("grade", ASSIGNMENT, str(download), "--out", str(base / lms),
                         "--roster", str(roster), "--db", f"sqlite:///{base}/{lms}.db",
                         "--workers", "2", *extra, *([] if isolate else ["--no-isolation"]))
        assert result.returncode == 0, result.stdout + result.stderr
        results[lms] = {r.student_id: r for r in read_results(base / lms)}
    return base, results


@pytest.mark.slow
@pytest.mark.sandbox
def test_canvas_download_graded_as_it_comes(graded_downloads):
    _, results = graded_downloads
    rows = results["canvas"]
    graded = {sid for sid, r in rows.items() if r.status == "graded"}
    assert graded == {"s1001", "s1002", "s1003"}
    assert rows["s1002"].score == rows["s1002"].max_score > rows["s1001"].score
    assert "the latest of 2 files graded: 01_metrics-1" in rows["s1002"].reason
    assert rows["s1003"].score == rows["s1003"].max_score  # from the student's own zip
    assert all("Canvas marks it late" in rows[s].reason for s in ("s1002", "s1003"))
    errors = " | ".join(r.reason for r in rows.values() if r.status != "graded")
    assert "Canvas user 4242 is not in the roster" in errors
    assert "Canvas user 555 has SIS User ID 's 1004'" in errors


def _record_with_deadline(base: Path, lms: str, roster_file: str):
    """The graded rows recorded again into a new gradebook, with a deadline; (db, gradebook
    notebooks by student)."""
    from autograder.exercises import exercise_for
    from autograder.store.deadlines import LatePolicy
    from autograder.store.gradebook import Recorder, nbgrader_settings, open_gradebook
    from autograder.store.results import read_results

    _, course_id = nbgrader_settings(ROOT)
    db = f"sqlite:///{base}/{lms}-late.db"
    course_dir = base / f"{lms}-late"
    course_dir.mkdir(exist_ok=True)
    out = base / lms
    policy = LatePolicy(deadline=DEADLINE, per_day=0.1, max_fraction=0.5, grace_minutes=15)
    recorder = Recorder(db, course_dir, course_id=course_id, policies={ASSIGNMENT: policy},
                        say=lambda line: None)
    recorder.record(exercise_for(ASSIGNMENT, ROOT), list(read_results(out)),
                    template=out / "work" / "_template", out_dir=out,
                    submissions=out / "work" / "_download",
                    roster=read_roster(base / roster_file))
    with open_gradebook(db, course_id) as gb:
        found = {s.student.id: (s.notebooks[0].late_submission_penalty,
                                " ".join(c.auto_comment or "" for c in s.notebooks[0].comments))
                 for s in gb.assignment_submissions(ASSIGNMENT)}
    return db, found


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_forged_timestamp_costs_what_the_plain_late_one_does(graded_downloads):
    base, results = graded_downloads
    assert {s for s, r in results["moodle"].items() if r.status == "graded"} == {
        "ann@uni.edu", "bo@uni.edu", "cy@uni.edu"}
    _, moodle = _record_with_deadline(base, "moodle", "worksheet.csv")
    # 34 h late: 2 started days x 10% of the 8 points; Bo's timestamp.txt claims 3 h early
    assert moodle["ann@uni.edu"][0] == pytest.approx(1.6) == moodle["bo@uni.edu"][0]
    assert moodle["cy@uni.edu"][0] is None  # 22:00 in Berlin is 20:00 UTC: on time
    assert "handed in 2026-10-07 08:00:00 UTC" in moodle["bo@uni.edu"][1]
    assert "read in Europe/Berlin" in moodle["bo@uni.edu"][1]
    _, canvas = _record_with_deadline(base, "canvas", "gradebook.csv")
    # Canvas's zip holds no submission time: the forged (s1003) and the plain late (s1002)
    # alike get no penalty here, and the comment says why
    assert canvas["s1002"][0] is None and canvas["s1003"][0] is None
    assert all("no time: Canvas's download holds no submission time" in canvas[s][1]
               for s in ("s1002", "s1003"))


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_exports_find_each_mapped_student_in_the_lms_file(graded_downloads, tmp_path):
    base, results = graded_downloads
    result = _course("export", ASSIGNMENT, "--db", f"sqlite:///{base}/canvas.db", "--out",
                     str(tmp_path / "canvas"), "--canvas-gradebook", str(base / "gradebook.csv"))
    assert result.returncode == 0, result.stdout + result.stderr
    with (tmp_path / "canvas" / "canvas_import.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    # Canvas's own layout, as exported: the identity columns, the assignment "<name> (<id>)",
    # the Points Possible row, one row per student, nothing added or moved
    assert rows[0] == CANVAS_ROSTER[0] and rows[1] == CANVAS_ROSTER[1]
    assert [r[:5] for r in rows[2:]] == [r[:5] for r in CANVAS_ROSTER[2:]]
    column = CANVAS_ROSTER[0].index(f"{ASSIGNMENT} (4501)")
    scores = {r[2]: r[column] for r in rows[2:]}
    canvas = results["canvas"]
    assert scores == {"s1001": f"{canvas['s1001'].score:g}", "s1002": "6", "s1003": "6",
                      "s 1004": ""}
    db, _ = _record_with_deadline(base, "moodle", "worksheet.csv")
    result = _course("export", ASSIGNMENT, "--db", db, "--out", str(tmp_path / "moodle"),
                     "--moodle-worksheet", str(base / "worksheet.csv"))
    assert result.returncode == 0, result.stdout + result.stderr
    with (tmp_path / "moodle" / "moodle_import.csv").open(newline="", encoding="utf-8") as f:
        sheet = list(csv.reader(f))
    assert sheet[0] == MOODLE_ROSTER[0]  # Moodle's worksheet columns, as downloaded
    grade, comments = sheet[0].index("Grade"), sheet[0].index("Feedback comments")
    by_email = {r[2]: r for r in sheet[1:]}
    assert by_email["ann@uni.edu"][grade] == "4.4"  # 6 points less the 1.6 of 2 days late
    assert by_email["bo@uni.edu"][grade] == "4.4"
    assert "late" in by_email["bo@uni.edu"][comments]
    assert by_email["cy@uni.edu"][grade] == f"{results['moodle']['cy@uni.edu'].score:g}"


def test_canvas_zip_of_the_cli_says_what_to_do_for_a_bad_zone(tmp_path):
    download = canvas_zip(tmp_path / "c.zip", _nb)
    result = _course("grade", ASSIGNMENT, str(download), "--out", str(tmp_path / "out"),
                     "--zip-time-zone", "Nowhere/Land", "--no-isolation", "--db",
                     f"sqlite:///{tmp_path}/g.db")
    assert result.returncode == 2
    assert "is not a time zone this machine knows" in result.stderr
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
