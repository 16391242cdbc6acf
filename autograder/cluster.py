"""``course grade --scheduler tls://HOST:8786``: the same per-student grading on a Dask cluster.

Every connection is TLS with the course's certificates (``cluster_tls.py``: the ``Security``
passed in here); autograder/CLUSTER.md is the recipe.

The machine that runs ``course grade`` stays the only writer of results.jsonl, grades.csv and
the feedback folder. Each student becomes one Dask task that carries plain data: the
student's notebook bytes, the prepared nbgrader course folder (a small tar, unpacked once per
worker) and the exercise. A worker grades the student exactly as the local pool does
(``student.grade_one``: trusted check and sandboxed nbgrader in a scratch folder under its
``--local-directory``) and returns the row as a dict plus the feedback pages' bytes; the
scratch folder is removed before the task returns.

Faults:

- a worker lost mid-batch: the scheduler runs its tasks again on the workers that are left;
  only the result that reaches this machine is recorded, so no row is lost or doubled. A
  student whose task killed ``allowed-failures`` workers in a row (Dask's default: 3) gets an
  ``grader-error`` row (not a score), and a rerun tries again;
- a scheduler that cannot be reached within ``connect_timeout``, a cluster without workers, or
  workers that cannot isolate, run another version of the grader or use another
  grading secret: :class:`ClusterError` before anyone is graded;
- an interruption: the tasks are cancelled; what was recorded stays recorded, and a rerun
  resumes from results.jsonl as on one machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import shutil
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ClusterError", "check_cluster", "grade_on_cluster", "write_feedback"]

_FEEDBACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.html")
_unpack_lock = threading.Lock()


class ClusterError(RuntimeError):
    """The Dask cluster cannot grade this batch (unreachable, no workers, misconfigured)."""


# --------------------------------------------------------------------------- both sides


def _worker_report() -> dict:
    """What a worker says about itself before it gets any student (run on every worker)."""
    from autograder.isolation.sandbox import isolation_available
    from autograder.protocol import grader_fingerprint

    ok, why = isolation_available()
    return {"isolation": ok, "why": why, "fingerprint": grader_fingerprint()}


# --------------------------------------------------------------------------- worker side


def _unpack_template(scratch: Path, tar_bytes: bytes) -> Path:
    """The course folder from its tar, unpacked once per worker (keyed by its hash)."""
    key = hashlib.sha256(tar_bytes).hexdigest()[:16]
    folder = scratch / "templates" / key
    with _unpack_lock:
        if not (folder / ".complete").exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
                tar.extractall(folder, filter="data")
            (folder / ".complete").touch()
    return folder


def _local_exercise(exercise):
    """The exercise with its sandbox-side file found in this machine's ``course`` package."""
    code = exercise.exercise.sandbox_code
    if code is None:
        return exercise
    from autograder import exercises

    here = Path(exercises.__file__).resolve().parent / Path(code).name
    return dataclasses.replace(exercise,
                               exercise=dataclasses.replace(exercise.exercise, sandbox_code=here))


def grade_task(job: dict) -> dict:
    """Grade one student on a Dask worker; returns the row (a dict) and the feedback pages."""
    from distributed import get_worker

    from autograder.store.submissions import Submission
    from autograder.student import Context, grade_one

    worker = get_worker()
    scratch = Path(worker.local_directory) / "course-grade"
    template = _unpack_template(scratch, job["template"])
    exercise = _local_exercise(job["exercise"])
    folder = scratch / "jobs" / f"{job['student']}-{uuid.uuid4().hex[:8]}"
    try:
        notebook = folder / "in" / exercise.notebook_name
        notebook.parent.mkdir(parents=True)
        notebook.write_bytes(job["notebook"])
        ctx = Context(exercise, template, folder / "out", job["isolate"], job["timeout"],
                       job["probe_seconds"], job.get("probe_cpu_seconds"))
        row = grade_one(Submission(job["student"], notebook), job["sha256"], ctx)
        pages = folder / "out" / "feedback" / job["student"] / exercise.assignment
        feedback = None  # not published (no nbgrader report): leave the old pages alone
        if pages.is_dir():
            feedback = {p.name: p.read_bytes() for p in sorted(pages.glob("*.html"))
                        if p.is_file() and not p.is_symlink()}
        return {"row": dataclasses.asdict(row), "feedback": feedback, "worker": worker.address}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- client side


def _tar_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buf.getvalue()


