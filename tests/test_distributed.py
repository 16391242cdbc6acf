"""``course grade --scheduler``: grading on a Dask cluster, with a worker killed mid-batch.

A scheduler and two ``dask worker`` processes run on localhost, each worker with its own
scratch folder (stand-ins for machines). The grading process writes every result; a worker lost
mid-batch has its students graded by the other, with no row lost or doubled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder.cluster import ClusterError
from autograder.exercises import exercise_for
from autograder.grade import grade
from autograder.store.results import read_results
from autograder.store.samples import ci_parameters_of, mistakes, sample_notebook

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_metrics"
SMALL = ci_parameters_of(ROOT, ASSIGNMENT)  # experiments at CI size: rows and faults count here
DASK = Path(sys.executable).parent / "dask"


def _wait_for(predicate, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {seconds:g} s waiting for {what}")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(DASK), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "COURSE_PROGRESS": "0"})


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-thread workers "a" and "b" on localhost; yields
    (address, {name: (process, scratch folder)})."""
    info = tmp_path / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)], tmp_path / "scheduler.log")]
    workers = {}
    try:
        address = _wait_for(lambda: info.exists() and json.loads(info.read_text())["address"],
                            60, "the scheduler")
        for name in ("a", "b"):
            scratch = tmp_path / f"scratch-{name}"
            scratch.mkdir()
            proc = _start(["worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
                           "--local-directory", str(scratch), "--no-dashboard"],
                          tmp_path / f"worker-{name}.log")
            procs.append(proc)
            workers[name] = (proc, scratch)
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _batch(folder: Path, n: int) -> dict[str, str]:
    """n students: the solution and the sample mistakes in turn; returns student -> kind."""
    kinds = ["solution", *mistakes(ROOT, ASSIGNMENT)]
    notebook = exercise_for(ASSIGNMENT, ROOT).notebook_name
    batch = {}
    for i in range(n):
        student, kind = f"s{i:02d}", kinds[i % 2 and 1 + (i // 2) % (len(kinds) - 1)]
        (folder / student).mkdir(parents=True)
        nbformat.write(sample_notebook(ROOT, ASSIGNMENT, kind, SMALL), folder / student / notebook)
        batch[student] = kind
    return batch


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_worker_killed_mid_batch_loses_no_row_and_doubles_none(cluster, tmp_path):
    address, workers = cluster
    subs, out = tmp_path / "subs", tmp_path / "out"
    kinds = _batch(subs, 4)
    proc_a, scratch_a = workers["a"]
    killed = {}

    def kill_a_while_it_grades():  # as soon as worker a holds a student, it dies
        try:
            folder = _wait_for(lambda: next(scratch_a.glob("**/course-grade/jobs/*"), None),
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
    kinds = _batch(subs, 2)

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
    _batch(subs, 1)
    start = time.monotonic()
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1"):
        grade(ASSIGNMENT, subs, tmp_path / "out", root=ROOT, scheduler="tcp://127.0.0.1:9",
              connect_timeout=2, isolate=False)
    assert time.monotonic() - start < 60
    assert read_results(tmp_path / "out") == []


def test_the_cli_reports_an_unreachable_scheduler(tmp_path, capsys):
    from autograder.cli import main

    subs = tmp_path / "subs"
    _batch(subs, 1)
    rc = main(["grade", ASSIGNMENT, str(subs), "--out", str(tmp_path / "out"), "--no-isolation",
               "--scheduler", "tcp://127.0.0.1:9"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and "dask scheduler" in err


def test_workers_with_another_secret_are_refused(cluster, tmp_path, monkeypatch):
    address, _ = cluster
    subs = tmp_path / "subs"
    _batch(subs, 1)
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
