"""Code that read the hidden tests in nbgrader's kernel gets none of them out (issue 16, class 6).

nbgrader's kernel runs the hidden tests, so a student's code that ran earlier in it can read
them (IPython's history, a ``pre_run_cell`` hook, ``linecache``). Each student here is graded
by the real `course grade` (sandboxed, recorded into a gradebook) with a correct solution and
one way of reading the hidden tests and trying to publish them: printed in base64 by a hook,
written over an early cell's output with ``update_display_data``, printed by a last cell, given
as a partial score, written to stderr, a planted result and a planted page before killing the
nbgrader worker, or as a planted nbconvert template. Each attack's loot file (left in its
sandbox folder) proves it read the hidden tests; then:

- its score is the honest student's, exactly;
- no hidden test line, plain or in any base64 run, is in anything published: its feedback
  page, grades.csv, results.jsonl, the gradebook's comments and formgrader's copy of its
  notebook;
- the outcomes differ as they should: which rows are flagged, with which reason, which get a
  page, and the page keeps what ran before the hidden tests.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.exercises import registry
from autograder.inside.nbgrader_worker import ERRORS
from autograder.isolation.sandbox import isolation_available
from autograder.store.samples import ci_parameters_of, sample_notebook

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_metrics"
SPEC = registry(ROOT)[ASSIGNMENT]

# What every attack shares: the hidden test text it sees, saved where the test finds it (its
# sandbox folder, $HOME) to prove that it did see it.
GRAB = '''
import base64, json, os, signal, sys
_seen = []
def _loot(text):
    _seen.append(text)
    if "BEGIN HIDDEN" in text:
        with open(os.path.join(os.environ["HOME"], "loot.txt"), "a") as f:
            f.write(text)
def _b64():
    return base64.b64encode("\\n".join(_seen).encode()).decode()
get_ipython().events.register("pre_run_cell", lambda info: _loot(info.raw_cell))
'''

ATTACKS = {  # student -> (code inserted after the solution cell, code appended at the end)
    # a hook prints everything seen so far, in base64, after every later cell
    "hook-base64": (GRAB + '''
def _print(result):
    if any("BEGIN HIDDEN" in text for text in _seen):
        print("LEAK" + "-B64:" + _b64())
get_ipython().events.register("post_run_cell", _print)
''', 'print("the end")'),
    # an early cell's output, rewritten after every later cell through its display id
    "display-update": (GRAB + '''
from IPython.display import display
_handle = display("early output " + "kept", display_id=True)
def _update(result):
    if any("BEGIN HIDDEN" in text for text in _seen):
        _handle.update("LEAK" + "-UPDATE:" + _b64() + "\\n".join(_seen))
get_ipython().events.register("post_run_cell", _update)
''', None),
    # a last cell prints the history and linecache, plain and in base64
    "history-late": (None, '''
import base64, linecache, os
_text = "\\n".join(In) + "\\n".join("".join(v[2]) for v in linecache.cache.values()
                                    if isinstance(v, tuple) and len(v) > 2)
with open(os.path.join(os.environ["HOME"], "loot.txt"), "w") as f:
    f.write(_text)
print("LEAK" + "-LATE:" + base64.b64encode(_text.encode()).decode())
print(_text)
'''),
    # every test cell after a hidden one shows a number: nbgrader's partial credit carries it
    "partial-score": (GRAB + '''
def _number(result):
    if _seen and "BEGIN HIDDEN" in _seen[-1]:
        hook = get_ipython().displayhook  # an execute_result in the test cell's output
        hook.start_displayhook()
        hook.write_output_prompt()
        hook.write_format_data({"text/plain": str(0.001 * (1 + sum(map(ord, _b64())) % 997))}, {})
        hook.finish_displayhook()
get_ipython().events.register("post_run_cell", _number)
''', None),
    # hidden text on stderr, a planted result, page and notebook, then the worker is killed
    "kill-worker": (GRAB + '''
def _kill(info):
    if "BEGIN HIDDEN" not in info.raw_cell:
        return
    text = info.raw_cell
    sys.__stderr__.write(text + "\\n" + text.splitlines()[-1] + "\\n")
    sys.__stderr__.flush()
    os.write(2, (text + "\\n").encode())
    home = os.environ["HOME"]
    with open(os.path.join(home, "nbgrader_result.json"), "w") as f:
        json.dump({"ok": False, "error": text, "scores": {}}, f)
    page = "<html><body><pre>LEAK" + "-PAGE:" + text + "</pre></body></html>"
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "leak", "metadata": {}, "source": "LEAK" + "-NB:" + text}]}
    for top, name, data in (("feedback", "01_metrics.html", page),
                            ("autograded", "01_metrics.ipynb", json.dumps(notebook))):
        folder = os.path.join(home, top, "kill-worker", "01_metrics")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            f.write(data)
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"nbgrader_worker" in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    os.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent: the worker, however started
get_ipython().events.register("pre_run_cell", _kill)
''', None),
    # an nbconvert template planted where Jupyter looks for templates, holding the hidden text
    "template-plant": (GRAB + '''
def _plant(info):
    if "BEGIN HIDDEN" not in info.raw_cell:
        return
    page = "<html><body><pre>LEAK" + "-TEMPLATE:" + "\\n".join(_seen) + "</pre></body></html>"
    for name in ("feedback", "classic", "base", "lab"):
        folder = os.path.join(os.environ["JUPYTER_DATA_DIR"], "nbconvert", "templates", name)
        os.makedirs(folder, exist_ok=True)
        for template in ("base.html.j2", "index.html.j2"):
            with open(os.path.join(folder, template), "w") as f:
                f.write("{% raw %}" + page + "{% endraw %}")
get_ipython().events.register("pre_run_cell", _plant)
''', None),
}


def hidden_lines() -> list[str]:
    """The hidden test lines of the chapter's source notebook that the released notebook does
    not hold elsewhere (an import, say), and long enough to be telling."""
    release = (ROOT / "release" / ASSIGNMENT / SPEC.notebook_name).read_text()
    nb = json.loads((ROOT / "source" / ASSIGNMENT / SPEC.notebook_name).read_text())
    lines, inside = [], False
    for cell in nb["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                inside = "BEGIN" in line
            elif (inside and len(line.strip()) >= 12
                  and json.dumps(line.strip())[1:-1] not in release):
                lines.append(line.strip())
    return lines


def leaked(text: str, hidden: list[str]) -> list[str]:
    """The hidden lines in ``text``, plainly or in any base64 run of it."""
    decoded = []
    for run in re.findall(r"[A-Za-z0-9+/]{24,}={0,2}", text):
        for start in range(4):  # a run may start mid-quantum after other text
            chunk = run[start:]
            try:
                decoded.append(base64.b64decode(chunk[:len(chunk) // 4 * 4]).decode("utf-8",
                                                                                    "replace"))
            except (binascii.Error, ValueError):
                pass
    haystack = text + "\n".join(decoded)
    return [line for line in hidden if line in haystack]


def _notebook(student: str) -> nbformat.NotebookNode:
    """The solution handed in; an attack's experiments at the chapter's CI parameters (the
    honest student's at full size)."""
    nb = sample_notebook(ROOT, ASSIGNMENT, "solution",
                         None if student == "honest" else ci_parameters_of(ROOT, ASSIGNMENT))
    at = next(i for i, c in enumerate(nb.cells)
              if c.metadata.get("nbgrader", {}).get("grade_id") == SPEC.solution_id)
    early, late = ATTACKS.get(student, (None, None))
    if early:
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(early.strip()))
    if late:
        nb.cells.append(nbformat.v4.new_code_cell(late.strip()))
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """`course grade` of the honest student and every attack, recorded into out/gradebook.db."""
    ok, why = isolation_available()
    if not ok:
        pytest.fail(f"these attacks need the sandbox (install bubblewrap): {why}")
    base = tmp_path_factory.mktemp("hidden")
    subs, out = base / "subs", base / "out"
    for student in ["honest", *ATTACKS]:
        (subs / student).mkdir(parents=True)
        nbformat.write(_notebook(student), subs / student / SPEC.notebook_name)
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT, str(subs), "--out", str(out),
         "--workers", "2", "--root", str(ROOT), "--db", f"sqlite:///{out}/gradebook.db",
         "--timeout", "240", "--cell-timeout", "60", "--flat-limits",
         "--keep-work"],  # each attack's loot.txt (its proof) stays in its work folder
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {json.loads(line)["student_id"]: json.loads(line)
            for line in (out / "results.jsonl").read_text().splitlines()}
    return out, rows, proc.stdout + proc.stderr


