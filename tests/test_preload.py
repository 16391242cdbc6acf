"""Preloaded starts (autograder.isolation.preload, forked_kernel): the same sandbox, the same grade.

tests/test_sandbox.py runs every sandbox check twice, started by bubblewrap and forked from a
preload; here: what a fork falls back to, the kernel forked by the nbgrader step, and the
grade of a class with and without preloading.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autograder.exercises import registry
from autograder.isolation import preload
from autograder.isolation.environment import IMPORT_TIME, sandbox_env
from autograder.isolation.sandbox import run_sandboxed
from autograder.steps.nbgrader_step import NBGRADER_MEMORY_MB
from autograder.steps.trusted import HARNESS

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
EXERCISES = registry(ROOT)
# a module that starts a thread as it is imported (and never ends it)
THREADED = "debugpy._vendored.pydevd.pydevd_attach_to_process._always_live_program"


def _root_only():
    if not preload.preload_wanted():
        pytest.skip("a preload needs the grader to run as root on Linux (COURSE_PRELOAD unset)")


@pytest.mark.slow
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


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_zygote_with_a_thread_running_leaves_the_start_to_bubblewrap(tmp_path, capfd):
    """A fork of a process with two threads could wait forever on a lock the other thread
    held: the zygote checks before each fork and, with a thread running, answers "failed", so
    bubblewrap starts the command. The thread here is a real one: debugpy's vendored pydevd
    has a module that starts one as it is imported (debugpy comes with ipykernel)."""
    _root_only()
    if importlib.util.find_spec(THREADED.rpartition(".")[0]) is None:
        pytest.skip(f"{THREADED} is not installed")
    threaded = preload.Preload("harness", also=(THREADED,))
    try:
        res = run_sandboxed([PY, "-c", "import sys; print('torch' in sys.modules)"],
                            workdir=tmp_path, timeout=120, preload=threaded)
        assert res.returncode == 0 and res.stdout == "False\n", res.stderr  # started afresh
        err = capfd.readouterr().err
        assert "a preloaded start failed (the zygote is not single-threaded (2 threads))" in err
    finally:
        threaded.close()  # its thread never ends: the zygote is killed after close's wait


def test_threads_running_counts_the_kernels_threads():
    code = textwrap.dedent("""
        import threading
        from autograder.inside.zygote import threads_running
        alone = threads_running()
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        print(alone, threads_running())
        stop.set()
        other.join()
    """)
    res = subprocess.run([PY, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert res.returncode == 0 and res.stdout.split() == ["1", "2"], res.stderr


ENVIRON = """
import json, os, sys
warm = "torch" in sys.modules
import torch
with open("/proc/self/environ", "rb") as fh:  # as the process was exec'd: a fork's zygote's
    at_exec = dict(v.split("=", 1) for v in fh.read().decode().split("\\0") if "=" in v)
print(json.dumps({"warm": warm, "at_exec": at_exec, "now": dict(os.environ),
                  "cwd": os.getcwd(),
                  "torch_threads": torch.get_num_threads()}))
"""


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_fork_was_started_with_the_environment_bubblewrap_gives(tmp_path):
    """What modules read as they are imported (torch's thread count from OMP_NUM_THREADS,
    matplotlib's backend, ...) a fork has from its zygote: the zygote's environment, which the
    kernel keeps as it was at exec (/proc/self/environ), is the one a command started by
    bubblewrap gets, but for HOME and PWD (the command's work folder); and the command's own
    environment is the same either way."""
    _root_only()
    seen = {}
    for by in ("bubblewrap", "preload"):
        res = run_sandboxed([PY, "-c", ENVIRON], workdir=tmp_path / by, timeout=120,
                            preload=preload.shared("harness") if by == "preload" else None)
        assert res.returncode == 0 and not res.reason, res.stderr[-3000:]
        seen[by] = json.loads(res.stdout)
    assert seen["preload"].pop("warm") is True and seen["bubblewrap"].pop("warm") is False
    for view in seen.values():
        assert view["now"]["HOME"] == view["now"]["PWD"] == view["cwd"]
        for seen_when in ("now", "at_exec"):  # the command's own: its work folder
            view[seen_when].pop("HOME"), view[seen_when].pop("PWD")
    assert seen["preload"]["now"] == seen["bubblewrap"]["now"]  # what the command reads now
    assert seen["preload"]["at_exec"] == seen["bubblewrap"]["at_exec"]  # what its modules read
    assert seen["preload"]["torch_threads"] == seen["bubblewrap"]["torch_threads"] == 1


def test_the_sandbox_environment_keeps_what_modules_read_at_import_the_same():
    env = sandbox_env("/work/folder", {"JUPYTER_DATA_DIR": "/work/folder/.jupyter"})
    assert env["HOME"] == "/work/folder" and env["JUPYTER_DATA_DIR"] == "/work/folder/.jupyter"
    assert {k: env[k] for k in IMPORT_TIME} == IMPORT_TIME
    assert sandbox_env("/x", {"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"] == "1"  # no change
    with pytest.raises(ValueError, match="MPLCONFIGDIR is read as modules are imported"):
        sandbox_env("/work/folder", {"MPLCONFIGDIR": "/work/folder/.matplotlib"})


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
from autograder.inside.linux import processes
forked_kernel.prefork()
waiting = next(p.pid for p in processes() if p.ppid == os.getpid())  # the fork left waiting
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


@pytest.mark.slow
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
    from autograder.steps.nbgrader_step import run_nbgrader
    from autograder.steps.trusted import trusted_grade
    from autograder.store.samples import ci_parameters_of, write_samples
    from autograder.store.template import prepare_template

    exercise = exercise_for("01_metrics", ROOT)
    template = prepare_template(ROOT, exercise, tmp_path / "template", None)
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
