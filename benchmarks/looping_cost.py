"""What a submission that never returns costs ``course grade``, with each kind of budget.

    .venv/bin/python benchmarks/looping_cost.py [--runs spin:cpu spin:wall sleep:cpu ...]

Each run grades one chapter-1 submission whose ``f_score`` loops forever (every graded cell
and most trusted probes call it), alone, with ``grade(..., workers=1)``, isolation and budgets
on. The loop either spins (``while True: pass``) or waits (``time.sleep(0.05)`` in the loop).
``cpu``: the budgets as ``course grade`` sets them (CPU time and clock time); ``wall``: the CPU
budgets taken out, so only the clock-time ones are left (``course grade`` before the CPU
budgets). Runs go one after another in the order given (alternate them for a side-by-side
figure); one JSON line each: the student's grading time (``row.seconds``), the score and the
cells that failed. A script, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _wall_only() -> None:
    """Make ``course grade`` use the clock-time budgets alone (no CPU-time budgets)."""
    import autograder.steps.budget as budget

    measured = budget.budgets_for

    def without_cpu(*args, **kwargs):
        found = measured(*args, **kwargs)
        found.cells_cpu, found.other_cells_cpu, found.probe_cpu = {}, 0.0, None
        return found

    budget.budgets_for = without_cpu


def grade_looping(loop: str, limits: str) -> dict:
    import nbformat

    import autograder.steps.budget as budget
    from autograder.exercises import exercise_for
    from autograder.grade import grade
    from autograder.store.samples import sample_notebook, solution_code

    measured = budget.budgets_for
    if limits == "wall":
        _wall_only()
    try:
        ex = exercise_for("01_metrics", ROOT)
        body = "pass" if loop == "spin" else "time.sleep(0.05)"
        looping = solution_code(ROOT, "01_metrics") + (
            "\n\nimport time\n\n\ndef f_score(precision, recall, beta=1.0):\n    while True:\n"
            f"        {body}\n")
        nb = sample_notebook(ROOT, "01_metrics", "solution")
        for cell in nb.cells:
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == ex.solution_id:
                cell.source = looping
        with tempfile.TemporaryDirectory(prefix="looping-cost-") as tmp:
            (Path(tmp) / "subs" / "loops").mkdir(parents=True)
            nbformat.write(nb, Path(tmp) / "subs" / "loops" / ex.notebook_name)
            start = time.monotonic()
            row = grade("01_metrics", Path(tmp) / "subs", Path(tmp) / "out", root=ROOT,
                        workers=1, timeout=600)[0]
            total = time.monotonic() - start
    finally:
        budget.budgets_for = measured
    return {"loop": loop, "limits": limits, "student_seconds": round(row.seconds, 1),
            "with_setup_seconds": round(total, 1), "score": row.score, "max": row.max_score,
            "flagged": row.flagged,
            "failed": sorted(g for g, c in row.cells.items() if not c["passed"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["spin:wall", "spin:cpu", "sleep:cpu",
                                                      "spin:cpu", "spin:wall"],
                        help="LOOP:LIMITS pairs, LOOP spin or sleep, LIMITS cpu or wall")
    args = parser.parse_args()
    for run in args.runs:
        loop, _, limits = run.partition(":")
        if loop not in ("spin", "sleep") or limits not in ("cpu", "wall"):
            parser.error(f"{run!r}: want LOOP:LIMITS with LOOP spin|sleep, LIMITS cpu|wall")
        print(json.dumps(grade_looping(loop, limits)), flush=True)


if __name__ == "__main__":
    main()