def _page(out: Path, student: str) -> Path:
    return out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"


def _comments(out: Path) -> dict[str, str]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out}/gradebook.db", "dl-tuning") as gb:
        return {s.student.id: "\n".join(c.auto_comment or "" for nb in s.notebooks
                                        for c in nb.comments)
                for s in gb.assignment_submissions(ASSIGNMENT)}


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_attacks_really_read_the_hidden_tests(graded):
    out, _, _ = graded
    hidden = hidden_lines()
    assert len(hidden) >= 5
    for student in ATTACKS:
        loot = out / "work" / student / "nbgrader" / "loot.txt"
        assert loot.is_file(), student
        seen = leaked(loot.read_text(), hidden)
        if student == "kill-worker":  # it stopped everything at the first hidden test cell
            assert seen and seen == hidden[:len(seen)], student
        else:
            assert seen == hidden, student


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("student", list(ATTACKS))
def test_nothing_published_shows_a_hidden_test(graded, student):
    out, rows, stdout = graded
    hidden = hidden_lines()
    row = rows[student]
    assert (row["status"], row["score"]) == ("graded", SPEC.max_score), row["reason"]
    assert rows["honest"]["score"] == SPEC.max_score and not rows["honest"]["flagged"]
    line = next(x for x in (out / "results.jsonl").read_text().splitlines()
                if json.loads(x)["student_id"] == student)
    messages = [row["reason"], *(c["message"] for c in row["cells"].values())]
    published = {"results.jsonl": line, "row": "\n".join(messages), "stdout": stdout,
                 "gradebook comment": _comments(out)[student]}
    with (out / "grades.csv").open(newline="") as f:
        published["grades.csv"] = "\n".join(",".join(r) for r in csv.reader(f))
    for path in [_page(out, student), *(out / "autograded" / student).rglob("*")]:
        if path.is_file():
            published[str(path.relative_to(out))] = path.read_text(errors="replace")
    for where, text in published.items():
        assert leaked(text, hidden) == [], (student, where)
        assert "LEAK-" not in text, (student, where)  # nothing the attack printed or planted