def _connect(address: str, security, connect_timeout: float, worker_timeout: float):
    """A Client of the scheduler at ``address`` with ``security`` (Dask's ``Security``), once
    at least one worker has joined."""
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ClusterError("--scheduler needs dask[distributed]: pip install "
                           "'dask[distributed]'") from err
    try:
        client = Client(address, security=security, timeout=f"{connect_timeout}s",
                        set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {connect_timeout:g} s ({err}). "
            "Start one with `dask scheduler` on that machine (port 8786), check the address, "
            "the firewall and that it has the course's certificates (autograder/CLUSTER.md), "
            "or leave out --scheduler to grade on this machine.") from err
    try:
        client.wait_for_workers(1, timeout=worker_timeout)
    except (TimeoutError, OSError) as err:
        client.close()
        raise ClusterError(
            f"no Dask worker joined the scheduler at {address} within {worker_timeout:g} s: "
            f"start workers with `dask worker {address}` and the course's worker certificate "
            "(autograder/CLUSTER.md) on machines that have the course installed and "
            "bubblewrap") from err
    return client


def check_cluster(address: str, security, *, isolate: bool, connect_timeout: float = 10,
                  worker_timeout: float = 60) -> None:
    """Fail fast, before any work here: the scheduler answers (through ``security``), has
    workers, and they can grade (ClusterError otherwise)."""
    client = _connect(address, security, connect_timeout, worker_timeout)
    try:
        _check_workers(client, isolate)
    finally:
        client.close()


def _check_workers(client, isolate: bool) -> None:
    """Every worker isolates (when asked) and runs this grader with this secret."""
    from autograder import protocol

    mine = protocol.grader_fingerprint()
    problems = []
    for address, report in sorted(client.run(_worker_report).items()):
        if isolate and not report["isolation"]:
            problems.append(f"{address} cannot isolate student code: {report['why']}")
        if report["fingerprint"] != mine:
            problems.append(f"{address} runs another version of autograder/ or has "
                            "another grading secret than this machine (scores could differ): "
                            f"copy {protocol.secret_path()} to each worker machine, or set "
                            "COURSE_GRADING_SECRET on all of them")
    if problems:
        raise ClusterError("these Dask workers cannot grade this batch:\n  "
                           + "\n  ".join(problems))


def write_feedback(out_dir: Path, student: str, assignment: str, pages: dict) -> None:
    """Write a worker's feedback pages (names checked: they come over the network)."""
    dest = out_dir / "feedback" / student / assignment
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, data in pages.items():
        if isinstance(name, str) and _FEEDBACK_NAME.fullmatch(name) and isinstance(data, bytes):
            (dest / name).write_bytes(data)


def _lost_row(sub, sha: str, exercise, err: BaseException):
    from autograder.store.results import GRADER_ERROR, GradeRow

    return GradeRow.unscored(sub.student_id, exercise,
                             f"grader error (not the student's): the Dask workers grading this "
                             f"student kept dying ({type(err).__name__}: {str(err)[:200]}); "
                             "rerun to try again", sha256=sha, status=GRADER_ERROR)


def grade_on_cluster(address: str, security, todo: list, ctx, *, connect_timeout: float = 10,
                     worker_timeout: float = 60) -> Iterator:
    """Grade ``todo`` ([(Submission, sha256)]) on the cluster at ``address``, connected with
    ``security``; yield each GradeRow as it arrives, its feedback pages already written under
    ``ctx.out_dir``."""
    from autograder.store.results import GradeRow

    if not todo:
        return
    client = _connect(address, security, connect_timeout, worker_timeout)
    futures = {}
    try:
        _check_workers(client, ctx.isolate)
        from distributed import as_completed

        template = _tar_folder(ctx.template)
        for sub, sha in todo:
            job = {"student": sub.student_id, "sha256": sha, "template": template,
                   "exercise": ctx.exercise, "isolate": ctx.isolate, "timeout": ctx.timeout,
                   "probe_seconds": ctx.probe_seconds, "probe_cpu_seconds": ctx.probe_cpu_seconds,
                   "notebook": Path(sub.notebook).read_bytes() if sub.notebook else b""}
            if sub.notebook is None:  # nothing to send: the row is the submission's reason
                yield GradeRow.unscored(sub.student_id, ctx.exercise, sub.reason, sha256=sha)
                continue
            key = f"course-grade-{ctx.exercise.assignment}-{sub.student_id}-{uuid.uuid4().hex}"
            futures[client.submit(grade_task, job, key=key, pure=False)] = (sub, sha)
        for future in as_completed(list(futures), loop=client.loop):
            sub, sha = futures[future]
            try:
                result = future.result()
            except Exception as err:  # KilledWorker, or the task itself failed
                yield _lost_row(sub, sha, ctx.exercise, err)
                continue
            row = GradeRow(**{k: v for k, v in result["row"].items()
                              if k in {f.name for f in dataclasses.fields(GradeRow)}})
            if isinstance(result["feedback"], dict):
                write_feedback(ctx.out_dir, sub.student_id, row.assignment, result["feedback"])
            yield row
    finally:  # on Ctrl-C or an error: nothing more runs for this batch
        if futures:
            client.cancel(list(futures), force=True)
        client.close()
