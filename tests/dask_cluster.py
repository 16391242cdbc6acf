"""A Dask cluster on localhost for the tests: a scheduler and workers started as ``dask``
processes, every one with the course's TLS certificates (autograder/CLUSTER.md), and the
chapter-1 submissions they grade."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from autograder.cluster_tls import tls_security
from autograder.exercises import exercise_for
from autograder.store.samples import ci_parameters_of, mistakes, sample_notebook

__all__ = ["ASSIGNMENT", "ROOT", "batch", "start", "stop", "tls_args", "tls_cluster", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_metrics"
SMALL = ci_parameters_of(ROOT, ASSIGNMENT)  # experiments at CI size: rows and faults count here
DASK = Path(sys.executable).parent / "dask"


def wait_for(predicate, seconds: float, what: str):
    """Poll ``predicate`` until it returns something true, and return that."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {seconds:g} s waiting for {what}")


def start(args: list[str], log: Path) -> subprocess.Popen:
    """``dask ARGS`` in a session of its own, its output into ``log``."""
    return subprocess.Popen([str(DASK), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "COURSE_PROGRESS": "0"})


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tls_args(certs: Path, role: str, ca: Path | None = None) -> list[str]:
    """The ``dask scheduler`` / ``dask worker`` options of the recipe: ``role``'s certificate
    in ``certs``, the peers checked against ``ca`` (default: the CA of ``certs``)."""
    return ["--tls-ca-file", str(ca or certs / "ca.pem"), "--tls-cert", str(certs / f"{role}.pem"),
            "--tls-key", str(certs / f"{role}-key.pem")]


@contextlib.contextmanager
def tls_cluster(folder: Path, certs: Path, names=("a", "b")):
    """A TLS scheduler and one single-thread worker per name, logs and scratch folders in
    ``folder``; yields (address, {name: (process, scratch folder)}) once all have joined."""
    info = folder / "scheduler.json"
    procs = [start(["scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
                    "--no-dashboard", "--scheduler-file", str(info),
                    *tls_args(certs, "scheduler")], folder / "scheduler.log")]
    workers = {}
    try:
        address = wait_for(lambda: info.exists() and json.loads(info.read_text())["address"],
                           60, "the scheduler")
        for name in names:
            scratch = folder / f"scratch-{name}"
            scratch.mkdir()
            proc = start(["worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
                          "--local-directory", str(scratch), "--no-dashboard",
                          *tls_args(certs, "worker")], folder / f"worker-{name}.log")
            procs.append(proc)
            workers[name] = (proc, scratch)
        from distributed import Client

        with Client(address, security=tls_security(certs), timeout="30s") as client:
            client.wait_for_workers(len(names), timeout=60)
        yield address, workers
    finally:
        for proc in reversed(procs):
            stop(proc)


def batch(folder: Path, n: int) -> dict[str, str]:
    """n students: the solution and the sample mistakes in turn; returns student -> kind."""
    kinds = ["solution", *mistakes(ROOT, ASSIGNMENT)]
    notebook = exercise_for(ASSIGNMENT, ROOT).notebook_name
    students = {}
    for i in range(n):
        student, kind = f"s{i:02d}", kinds[i % 2 and 1 + (i // 2) % (len(kinds) - 1)]
        (folder / student).mkdir(parents=True)
        nbformat.write(sample_notebook(ROOT, ASSIGNMENT, kind, SMALL), folder / student / notebook)
        students[student] = kind
    return students
