"""Where one student's grading time goes in ``course grade`` (isolation on, one at a time).

    .venv/bin/python benchmarks/grading_costs.py [--assignments 01_metrics ...] [--students 3]

For each chapter, grades ``--students`` copies of the solution one after another with
``autograder.grade.grade(workers=1)``, with each step timed from outside
(``trusted_grade``, ``run_nbgrader``, ``publish_feedback``: the module's own functions,
wrapped), then splits those steps with sandboxed runs of their parts:

- sandbox start: ``/bin/true`` in the sandbox;
- interpreter + imports: ``python -I -c "import numpy, torch"`` in the sandbox (the harness's
  imports), and ``python -P`` importing nbgrader's API (the nbgrader step's);
- nbgrader step, inside the sandbox: nbgrader start (imports + API), kernel start (a one-cell
  notebook through nbclient), ``autograde`` (kernel start + the notebook's execution +
  gradebook), ``generate_feedback``.

Prints a table of medians (seconds per student); ``--markdown`` prints it as Markdown. A
script, not a test: the figures depend on the machine and its load.

``--preload-both`` times the steps twice per chapter in the same run, each student's sandboxed
Pythons started by bubblewrap (``COURSE_PRELOAD=0``) and forked from the preloads
(``autograder.isolation.preload``, the default as root), and leaves out the parts (which split the
bubblewrap-started steps only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder import grade as grade_module  # noqa: E402
from autograder.exercises import registry  # noqa: E402
from autograder.store.samples import sample_notebook  # noqa: E402

_DRIVER = r'''
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from course.lean_imports import skip_unused_format_checkers
skip_unused_format_checkers()  # as autograder.inside.nbgrader_worker does
from autograder.store.release import nbgrader_api
api = nbgrader_api(Path.cwd())
t1 = time.perf_counter()
import nbclient, nbformat
nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell("1")]
nbclient.NotebookClient(nb, kernel_name="python3").execute()
t2 = time.perf_counter()
assignment, student = sys.argv[1:3]
ok = api.autograde(assignment, student, force=True, create=True)["success"]
t3 = time.perf_counter()
ok = ok and api.generate_feedback(assignment, student, force=True)["success"]
t4 = time.perf_counter()
Path("driver_times.json").write_text(json.dumps({
    "ok": ok, "nbgrader start": t1 - t0, "kernel start (empty notebook)": t2 - t1,
    "autograde": t3 - t2, "generate_feedback": t4 - t3}))
'''


def _timed(store: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            store.setdefault(name, []).append(time.perf_counter() - start)
    return wrapper


def steps_of_grade(assignment: str, n: int, work: Path) -> dict[str, list[float]]:
    """Time trusted_grade, run_nbgrader, publish_feedback and the whole row, per student."""
    exercise = registry(ROOT)[assignment]
    subs = work / "subs"
    for i in range(n):
        (subs / f"s{i}").mkdir(parents=True)
        nbformat.write(sample_notebook(ROOT, assignment, "solution"),
                       subs / f"s{i}" / exercise.notebook_name)
    times: dict[str, list[float]] = {}
    saved = {name: getattr(grade_module, name)
             for name in ("trusted_grade", "run_nbgrader", "publish_feedback")}
    try:
        for name, fn in saved.items():
            setattr(grade_module, name, _timed(times, name, fn))
        rows = grade_module.grade(assignment, subs, work / "out", root=ROOT, workers=1)
    finally:
        for name, fn in saved.items():
            setattr(grade_module, name, fn)
    assert all(r.status == "graded" and r.score == r.max_score for r in rows), rows
    times["whole student (row.seconds)"] = [r.seconds for r in rows]
    return times


def parts(assignment: str, n: int, work: Path) -> dict[str, list[float]]:
    """The sandbox's own cost, the interpreters' imports, and the nbgrader step's insides."""
    from autograder.isolation.sandbox import run_sandboxed
    from autograder.settings import NBGRADER_MEMORY_MB
    from autograder.steps.nbgrader_step import scratch_course, step_env

    exercise = registry(ROOT)[assignment]
    template = work / "out" / "work" / "_template"
    times: dict[str, list[float]] = {}
    for i in range(n):
        box = work / f"box{i}"
        for name, argv in (("sandbox start (/bin/true)", ["/bin/true"]),
                           ("python -I + import numpy, torch (sandboxed)",
                            [sys.executable, "-I", "-c", "import numpy, torch"])):
            res = run_sandboxed(argv, workdir=box, timeout=120)
            assert res.ok, res
            times.setdefault(name, []).append(res.seconds)
        folder = work / f"nbg{i}"
        notebook = work / f"nb{i}" / exercise.notebook_name
        notebook.parent.mkdir()
        nbformat.write(sample_notebook(ROOT, assignment, "solution"), notebook)
        scratch_course(folder, template, assignment, "s", notebook)
        (folder / "driver.py").write_text(_DRIVER)
        res = run_sandboxed([sys.executable, "-P", "driver.py", assignment, "s"],
                            workdir=folder, timeout=600, env=step_env(folder),
                            memory_mb=NBGRADER_MEMORY_MB,
                            readable=[p for p in ("/etc/fonts",) if Path(p).is_dir()])
        inner = json.loads((folder / "driver_times.json").read_text())
        assert inner.pop("ok"), res.stderr[-2000:]
        for name, value in inner.items():
            times.setdefault(f"nbgrader step: {name}", []).append(value)
        times.setdefault("nbgrader step: sandbox + interpreter start, exit", []).append(
            res.seconds - sum(inner.values()))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", nargs="*", default=list(registry(ROOT)))
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--preload-both", action="store_true")
    args = parser.parse_args(argv)
    table: dict[str, dict[str, float]] = {}
    for assignment in args.assignments:
        for mode in ("bubblewrap", "preloaded") if args.preload_both else ("",):
            if mode:
                os.environ["COURSE_PRELOAD"] = "1" if mode == "preloaded" else "0"
            column = f"{assignment} ({mode})" if mode else assignment
            with tempfile.TemporaryDirectory(prefix="course-costs-") as tmp:
                work = Path(tmp)
                found = steps_of_grade(assignment, args.students, work)
                if not mode:
                    found.update(parts(assignment, args.students, work))
            table[column] = {k: statistics.median(v) for k, v in found.items()}
            print(f"{column}: " + json.dumps({k: round(v, 2) for k, v in
                                              table[column].items()}), flush=True)
    names = list(dict.fromkeys(k for col in table.values() for k in col))
    load = os.getloadavg()
    if args.markdown:
        print("| step (median s per student) | " + " | ".join(table) + " |")
        print("|---|" + "---|" * len(table))
        for name in names:
            print(f"| {name} | " + " | ".join(f"{table[a].get(name, float('nan')):.2f}"
                                              for a in table) + " |")
    else:
        for name in names:
            print(f"{name:55s}" + "".join(f"{table[a].get(name, float('nan')):10.2f}"
                                          for a in table))
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
