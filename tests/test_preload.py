"""Preloaded starts (autograder.isolation.preload, forked_kernel): the same sandbox, the same grade.

tests/test_sandbox.py runs every sandbox check twice, started by bubblewrap and forked from a
preload; here: what a fork falls back to, the kernel forked by the nbgrader step, and the
grade of a class with and without preloading.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autograder.exercises import registry
from autograder.isolation import preload
from autograder.isolation.sandbox import run_sandboxed
from autograder.steps.nbgrader_step import NBGRADER_MEMORY_MB
from autograder.steps.trusted import HARNESS

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
EXERCISES = registry(ROOT)


def _root_only():
    if not preload.preload_wanted():
        pytest.skip("a preload needs the grader to run as root on Linux (COURSE_PRELOAD unset)")


@pytest.mark.sandbox
def test_a_preloaded_command_starts_warm_in_the_same_sandbox(tmp_path):
    _root_only()
    code = textwrap.dedent("""
        import os, sys, socket
        warm = "torch" in sys.modules
        print(json.dumps({"warm": warm, "uid": os.getuid(), "pid1": open("/proc/1/comm").read(),
                          "host": socket.gethostname(), "cwd": os.getcwd(),
                          "home": os.environ["HOME"], "root": sorted(os.listdir("/")),
                          "nnp": [l.split()[1] for l in open("/proc/self/status")
                                  if l.startswith(("NoNewPrivs", "CapEff", "CapBnd"))],
                          "own_proc": os.stat("/proc/self/fd").st_uid == os.getuid()}))
    """)
    seen = {}
    for by in ("bubblewrap", "preload"):
        zygote = preload.shared("harness") if by == "preload" else None
        res = run_sandboxed([PY, "-c", "import json\n" + code], workdir=tmp_path / by,
                            timeout=60, preload=zygote)
        assert res.returncode == 0 and not res.reason, res.stderr
        seen[by] = json.loads(res.stdout)
    assert seen["preload"].pop("warm") is True and seen["bubblewrap"].pop("warm") is False
    for view in seen.values():
        assert view["uid"] != 0 and view["host"] == "sandbox"
        assert view["nnp"] == ["0000000000000000", "0000000000000000", "1"]
        view.pop("uid"), view.pop("cwd"), view.pop("home")
    assert seen["preload"] == seen["bubblewrap"]


@pytest.mark.sandbox
def test_a_preload_that_cannot_serve_leaves_the_start_to_bubblewrap(tmp_path, capfd):
    _root_only()
    broken = preload.Preload("no-such-kind")  # its imports fail: it says so and serves nothing
    try:
        res = run_sandboxed([PY, "-c", "import sys; print('torch' in sys.modules)"],
                            workdir=tmp_path, timeout=60, preload=broken)
        assert res.returncode == 0 and res.stdout == "False\n", res.stderr
        assert "No module named 'no-such-kind'" in broken.problem
    finally:
        broken.close()
    # a command the preloaded modules would leave too little address space: started afresh
    res = run_sandboxed([PY, "-c", "import sys; print('torch' in sys.modules)"],
                        workdir=tmp_path, timeout=60, memory_mb=1024,
                        preload=preload.shared("harness"))
    assert res.returncode == 0 and res.stdout == "False\n", res.stderr
    assert "MB of the command's 1024 MB of address space" in capfd.readouterr().err


FIRST_OPTIMIZER = """
import sys
import torch
before = set(sys.modules)
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
print(sorted(set(sys.modules) - before)[:5])
"""


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("kind", ["notebook", "harness"])
def test_a_fork_builds_its_first_optimizer_without_importing(kind, tmp_path):
    """torch.optim imports torch._dynamo (and sympy) as it builds its first optimizer, 2-3 s
    that every student's kernel, and the momentum exercise's harness, would pay again: their
    zygotes have imported it."""
    _root_only()
    momentum = EXERCISES["04_learning_rate"].exercise
    zygote = preload.shared(kind, momentum.harness_preload if kind == "harness" else ())
    res = run_sandboxed([PY, "-c", FIRST_OPTIMIZER], workdir=tmp_path, timeout=300,
                        memory_mb=NBGRADER_MEMORY_MB if kind == "notebook" else 4096,
                        preload=zygote)
    assert res.returncode == 0 and not res.reason, res.stderr[-3000:]
    assert res.stdout == "[]\n", res.stdout  # no module imported by the optimizer


FORBIDDING = """
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("harness", sys.argv[1])
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)
before = set(sys.modules)
harness.Harness.forbid_everywhere(harness.Harness.__new__(harness.Harness), sys.argv[2:])
print(json.dumps(sorted(set(sys.modules) - before)[:5]))
"""


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("assignment", sorted(EXERCISES))
def test_the_harness_zygote_has_imported_what_its_exercise_forbids(assignment, tmp_path):
    """The harness imports each forbidden name's module to forbid it (chapter 1's
    scikit-learn metrics took 2 s per student): its exercise's zygote has imported them."""
    _root_only()
    exercise = EXERCISES[assignment].exercise
    res = run_sandboxed([PY, "-c", FORBIDDING, str(HARNESS), *exercise.forbidden],
                        workdir=tmp_path, timeout=300, memory_mb=4096,
                        preload=preload.shared("harness", exercise.harness_preload))
    assert res.returncode == 0 and not res.reason, res.stderr[-3000:]
    assert json.loads(res.stdout) == [], res.stdout


