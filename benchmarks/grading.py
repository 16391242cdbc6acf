"""Benchmark: serial `nbgrader autograde` against `course grade` (isolated, parallel).

    .venv/bin/python benchmarks/grading.py [--students 20] [--workers N] [--out DIR]
                                            [--assignments 01_metrics ...] [--note TEXT]

Generates ``--students`` submissions for each graded chapter (about two thirds the correct
solution, the rest the wrong implementations of autograder/samples/<chapter>/ in turn, each
put into the released notebook), then grades them twice:

1. nbgrader as it comes: one course directory, every submission under submitted/, and
   ``nbgrader autograde <chapter>`` run once per chapter (one notebook after another, no
   isolation, no feedback);
2. ``course grade <chapter> SUBMISSIONS --out DIR`` with isolation on and ``--workers`` (default:
   the number of CPU cores): sandboxed nbgrader + feedback + the trusted check per student;
3. ``course grade --scheduler`` for one chapter's batch (``--dask``) on a local Dask cluster,
   with 1 and then 2 worker processes.

It prints and writes both times, their ratio and the machine to benchmarks/GRADING.md (a
script, not a test: the numbers depend on the machine and on what else runs on it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.exercises import registry  # noqa: E402
from autograder.store.samples import mistakes, sample_notebook  # noqa: E402

EXERCISES = registry(ROOT)
KEEP_FROM = "## Cost per student"


def make_submissions(assignment: str, n: int, dest: Path) -> dict[str, str]:
    """dest/<student>/<notebook>: 2 in 3 correct, the others wrong. Returns student -> kind."""
    wrong = mistakes(ROOT, assignment)
    kinds = {}
    for i in range(n):
        kind = "solution" if (i % 3 != 2 or not wrong) else wrong[(i // 3) % len(wrong)]
        student = f"student{i + 1:02d}"
        (dest / student).mkdir(parents=True)
        nbformat.write(sample_notebook(ROOT, assignment, kind),
                       dest / student / EXERCISES[assignment].notebook_name)
        kinds[student] = kind
    return kinds


def time_nbgrader(assignments: list[str], subs: dict[str, Path], work: Path) -> dict[str, float]:
    """Serial `nbgrader autograde` in one course directory, per chapter."""
    from autograder.store.release import prepare_course

    course = prepare_course(ROOT, assignments, work / "nbgrader-course")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    times = {}
    for assignment in assignments:
        for student_dir in sorted(subs[assignment].iterdir()):
            target = course / "submitted" / student_dir.name / assignment
            target.mkdir(parents=True)
            for nb in student_dir.glob("*.ipynb"):
                shutil.copyfile(nb, target / nb.name)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", assignment,
                               "--force"], cwd=course, env=env, capture_output=True, text=True,
                              check=False)
        times[assignment] = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"nbgrader autograde {assignment} failed")
        print(f"  nbgrader autograde {assignment}: {times[assignment]:.1f} s", flush=True)
    return times


def measure_budgets(assignments: list[str], work: Path) -> dict[str, float]:
    """What `course grade` does once per machine and chapter: grade the reference solution
    to set the time budgets (autograder/steps/budget.py), into the benchmark's own cache."""
    times = {}
    empty = work / "no-submissions"
    empty.mkdir(exist_ok=True)
    for assignment in assignments:
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "course"), "grade", assignment,
                        str(empty), "--out", str(work / "budgets" / assignment)], cwd=ROOT,
                       capture_output=True, check=True)
        times[assignment] = time.perf_counter() - start
        print(f"  budgets of {assignment} (reference solution, once per machine): "
              f"{times[assignment]:.1f} s", flush=True)
    return times


def time_course_grade(assignments: list[str], subs: dict[str, Path], work: Path,
                      workers: int) -> tuple[dict[str, float], dict[str, list]]:
    times, rows = {}, {}
    for assignment in assignments:
        out = work / "course-grade" / assignment
        start = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "course"), "grade", assignment,
                               str(subs[assignment]), "--out", str(out), "--workers",
                               str(workers), "--db", f"sqlite:///{out}/gradebook.db"],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        times[assignment] = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"course grade {assignment} failed")
        lines = (out / "grades.csv").read_text().splitlines()[1:]
        rows[assignment] = lines
        print(f"  course grade {assignment}: {times[assignment]:.1f} s "
              f"({len(lines)} rows)", flush=True)
    return times, rows


