"""``course grade --scheduler``: grading on a Dask cluster, with a worker killed mid-batch.

A scheduler and two ``dask worker`` processes run on localhost with the course's TLS
certificates (``dask_cluster.py``), each worker with its own scratch folder (stand-ins for
machines). The grading process writes every result; a worker lost mid-batch has its students
graded by the other, with no row lost or doubled.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
from dask_cluster import ASSIGNMENT, ROOT, batch, tls_cluster, wait_for

from autograder.cluster import ClusterError
from autograder.cluster_tls import default_folder, make_certs, tls_security
from autograder.exercises import exercise_for
from autograder.grade import grade
from autograder.store.results import read_results


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A TLS scheduler and two single-thread workers "a" and "b" on localhost, with the
    course's certificates in their default folder (where ``grade`` finds them); yields
    (address, {name: (process, scratch folder)})."""
    monkeypatch.setenv("COURSE_GRADING_HOME", str(tmp_path / "grading-home"))
    certs = default_folder()
    make_certs(certs)
    with tls_cluster(tmp_path, certs) as (address, workers):
        yield address, workers


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_worker_killed_mid_batch_loses_no_row_and_doubles_none(cluster, tmp_path):
    address, workers = cluster
    subs, out = tmp_path / "subs", tmp_path / "out"
    kinds = batch(subs, 4)
    proc_a, scratch_a = workers["a"]
    killed = {}

    def kill_a_while_it_grades():  # as soon as worker a holds a student, it dies
        try:
            folder = wait_for(lambda: next(scratch_a.glob("**/course-grade/jobs/*"), None),
                               300, "worker a to start grading a student")
        except AssertionError:
            return
        killed["student"] = folder.name.rsplit("-", 1)[0]
        os.kill(proc_a.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_while_it_grades, daemon=True)
    killer.start()
    rows = grade(ASSIGNMENT, subs, out, root=ROOT, scheduler=address, timeout=300)
    killer.join(timeout=5)

    assert killed, "worker a never started grading: the test did not kill anything"
    assert proc_a.poll() is not None
    recorded = read_results(out)
    assert sorted(r.student_id for r in recorded) == sorted(kinds)  # none lost, none doubled
    assert [r.student_id for r in rows] == sorted(kinds)
    ex = exercise_for(ASSIGNMENT, ROOT)
    for row in recorded:
        assert row.status == "graded", row
        full = row.score == ex.max_score
        assert full == (kinds[row.student_id] == "solution"), (row.student_id, row.score)
        assert not row.flagged, row
        page = out / "feedback" / row.student_id / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert "Recorded score" in page.read_text(encoding="utf-8")
    # the student worker a was grading when it died was graded again, by worker b
    assert killed["student"] in {r.student_id for r in recorded}
    assert not (out / "work").joinpath(killed["student"]).exists()  # graded remotely

    # a rerun resumes: every student is already graded, none is graded again
    again = grade(ASSIGNMENT, subs, out, root=ROOT, scheduler=address, timeout=300)
    assert all(r.resumed for r in again) and len(again) == len(kinds)
    assert len(read_results(out)) == len(kinds)


@pytest.mark.slow
@pytest.mark.sandbox
def test_an_interrupted_cluster_run_resumes(cluster, tmp_path):
    address, _ = cluster
    subs, out = tmp_path / "subs", tmp_path / "out"
    kinds = batch(subs, 2)

    class Interrupt(Exception):
        pass

    def stop_after_first(row, done, total):
        raise Interrupt()

    with pytest.raises(Interrupt):
        grade(ASSIGNMENT, subs, out, root=ROOT, scheduler=address, on_row=stop_after_first,
              timeout=300)
    first = read_results(out)
    assert len(first) == 1
    assert (out / "grades.csv").read_text().count("\n") == 2  # header + the recorded row
    rows = grade(ASSIGNMENT, subs, out, root=ROOT, scheduler=address, timeout=300)
    assert [r.student_id for r in rows] == sorted(kinds)
    assert [r.student_id for r in rows if r.resumed] == [first[0].student_id]
    assert sorted(r.student_id for r in read_results(out)) == sorted(kinds)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    subs = tmp_path / "subs"
    batch(subs, 1)
    start = time.monotonic()
    certs = tmp_path / "certs"
    make_certs(certs)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tls://127.0.0.1"):
        grade(ASSIGNMENT, subs, tmp_path / "out", root=ROOT, scheduler="tls://127.0.0.1:9",
              security=tls_security(certs), connect_timeout=2, isolate=False)
    assert time.monotonic() - start < 60
    assert read_results(tmp_path / "out") == []


@pytest.mark.slow
def test_the_cli_reports_an_unreachable_scheduler(tmp_path, capsys):
    from autograder.cli import main

    subs = tmp_path / "subs"
    batch(subs, 1)
    make_certs(tmp_path / "certs")
    rc = main(["grade", ASSIGNMENT, str(subs), "--out", str(tmp_path / "out"), "--no-isolation",
               "--scheduler", "tls://127.0.0.1:9", "--tls", str(tmp_path / "certs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "dask scheduler" in err


def test_workers_with_another_secret_are_refused(cluster, tmp_path, monkeypatch):
    address, _ = cluster
    subs = tmp_path / "subs"
    batch(subs, 1)
    monkeypatch.setenv("COURSE_GRADING_SECRET", "not the secret the workers have")
    with pytest.raises(ClusterError, match="another version of autograder/ or has "
                                           "another grading secret"):
        grade(ASSIGNMENT, subs, tmp_path / "out", root=ROOT, scheduler=address, isolate=False)
    assert read_results(tmp_path / "out") == []


def test_the_feedback_names_a_worker_returns_are_checked(tmp_path):
    from autograder.cluster import write_feedback

    write_feedback(tmp_path, "alice", ASSIGNMENT, {"01_metrics.html": b"<p>ok</p>",
                                                    "../../escape.html": b"x",
                                                    ".hidden.html": b"x", "notes.txt": b"x"})
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                     if p.is_file())
    assert written == [f"feedback/alice/{ASSIGNMENT}/01_metrics.html"]
    shutil.rmtree(tmp_path / "feedback")