FORKED_KERNEL = """
import json, os, sys
import torch  # what the step has imported when it forks the kernel-to-be
from autograder.inside import forked_kernel
forked_kernel.prefork()
waiting = forked_kernel._waiting[0]
import nbformat
from nbclient import NotebookClient
cells = ["import os, sys; print(os.getpid(), 'torch' in sys.modules, os.getcwd())",
         "import numpy as np; print(os.environ.get('MARK'), sys.path[0] == os.getcwd())"]
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
os.environ["MARK"] = "from-the-launch"
first = NotebookClient(nb, kernel_manager_class=forked_kernel.ForkedKernelManager,
                       resources={"metadata": {"path": sys.argv[1]}}, timeout=60).execute()
again = NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cells[0])]),
                       kernel_manager_class=forked_kernel.ForkedKernelManager,
                       resources={"metadata": {"path": sys.argv[1]}}, timeout=60).execute()
out = lambda nb, i: nb.cells[i].outputs[0]["text"].split()
print(json.dumps({"waiting": waiting, "first": out(first, 0), "env": out(first, 1),
                  "again": out(again, 0)}))
"""


def test_the_nbgrader_steps_kernel_is_the_fork_left_waiting(tmp_path):
    folder = tmp_path / "notebook folder"
    folder.mkdir()
    res = subprocess.run([PY, "-c", FORKED_KERNEL, str(folder)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.splitlines()[-1])
    pid, warm, cwd = seen["first"][0], seen["first"][1], " ".join(seen["first"][2:])
    assert int(pid) == seen["waiting"] and warm == "True" and cwd == str(folder)
    assert seen["env"] == ["from-the-launch", "True"]  # the launch's environment and sys.path
    # a second kernel is launched as jupyter_client launches one: a fresh interpreter
    assert int(seen["again"][0]) != seen["waiting"] and seen["again"][1] == "False"


@pytest.mark.sandbox
@pytest.mark.slow
def test_the_grade_is_the_same_preloaded_or_not(tmp_path, monkeypatch):
    """Two chapter-1 submissions, each step run both ways: the same scores and messages."""
    _root_only()
    from autograder.exercises import exercise_for
    from autograder.grade import _prepare_template
    from autograder.steps.nbgrader_step import run_nbgrader
    from autograder.steps.trusted import trusted_grade
    from autograder.store.samples import ci_parameters_of, write_samples

    exercise = exercise_for("01_metrics", ROOT)
    template = _prepare_template(ROOT, exercise, tmp_path / "template", None)
    subs = tmp_path / "subs"
    write_samples(ROOT, "01_metrics", subs, ci_parameters_of(ROOT, "01_metrics"))
    grades = {}
    for by in ("preload", "bubblewrap"):
        if by == "bubblewrap":
            monkeypatch.setenv("COURSE_PRELOAD", "0")
        for student in ("solution", "f-beta-not-squared"):
            notebook = subs / student / exercise.notebook_name
            work = tmp_path / by / student
            trusted = trusted_grade(exercise, notebook, work, timeout=300)
            scores, problem = run_nbgrader(student, notebook, work / "nbgrader",
                                           template=template, assignment="01_metrics",
                                           timeout=300, isolate=True)
            grades[by, student] = (trusted, scores, problem)
    for student in ("solution", "f-beta-not-squared"):
        assert grades["preload", student] == grades["bubblewrap", student]
    trusted, scores, problem = grades["preload", "solution"]
    assert not problem and all(c.passed for c in trusted.values()) and sum(scores.values()) == 6
    trusted, scores, problem = grades["preload", "f-beta-not-squared"]
    assert not problem and sum(scores.values()) == sum(c.points for c in trusted.values()) < 6