def check_rows(rows: dict[str, list[str]], kinds: dict[str, dict[str, str]]) -> None:
    """Every row graded and right: a solution gets full marks and no flag, a mistake less
    (a fast wrong grading is no result). A mistake may be flagged: nbgrader's visible tests
    can pass what the trusted checks fail."""
    import csv

    for assignment, lines in rows.items():
        found = list(csv.reader(lines))
        if len(found) != len(kinds[assignment]):
            raise SystemExit(f"{assignment}: {len(found)} rows for {len(kinds[assignment])}")
        for student, _, score, max_score, status, reason, _, flagged in found:
            kind = kinds[assignment][student]
            full = float(score) == float(max_score)
            solution = kind == "solution"
            if status != "graded" or full != solution or (solution and flagged == "True"):
                raise SystemExit(f"{assignment} {student} ({kind}): {score}/{max_score} "
                                 f"{status} flagged={flagged} {reason}")


def _dask(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def time_dask(assignment: str, subs: Path, work: Path) -> dict[int, float]:
    """``course grade --scheduler`` on a local scheduler with 1, then 2 worker processes (one
    thread each, each with its own scratch folder), over TLS with certificates made for the
    run (autograder/CLUSTER.md): the same batch, fresh output folders."""
    import json
    import signal

    from autograder.cluster_tls import make_certs, tls_security

    certs = work / "dask-tls"
    make_certs(certs)
    ca = ["--tls-ca-file", str(certs / "ca.pem")]
    times = {}
    for n in (1, 2):
        info = work / f"dask{n}" / "scheduler.json"
        info.parent.mkdir(parents=True)
        procs = [_dask(["scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
                        "--no-dashboard", "--scheduler-file", str(info), *ca,
                        "--tls-cert", str(certs / "scheduler.pem"),
                        "--tls-key", str(certs / "scheduler-key.pem")],
                       info.parent / "scheduler.log")]
        try:
            while not info.exists():
                time.sleep(0.2)
            address = json.loads(info.read_text())["address"]
            for i in range(n):
                scratch = info.parent / f"scratch{i}"
                scratch.mkdir()
                procs.append(_dask(["worker", address, "--nthreads", "1", "--no-nanny",
                                    "--no-dashboard", "--local-directory", str(scratch), *ca,
                                    "--tls-cert", str(certs / "worker.pem"),
                                    "--tls-key", str(certs / "worker-key.pem")],
                                   info.parent / f"worker{i}.log"))
            from distributed import Client

            with Client(address, security=tls_security(certs), timeout="30s") as client:
                client.wait_for_workers(n, timeout=120)
            out = info.parent / "out"
            start = time.perf_counter()
            proc = subprocess.run([str(Path(sys.executable).parent / "course"), "grade",
                                   assignment, str(subs), "--out", str(out), "--scheduler",
                                   address, "--tls", str(certs)], cwd=ROOT,
                                  capture_output=True, text=True, check=False)
            times[n] = time.perf_counter() - start
            if proc.returncode not in (0, 1):
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"course grade --scheduler ({n} workers) failed")
            print(f"  course grade --scheduler, {n} worker process(es): {times[n]:.1f} s",
                  flush=True)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--assignments", nargs="*", default=list(EXERCISES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "GRADING.md")
    parser.add_argument("--note", default="", help="a line about the machine's load")
    parser.add_argument("--dask", default="01_metrics", metavar="CHAPTER",
                        help="also grade this chapter's batch on a local Dask cluster with 1, "
                        "then 2 worker processes ('' to skip)")
    args = parser.parse_args(argv)

    from autograder.isolation.sandbox import isolation_available

    ok, why = isolation_available()
    if not ok:
        raise SystemExit(f"course grade needs isolation for this benchmark: {why}")
    with tempfile.TemporaryDirectory(prefix="course-bench-") as tmp:
        work = Path(tmp)
        subs, kinds = {}, {}
        for assignment in args.assignments:
            subs[assignment] = work / "submissions" / assignment
            kinds[assignment] = make_submissions(assignment, args.students, subs[assignment])
        print(f"{args.students} students x {len(args.assignments)} chapters; "
              f"course grade with {args.workers} workers", flush=True)
        print("serial nbgrader autograde:", flush=True)
        t_nb = time_nbgrader(args.assignments, subs, work)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # measured in this run
        print("course grade, once per machine and chapter:", flush=True)
        t_budget = measure_budgets(args.assignments, work)
        print("course grade (isolated):", flush=True)
        t_cg, rows = time_course_grade(args.assignments, subs, work, args.workers)
        check_rows(rows, kinds)
        t_dask = {}
        if args.dask:
            print(f"course grade --scheduler ({args.dask}, local Dask cluster):", flush=True)
            if args.dask not in subs:
                subs[args.dask] = work / "submissions" / args.dask
                make_submissions(args.dask, args.students, subs[args.dask])
            t_dask = time_dask(args.dask, subs[args.dask], work)
        load = os.getloadavg()

    total_nb, total_cg = sum(t_nb.values()), sum(t_cg.values())
    ratio = total_nb / total_cg if total_cg else float("nan")
    n = args.students * len(args.assignments)
    print(f"\nserial nbgrader: {total_nb:.1f} s; course grade: {total_cg:.1f} s; "
          f"nbgrader / course grade = {ratio:.2f}")
    mix = {a: {k: list(kinds[a].values()).count(k) for k in sorted(set(kinds[a].values()))}
           for a in args.assignments}
    table = "\n".join(
        f"| {a} | {args.students} | {t_nb[a]:.1f} | {t_cg[a]:.1f} | "
        f"{t_nb[a] / t_cg[a]:.2f} |" for a in args.assignments)
    dask_text = "" if not t_dask else f"""
**On a Dask cluster** (`course grade {args.dask} ... --scheduler tls://127.0.0.1:PORT`, a local
scheduler and `dask worker --nthreads 1` processes, each with its own scratch folder; the same
{args.students} submissions, same run): 1 worker process {t_dask[1]:.1f} s, 2 worker processes
{t_dask[2]:.1f} s ({t_dask[1] / t_dask[2]:.2f}x).
"""
    budget_text = ", ".join(f"{a} {t:.1f}" for a, t in t_budget.items())
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    text = f"""# Grading benchmark

`benchmarks/grading.py` ({when}): {args.students} generated students x
{len(args.assignments)} graded chapters = {n} notebooks. Serial `nbgrader autograde` (one
course directory, no isolation, no feedback) against `course grade` with isolation on
(bubblewrap sandbox, sandboxed nbgrader + feedback + the trusted check per student) and
{args.workers} workers.

Machine: {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()},
{platform.system()} {platform.release()}.{(" " + args.note) if args.note else ""}

| chapter | students | serial nbgrader (s) | course grade (s) | ratio |
|---|---|---|---|---|
{table}
| **total** | {n} | **{total_nb:.1f}** | **{total_cg:.1f}** | **{ratio:.2f}** |

Ratio = serial nbgrader time / `course grade` time (above 1: `course grade` is faster). Every
row of `course grade` was checked after its run: graded, full marks and no flag for each
solution, less for each mistake.
Before the timed runs, `course grade` measured each chapter's time budgets on this machine by
grading the reference solution once (what it does the first time it grades a chapter on a
machine; cached afterwards): {budget_text} s.
Submissions per chapter: {mix}. Load average (1, 5, 15 min) when the runs ended:
{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores.
{dask_text}
Re-run: `.venv/bin/python benchmarks/grading.py --note "..."`.
"""
    keep = ""  # the sections written by hand (cost breakdown) survive a re-run
    if args.out.exists():
        old = args.out.read_text(encoding="utf-8")
        keep = old[old.index(KEEP_FROM):] if KEEP_FROM in old else ""
    args.out.write_text(text + ("\n" + keep if keep else ""), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