@pytest.mark.slow
@pytest.mark.sandbox
def test_the_kernel_gets_nothing_out_after_the_hidden_tests(graded):
    """The pages of the students whose code only printed: what ran after the first hidden test
    is withheld, with a note; what ran before is kept, display updates included."""
    out, rows, _ = graded
    for student in ("hook-base64", "display-update", "history-late", "template-plant"):
        row = rows[student]
        assert not row["flagged"] and row["reason"] == "", (student, row["reason"])
        page = _page(out, student).read_text()
        assert f"Recorded score: {SPEC.max_score:g} / {SPEC.max_score:g}" in page, student
        assert "output withheld: this cell also runs hidden tests" in page, student
    assert "ran after the hidden tests had started" in _page(out, "hook-base64").read_text()
    assert "ran after the hidden tests had started" in _page(out, "history-late").read_text()
    # the early cell's own output stays as it was before the hidden tests ran
    assert "early output kept" in _page(out, "display-update").read_text()


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_number_or_a_killed_worker_is_flagged_in_fixed_words(graded):
    out, rows, _ = graded
    partial, killed = rows["partial-score"], rows["kill-worker"]
    assert partial["flagged"] and partial["reason"] == f"nbgrader: {ERRORS['partial']}"
    assert killed["flagged"] and killed["reason"].startswith("nbgrader: killed by SIGKILL")
    for student in ("partial-score", "kill-worker"):
        assert rows[student]["nbgrader_score"] is None, student
        assert not _page(out, student).exists(), student
        assert not (out / "work" / student / "nbgrader" / "feedback").exists(), student


# --------------------------------------------------------------------------- the pieces, fast


def _ran(sources: list[str]) -> nbformat.NotebookNode:
    """A notebook as nbgrader leaves it: every code cell ran, printed and was numbered."""
    nb = nbformat.v4.new_notebook()
    for n, source in enumerate(sources, 1):
        cell = nbformat.v4.new_code_cell(source, execution_count=n)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"out {n}\n")]
        nb.cells.append(cell)
    nb.metadata["widgets"] = {"state": "LEAK"}
    return nb


HIDDEN_CELL = ("assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 4  # secret\n"
               "### END HIDDEN TESTS")


def test_every_output_from_the_first_hidden_cell_on_is_withheld():
    from autograder.inside.nbgrader_worker import WITHHELD, WITHHELD_AFTER, without_hidden_tests

    nb = _ran(["x = 1", HIDDEN_CELL, "print(In)", HIDDEN_CELL])
    without_hidden_tests(nb, 1)
    assert [c.outputs[0].text for c in nb.cells] == ["out 1\n", WITHHELD, WITHHELD_AFTER,
                                                     WITHHELD]
    assert [c.execution_count for c in nb.cells] == [1, None, None, None]
    assert "secret" not in nbformat.writes(nb) and "widgets" not in nb.metadata
    assert nb.cells[1].source == "assert f(1) == 1\n"


