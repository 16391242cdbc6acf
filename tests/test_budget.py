"""Time budgets from the reference solution (autograder/steps/budget.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

from autograder import settings
from autograder.inside.nbgrader_worker import CpuWatch, cpu_seconds
from autograder.steps import budget
from autograder.steps.budget import (
    BudgetError,
    Budgets,
    cell_budget_config,
    cell_times,
    clamp_budget,
    probe_cpu_times,
    probe_times,
)

ROOT = Path(__file__).resolve().parents[1]


def test_a_budget_is_a_multiple_of_the_reference_with_a_floor_and_a_cap():
    assert clamp_budget(0.01, 30, 300) == 30  # floor
    assert clamp_budget(7.0, 30, 300) == 7.0 * settings.MULTIPLE
    assert clamp_budget(100.0, 30, 300) == 300  # never above the flat limit


def test_cell_times_come_from_nbclient_timestamps(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("import x"),
                nbformat.v4.new_code_cell("assert f(1) == 1"), nbformat.v4.new_code_cell("")]
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-11-27T10:00:00.000000Z",
                                         "shell.execute_reply": "2026-11-27T10:00:04.500000Z"}
    nb.cells[2].metadata["execution"] = {"iopub.execute_input": "2026-11-27T10:00:05.000000Z",
                                         "shell.execute_reply": "2026-11-27T10:00:05.250000Z"}
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "grade_id": "test_f", "points": 1}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert cell_times(tmp_path / "nb.ipynb") == [(None, 4.5), ("test_f", 0.25)]
    with pytest.raises(BudgetError, match="no CPU time noted for cell"):
        cell_times(tmp_path / "nb.ipynb", cpu=True)  # the CPU budgets are never guessed
    nb.cells[1].metadata["course"] = {"cpu_seconds": 4.1}
    nb.cells[2].metadata["course"] = {"cpu_seconds": 0.2}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert cell_times(tmp_path / "nb.ipynb", cpu=True) == [(None, 4.1), ("test_f", 0.2)]


def test_probe_times_are_the_gaps_between_result_files(tmp_path):
    import os

    for i, pid in enumerate(["exec", "p1", "p2"]):
        (tmp_path / f"{pid}.json").write_text("{}")
        os.utime(tmp_path / f"{pid}.json", ns=(0, 10**9 * (10 + 3 * i)))
    assert probe_times(tmp_path, ["p1", "p2"]) == [3.0, 3.0]
    for pid, cpu in (("p1", 0.5), ("p2", 1.25)):
        (tmp_path / f"{pid}.json").write_text(json.dumps({"status": "ok", "cpu": cpu}))
    assert probe_cpu_times(tmp_path, ["p1", "p2"]) == [0.5, 1.25]


def test_nbgrader_config_gives_each_cell_its_budget():
    c = Config()
    text = cell_budget_config(Budgets(cells={"test_a": 42.0, "bad id'); import os; ('": 1.0},
                                      other_cells=95.5,
                                      cells_cpu={"test_a": 5.0, "bad id'); import os; ('": 1.0},
                                      other_cells_cpu=13.6))
    exec(compile(text, "nbgrader_config.py", "exec"), {"c": c})
    func = c.Execute.timeout_func
    assert func({"metadata": {"nbgrader": {"grade_id": "test_a"}}}) == 42
    assert func({"metadata": {"nbgrader": {"grade_id": "unknown"}}}) == 95
    assert func({"metadata": {}}) == 95
    assert "import os" not in text  # only plain grade ids are written into the config
    assert c.GuardedExecute.cpu_budgets == {"test_a": 5.0}
    assert c.GuardedExecute.cpu_other == 13.6


def test_the_worker_reads_its_cpu_budgets_from_the_config():
    """The worker's GuardedExecute is a configurable class: nbgrader_config.py reaches it."""
    from nbgrader.preprocessors import Execute

    from autograder.inside.nbgrader_worker import guarded_execute

    c = Config()
    exec(compile(cell_budget_config(Budgets(cells_cpu={"test_a": 5.0}, other_cells_cpu=7.5)),
                 "nbgrader_config.py", "exec"), {"c": c})
    guarded = guarded_execute(Execute)(config=c)
    assert guarded.cpu_budgets == {"test_a": 5.0} and guarded.cpu_other == 7.5
    assert guarded_execute(Execute)().cpu_other == 0  # no budgets: no CPU limit


_SPIN = """
import signal, sys, time
def stop(*_):
    print("interrupted", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
while True:
    MODE
"""