def test_a_notebook_that_is_not_the_one_that_ran_shows_no_output():
    from autograder.inside.nbgrader_worker import without_hidden_tests

    nb = _ran(["x = 1", "y = 2", HIDDEN_CELL])
    without_hidden_tests(nb, 1)  # cell 1 holds no hidden test: the cells moved
    assert all("withheld" in c.outputs[0].text for c in nb.cells)
    nb = _ran(["x = 1", "y = 2"])
    without_hidden_tests(nb, None)  # no hidden test ran: every output stays
    assert [c.outputs[0].text for c in nb.cells] == ["out 1\n", "out 2\n"]


def test_nbgrader_failures_are_told_in_fixed_words():
    from autograder.inside.nbgrader_worker import error_code
    from autograder.steps.nbgrader_step import parse_scores

    log = {"log": "[ERROR] assert f(2) == 4  # secret\nDeadKernelError: Kernel died",
           "error": "Traceback ... secret"}
    assert error_code(log, "autograde") == "kernel-died"
    assert error_code({"log": "assert f(2) == 4  # secret"}, "autograde") == "autograde"
    for error in ("kernel-died", "partial", "secret: assert f(2) == 4"):
        scores, problem = parse_scores({"ok": False, "error": error, "scores": {}})
        assert scores == {} and (problem in ERRORS.values() or problem == "failed")
        assert "secret" not in problem


class _Stopped:
    """What run_sandboxed returns for a worker the kernel killed, its stderr full of secrets."""

    def __init__(self, returncode: int, reason: str):
        self.returncode, self.reason, self.timed_out = returncode, reason, False
        self.stdout, self.stderr = "secret", "assert f(2) == 4  # secret\n" * 3


@pytest.mark.parametrize("returncode,reason,said", [
    (-9, "killed by SIGKILL", "killed by SIGKILL"),
    (1, "", "the nbgrader step exited with status 1")])
def test_a_worker_that_did_not_exit_normally_leaves_nothing(tmp_path, monkeypatch, returncode,
                                                             reason, said):
    from autograder.steps import nbgrader_step

    monkeypatch.setattr(nbgrader_step, "run_sandboxed",
                        lambda *a, **k: _Stopped(returncode, reason))
    monkeypatch.setattr(nbgrader_step, "scratch_course", lambda folder, *a: None)
    folder = tmp_path / "nbgrader"
    for top in ("autograded", "feedback"):
        (folder / top / "mallory" / "01_metrics").mkdir(parents=True)
        (folder / top / "mallory" / "01_metrics" / "01_metrics.html").write_text("secret")
    (folder / "nbgrader_result.json").write_text(json.dumps(
        {"ok": True, "error": "", "scores": {"test_f": [1.0, 1.0]}}))
    scores, problem = nbgrader_step.run_nbgrader(
        "mallory", tmp_path / "nb.ipynb", folder, template=tmp_path, assignment="01_metrics",
        timeout=60, isolate=True)
    assert (scores, problem) == ({}, said)
    assert not (folder / "autograded").exists() and not (folder / "feedback").exists()


def test_a_link_where_nbgrader_writes_discards_the_result(tmp_path, monkeypatch):
    from autograder.steps import nbgrader_step

    monkeypatch.setattr(nbgrader_step, "run_sandboxed", lambda *a, **k: _Stopped(0, ""))
    monkeypatch.setattr(nbgrader_step, "scratch_course", lambda folder, *a: None)
    folder, elsewhere = tmp_path / "nbgrader", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the sandbox's")
    (folder / "autograded").mkdir(parents=True)
    (folder / "autograded" / "mallory").symlink_to(elsewhere)
    (folder / "nbgrader_result.json").write_text(json.dumps(
        {"ok": True, "error": "", "scores": {"test_f": [1.0, 1.0]}}))
    scores, problem = nbgrader_step.run_nbgrader(
        "mallory", tmp_path / "nb.ipynb", folder, template=tmp_path, assignment="01_metrics",
        timeout=60, isolate=True)
    assert (scores, problem) == ({}, "a link where nbgrader writes its outputs")
    assert not (folder / "autograded").exists() and (elsewhere / "keep.txt").is_file()