def _process(mode: str, child: bool = False):
    """A Python process that spins or sleeps until SIGINT (``child``: a child of it spins)."""
    import subprocess
    import sys

    code = _SPIN.replace("MODE", "pass" if mode == "spin" else "time.sleep(0.05)")
    if child:  # the parent waits on a spinning child: the watch adds up the whole tree
        code = ("import subprocess, sys, signal\n"
                f"p = subprocess.Popen([sys.executable, '-c', {_SPIN.replace('MODE', 'pass')!r}],"
                " stdout=subprocess.DEVNULL)\n"
                "signal.signal(signal.SIGINT, lambda *_: (p.kill(), print('interrupted', "
                "flush=True), sys.exit(0)))\nprint('ready', flush=True)\np.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("child", [False, True], ids=["kernel", "its-child"])
def test_the_cpu_watch_interrupts_a_spinning_cell(child):
    proc = _process("spin", child=child)
    try:
        watch = CpuWatch(proc.pid, 0.3)
        out, _ = proc.communicate(timeout=120)  # CPU seconds: however loaded the machine
        used = watch.stop()
        assert watch.fired and out.strip() == "interrupted"
        assert used >= 0.3
    finally:
        proc.kill()


def test_the_cpu_watch_leaves_a_waiting_cell_to_the_clock():
    import time

    proc = _process("sleep")
    try:
        watch = CpuWatch(proc.pid, 0.3)
        time.sleep(1.5)
        used = watch.stop()
        assert not watch.fired and proc.poll() is None  # no SIGINT: nothing spun
        assert used < 0.3
    finally:
        proc.kill()
        proc.wait()


# Run in the sandbox's pid namespace: a "kernel" double-forks a spinning process away from itself
# (which notes its pid) and waits; the watch runs without, then with the namespace-wide count.
_KERNEL = r"""
import os, signal, sys, time
if os.fork() == 0:
    if os.fork() == 0:
        with open("spinner.pid", "w") as fh:
            fh.write(str(os.getpid()))
        while True:
            pass
    os._exit(0)
os.wait()
while not os.path.exists("spinner.pid"):
    time.sleep(0.01)
signal.signal(signal.SIGINT, lambda *_: (print("interrupted", flush=True), sys.exit(0)))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
_WATCH = r"""
import json, os, signal, subprocess, sys
from autograder.inside.nbgrader_worker import CpuWatch
found = {}
for namespace in (False, True):
    kernel = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE,
                              text=True)
    assert kernel.stdout.readline().strip() == "ready"
    watch = CpuWatch(kernel.pid, 0.5, namespace=namespace)
    try:
        kernel.wait(timeout=100 if namespace else 3)
    except subprocess.TimeoutExpired:
        pass
    found[str(namespace)] = [watch.fired, watch.stop(), kernel.poll() is not None]
    kernel.kill()
    kernel.wait()
    with open("spinner.pid") as fh:
        os.kill(int(fh.read()), signal.SIGKILL)
    os.unlink("spinner.pid")
print(json.dumps(found))
"""


@pytest.mark.slow
@pytest.mark.sandbox
def test_in_the_sandbox_a_double_forked_spinner_counts_against_the_cell(tmp_path):
    """Re-parented to the namespace's init, the spinner is outside the kernel's tree: counted
    by the tree alone it escapes the cell's budget; counted over the sandbox it does not."""
    import json
    import sys

    from autograder.isolation.sandbox import run_sandboxed

    result = run_sandboxed([sys.executable, "-c", _WATCH, _KERNEL], workdir=tmp_path / "w",
                           timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    fired, _, ended = found["False"]
    assert not fired and not ended  # 3 s of a spinning core, none of it seen
    fired, used, ended = found["True"]
    assert fired and ended and used >= 0.5  # interrupted for the spinner's CPU time


def test_cpu_seconds_of_a_process_that_is_gone_is_zero():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert cpu_seconds(proc.pid) == 0.0


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_looping_submission_costs_its_budget_not_the_flat_limit(tmp_path):
    """f_score spins forever: the cells and probes that call it stop at their CPU budgets, the
    others pass, and nbgrader's report is complete (no whole-step limit reached)."""
    from autograder.exercises import exercise_for
    from autograder.grade import grade
    from autograder.store.samples import sample_notebook, solution_code

    ex = exercise_for("01_metrics", ROOT)
    looping = solution_code(ROOT, "01_metrics") + (
        "\n\ndef f_score(precision, recall, beta=1.0):\n    while True:\n        pass\n")
    nb = sample_notebook(ROOT, "01_metrics", "solution")
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == ex.solution_id:
            cell.source = looping
    (tmp_path / "subs" / "loops").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "loops" / ex.notebook_name)
    rows = grade("01_metrics", tmp_path / "subs", tmp_path / "out", root=ROOT, workers=1,
                 timeout=600)
    row = rows[0]
    template = tmp_path / "out" / "work" / "_template"
    cached = json.loads(budget.cache_file(ROOT, ex, template, True).read_text())
    assert cached["cells"]
    assert all(settings.CELL_FLOOR <= s <= 300 for s in cached["cells"].values())
    assert settings.PROBE_FLOOR <= cached["probe"] <= 30
    assert set(cached["cells_cpu"]) == set(cached["cells"])
    assert all(settings.CELL_CPU_FLOOR <= s <= 300 for s in cached["cells_cpu"].values())
    assert settings.PROBE_CPU_FLOOR <= cached["probe_cpu"] <= 30
    assert row.status == "graded" and row.score < row.max_score, row
    assert not row.flagged and "timed out" not in row.reason, row.reason
    failed = [gid for gid, c in row.cells.items() if not c["passed"]]
    assert "test_f_score_values" in failed
    # the flat limits cost at least 300 s for each looping cell; budgets, seconds
    assert row.seconds < 300 * len(failed), (row.seconds, failed)
    # each cell's CPU time is noted (how the reference's budgets are measured), and a looping
    # cell ran until one of its two budgets stopped it: its CPU budget, or on a machine too
    # loaded to give it that much CPU time, its wall-clock one
    autograded = (tmp_path / "out" / "work" / "loops" / "nbgrader" / "autograded" / "loops"
                  / "01_metrics" / ex.notebook_name)
    walls, cpus = dict(cell_times(autograded)), dict(cell_times(autograded, cpu=True))
    for gid in failed:
        assert cpus[gid] >= cached["cells_cpu"][gid] or walls[gid] >= cached["cells"][gid], (
            gid, cpus[gid], walls[gid])
