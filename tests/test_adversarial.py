"""Attack submissions graded by `course grade`: none gains a mark, leaks, escapes or stops it.

Every recipe in tests/adversarial/ (see its README) becomes one student's notebook, built from
the released chapter; honest students are graded in the same batch. Each chapter's batch is
graded once (module fixture: one grading process per chapter, all at once) with isolation on,
while the test listens on a local port and watches for the attacks' processes. Then:

- every student has exactly one row, with the exact trusted score its recipe expects (an attack
  never adds a mark; honest students keep their exact marks);
- no attacker's feedback or row shows solution code or another student's work;
- nothing connected to the listening port; no process an attack started is alive after the
  batch; results.jsonl and grades.csv are unchanged a while after grading ended;
- every feedback page is free of script.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock
from pages import assert_no_active_content
from waiting import sandbox_processes, wait_until

from autograder.exercises import registry
from autograder.isolation.sandbox import isolation_available
from autograder.store.samples import ci_parameters_of, solution_code, with_parameters

ROOT = Path(__file__).resolve().parents[1]
ADVERSARIAL = Path(__file__).parent / "adversarial"
EXERCISES = registry(ROOT)

pytestmark = [pytest.mark.slow, pytest.mark.sandbox]  # sandbox: see tests/conftest.py
# Limits in seconds: an honest student's longest cell takes 3 s and its nbgrader step 15 s on an
# idle core (4 times that on a saturated one); the attacks that never end stop at these limits.
CELL_TIMEOUT, TIMEOUT = 30, 90


@dataclass
class Recipe:
    name: str
    assignment: str
    expect: float
    solution: str
    edits: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)


def parse_recipe(path: Path) -> Recipe:
    header, *parts = re.split(r"^# %% \[(\w+)\][ \t]*\n", path.read_text(), flags=re.M)
    meta = dict(re.findall(r"^# (assignment|expect|solution|edits): (.+)$", header, flags=re.M))
    sections = list(zip(parts[0::2], parts[1::2], strict=True))
    return Recipe(path.stem, meta["assignment"].strip(), float(meta["expect"]),
                  meta["solution"].strip(),
                  [e.strip() for e in meta.get("edits", "").split(",") if e.strip()], sections)


# COURSE_ADVERSARIAL_ONLY=a13,a14 grades only those recipes (to debug one attack quickly)
_ONLY = {x.strip() for x in os.environ.get("COURSE_ADVERSARIAL_ONLY", "").split(",") if x.strip()}
RECIPES = [parse_recipe(p) for p in sorted(ADVERSARIAL.glob("a*.txt"))
           if not _ONLY or p.stem.split("_")[0] in _ONLY]
HONEST = {  # student -> (assignment, solution, expected points)
    "honest-correct-1": ("01_metrics", "correct", EXERCISES["01_metrics"].max_score),
    "honest-arith": ("01_metrics", "f_arithmetic_mean", 1.0),
    "honest-correct-4": ("04_learning_rate", "correct", EXERCISES["04_learning_rate"].max_score),
    "honest-correct-5": ("05_regularization", "correct",
                         EXERCISES["05_regularization"].max_score),
    "honest-correct-6": ("06_batch_norm", "correct", EXERCISES["06_batch_norm"].max_score),
}


def solution_canaries(assignment: str) -> list[str]:
    """Lines of the instructor's solution that the released notebook does not contain."""
    release = (ROOT / "release" / assignment / EXERCISES[assignment].notebook_name).read_text()
    lines = {line.strip() for line in solution_code(ROOT, assignment).splitlines()}
    return sorted(line for line in lines if len(line) >= 20 and line not in release
                  and re.fullmatch(r"[\w .,()=:+\-*/\[\]]+", line))


# --------------------------------------------------------------------------- notebook edits


def _nbg(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_test(cell) -> bool:
    return bool(_nbg(cell).get("grade")) and not _nbg(cell).get("solution")


def _tests_to_pass(nb):
    for cell in nb.cells:
        if _is_test(cell):
            cell.source = "pass"


def _unlock_tests(nb):
    for cell in nb.cells:
        if _is_test(cell):
            cell.metadata.nbgrader["locked"] = False


def _inflate_points(nb):
    for cell in nb.cells:
        if _is_test(cell):
            cell.metadata.nbgrader["points"] = 100


def _repoint_tests(nb):
    claimed = []
    for cell in nb.cells:
        if _is_test(cell):
            claimed.append(cell.metadata.nbgrader["grade_id"])
            cell.metadata.nbgrader["grade_id"] += "_moved"
    for gid in claimed:
        fake = nbformat.v4.new_code_cell("pass")
        fake.metadata["nbgrader"] = {"grade": True, "grade_id": gid, "locked": True,
                                     "points": 100, "schema_version": 3, "solution": False,
                                     "task": False}
        nb.cells.append(fake)


def _delete_tests(nb):
    nb.cells = [c for c in nb.cells if not _is_test(c)]


def _strip_test_metadata(nb):
    for cell in nb.cells:
        if _is_test(cell):
            del cell.metadata["nbgrader"]


def _strip_all_metadata(nb):
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)


def _schema_99(nb):
    next(c for c in nb.cells if _is_test(c)).metadata.nbgrader["schema_version"] = 99


EDITS = {"tests_to_pass": _tests_to_pass, "unlock_tests": _unlock_tests,
         "inflate_points": _inflate_points, "repoint_tests": _repoint_tests,
         "delete_tests": _delete_tests, "strip_test_metadata": _strip_test_metadata,
         "strip_all_metadata": _strip_all_metadata, "schema_99": _schema_99}


def build_notebook(assignment: str, solution: str, sections, edits, fill,
                   small: bool = True) -> nbformat.NotebookNode:
    """The released notebook as the recipe hands it in; ``small``: its experiments at the
    chapter's CI parameters (an attack is the same at any size; honest students are not)."""
    spec = EXERCISES[assignment]
    nb = nbformat.read(ROOT / "release" / assignment / spec.notebook_name, as_version=4)
    if small:
        nb = with_parameters(nb, ci_parameters_of(ROOT, assignment))
    index = next(i for i, c in enumerate(nb.cells) if _nbg(c).get("grade_id") == spec.solution_id)
    if solution == "correct":
        nb.cells[index].source = solution_code(ROOT, assignment)
    elif solution == "inline":
        nb.cells[index].source = fill(dict(sections)["solution"])
    elif solution != "stub":  # a wrong implementation of autograder/samples/
        nb.cells[index].source = (ROOT / "autograder" / "samples" / assignment /
                                  f"{solution}.py").read_text()
    extra = []
    for kind, text in sections:
        if kind == "cell":
            extra.append(nbformat.v4.new_code_cell(fill(text).strip()))
        elif kind == "markdown":
            extra.append(nbformat.v4.new_markdown_cell(fill(text).strip()))
    nb.cells[index + 1:index + 1] = extra
    for name in edits:
        EDITS[name](nb)
    return nb


# --------------------------------------------------------------------------- the batch


class Listener:
    """A TCP port on 127.0.0.1 that records every connection made to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, addr = self.sock.accept()
                self.connections.append(addr)
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop = True
        self.thread.join(timeout=2)
        self.sock.close()


# One `course grade` per chapter, all at once, the big batch with 4 workers (several attacks
# only wait for a limit to pass); the rows grade() returns are dumped where no sandbox can
# write, to compare with what it recorded.
GRADE_BATCH = """
import json, sys
from dataclasses import asdict
from course.lean_imports import skip_unused_format_checkers
skip_unused_format_checkers()  # as the `course` command does
from autograder.grade import grade
assignment, subs, out, dump, root, workers, timeout, cell_timeout = sys.argv[1:]
rows = grade(assignment, subs, out, root=root, workers=int(workers), isolate=True,
             timeout=float(timeout), cell_timeout=int(cell_timeout))
with open(dump, "w") as f:
    json.dump([asdict(r) for r in rows], f)
"""


def _write_batch(assignment, subs, fill, canary) -> dict[str, tuple[float, str]]:
    """subs/<student>/<notebook> for the chapter's attacks and honest students.

    Returns student -> (expected score, the notebook's text).
    """
    notebooks = {recipe.name: (build_notebook(assignment, recipe.solution, recipe.sections,
                                              recipe.edits, fill), recipe.expect)
                 for recipe in RECIPES if recipe.assignment == assignment}
    if not notebooks:
        return {}
    for name, (a, solution, expect) in HONEST.items():
        if a == assignment:
            nb = build_notebook(a, solution, [], [], fill, small=False)
            nb.cells.append(nbformat.v4.new_markdown_cell(f"My own work: {canary}"))
            notebooks[name] = (nb, expect)
    students = {}
    for name, (nb, expect) in notebooks.items():
        path = subs / name / EXERCISES[assignment].notebook_name
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        students[name] = (expect, path.read_text())
    return students


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _measure_budgets(base: Path, assignments: list[str]) -> None:
    """The reference solutions' time budgets (autograder/steps/budget.py), measured before the
    batches under `course grade`'s default limit, one chapter per process.

    The first grading of a chapter on a machine measures them, and the machine keeps them
    (~/.cache/dl-tuning-course/budgets/). Measured inside a batch, the reference would have the
    batch's short step limit (TIMEOUT), which a loaded machine can exceed, stopping the whole
    chapter; here it has the default. Chapters whose budgets are cached are skipped (the
    template `course grade` prepares releases the same bytes as release/, the cache's key).
    """
    from autograder.steps.budget import cache_file

    procs = []
    for assignment in assignments:
        if cache_file(ROOT, EXERCISES[assignment], ROOT, True).is_file():
            continue
        empty = base / "budgets" / assignment / "submissions"
        empty.mkdir(parents=True)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "autograder.cli", "grade", assignment, str(empty), "--out",
             str(base / "budgets" / assignment / "out"), "--root", str(ROOT), "--workers", "1",
             "--db", f"sqlite:///{base / 'budgets' / assignment / 'gradebook.db'}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        output, _ = proc.communicate()
        assert proc.returncode == 0, output[-3000:]
    missing = [a for a in assignments
               if not cache_file(ROOT, EXERCISES[a], ROOT, True).is_file()]
    assert not missing, f"`course grade` on an empty folder measured no budgets for {missing}"


def _grade_attacks(base: Path) -> dict:
    """Grade every chapter's batch under ``base``; what the tests need, as JSON values."""
    ok, why = isolation_available()
    if not ok:
        pytest.fail(f"the adversarial suite needs isolation (install bubblewrap): {why}")
    marker = f"ADVERSARY-{uuid.uuid4().hex[:12]}"
    canary = f"CANARY-{uuid.uuid4().hex}"
    listener = Listener()
    batches, procs = {}, {}
    try:
        for assignment in EXERCISES:
            subs, out = base / assignment / "submissions", base / assignment / "out"

            def fill(text, out=out, assignment=assignment):
                for key, value in (("__OUT_DIR__", str(out)), ("__ROOT__", str(ROOT)),
                                   ("__PORT__", str(listener.port)), ("__MARKER__", marker),
                                   ("__ASSIGNMENT__", assignment)):
                    text = text.replace(key, value)
                return text

            students = _write_batch(assignment, subs, fill, canary)
            if students:
                batches[assignment] = dict(out=str(out), dump=str(base / assignment / "rows.json"),
                                           expect={n: e for n, (e, _) in students.items()},
                                           own={n: text for n, (_, text) in students.items()})
        _measure_budgets(base, list(batches))
        start = time.time()
        for assignment, batch in batches.items():
            procs[assignment] = subprocess.Popen(
                [sys.executable, "-c", GRADE_BATCH, assignment, str(base / assignment /
                 "submissions"), batch["out"], batch["dump"], str(ROOT),
                 str(4 if len(batch["expect"]) > 8 else 2), str(TIMEOUT), str(CELL_TIMEOUT)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for proc in procs.values():
            output, _ = proc.communicate()
            assert proc.returncode == 0, output[-3000:]
        for batch in batches.values():
            dump, out = Path(batch.pop("dump")), Path(batch["out"])
            batch["seconds"] = dump.stat().st_mtime - start  # when its rows were in
            batch["rows"] = json.loads(dump.read_text())
            batch["after"] = {p: _sha256(out / p) for p in ("results.jsonl", "grades.csv")}
        # once no process runs as a sandbox uid, nothing of the students' can write here
        wait_until(lambda: not sandbox_processes(), 60, "a student's process is still alive")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        listener.close()
    return dict(batches=batches, marker=marker, canary=canary,
                connections=[list(addr) for addr in listener.connections])


@pytest.fixture(scope="module")
def graded(shared_dir):
    """The graded batches: graded once per test session, whichever xdist worker asks first."""
    from autograder.grade import GradeRow, read_results

    done = shared_dir / "adversarial" / "graded.json"
    with FileLock(str(shared_dir / "adversarial.lock")):
        if not done.exists():
            data = _grade_attacks(shared_dir / "adversarial")
            done.write_text(json.dumps(data))
    data = json.loads(done.read_text())
    for batch in data["batches"].values():
        batch["out"] = Path(batch["out"])
        batch["rows"] = {r["student_id"]: GradeRow(**r) for r in batch["rows"]}
        batch["results"] = read_results(batch["out"])
    return data


def _feedback(out: Path, student: str, assignment: str) -> str:
    pages = sorted((out / "feedback" / student / assignment).glob("*.html"))
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# --------------------------------------------------------------------------- the assertions


@pytest.mark.skipif(bool(_ONLY), reason="COURSE_ADVERSARIAL_ONLY selects a subset")
def test_there_are_enough_attacks():
    assert len(RECIPES) >= 15
    assert {r.assignment for r in RECIPES} == set(EXERCISES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_each_attack_gets_exactly_its_real_score(graded, recipe):
    batch = graded["batches"][recipe.assignment]
    row = batch["rows"][recipe.name]
    assert row.status == "graded", row.reason
    assert row.max_score == EXERCISES[recipe.assignment].max_score
    assert row.score == recipe.expect, (row.score, row.reason)
    if recipe.solution != "correct":
        feedback = _text(_feedback(batch["out"], recipe.name, recipe.assignment))
        leaked = [c for c in solution_canaries(recipe.assignment)
                  if c not in batch["own"][recipe.name]  # a line the student wrote too
                  and (c in feedback or c in row.reason)]
        assert not leaked, f"solution text reached {recipe.name}'s feedback: {leaked[:3]}"
    assert graded["canary"] not in _feedback(batch["out"], recipe.name, recipe.assignment)
    assert graded["canary"] not in row.reason


@pytest.mark.parametrize("student", list(HONEST))
def test_honest_students_keep_their_exact_marks(graded, student):
    assignment, _, expect = HONEST[student]
    if assignment not in graded["batches"]:
        pytest.skip("COURSE_ADVERSARIAL_ONLY left this chapter out")
    row = graded["batches"][assignment]["rows"][student]
    assert row.status == "graded" and row.score == expect, row.reason
    assert not row.flagged, row.reason  # nbgrader and the trusted check agree on them


def test_every_student_has_one_untampered_row(graded):
    for batch in graded["batches"].values():
        assert set(batch["rows"]) == set(batch["expect"])
        results = batch["out"] / "results.jsonl"
        grades = batch["out"] / "grades.csv"
        assert _sha256(results) == batch["after"]["results.jsonl"], "results.jsonl changed"
        assert _sha256(grades) == batch["after"]["grades.csv"], "grades.csv changed"
        assert len(results.read_text().splitlines()) == len(batch["expect"])
        lines = grades.read_text().splitlines()
        assert len(lines) == 1 + len(batch["expect"]) and "mallory" not in grades.read_text()
        assert {r.student_id: r.score for r in batch["results"]} == \
            {s: r.score for s, r in batch["rows"].items()}


def test_nothing_reached_the_network(graded):
    assert graded["connections"] == []


def test_the_cell_timeout_stops_an_endless_cell(graded):
    """nbgrader interrupts the endless cell and grades the rest: its report is complete.

    (Had the step's wall-clock limit stopped it instead, nbgrader's scores would be missing and
    the row flagged.)
    """
    rows = graded["batches"].get("01_metrics", {}).get("rows", {})
    if "a19_infinite_loop" not in rows:
        pytest.skip("COURSE_ADVERSARIAL_ONLY left a19 out")
    row = rows["a19_infinite_loop"]
    assert row.nbgrader_score == row.score and not row.flagged, row.reason
    assert "timed out" not in row.reason


def test_no_attack_process_outlives_the_batch(graded, processes_with):
    assert processes_with(graded["marker"]) == []


def test_the_attacks_that_beat_nbgrader_are_flagged(graded):
    """Where nbgrader's in-kernel tests were fooled, the trusted score differs: flagged."""
    rows = {name: row for batch in graded["batches"].values()
            for name, row in batch["rows"].items()}
    for name, row in rows.items():
        if row.nbgrader_score is not None and row.nbgrader_score != row.score:
            assert row.flagged, name
    if "a13_unknown_schema_version" in rows:  # nbgrader could not score it
        assert rows["a13_unknown_schema_version"].flagged


def test_feedback_pages_run_no_script(graded):
    pages = 0
    for batch in graded["batches"].values():
        for page in (batch["out"] / "feedback").rglob("*.html"):
            pages += 1
            assert_no_active_content(page.read_text(encoding="utf-8"))
    assert pages >= 1
    if "a23_script_in_outputs" in graded["batches"].get("01_metrics", {}).get("rows", {}):
        page = _feedback(graded["batches"]["01_metrics"]["out"], "a23_script_in_outputs",
                         "01_metrics")
        assert "Content-Security-Policy" in page and "pwned-7" in page  # inert text


def test_each_student_has_a_time_within_the_batchs(graded, capsys):
    """Every row says how long its student took, and no student outlasts the batch."""
    for assignment, batch in graded["batches"].items():
        seconds = [row.seconds for row in batch["rows"].values()]
        assert seconds and all(s > 0 for s in seconds), assignment
        assert max(seconds) <= batch["seconds"], (assignment, max(seconds), batch["seconds"])
        with capsys.disabled():
            print(f"\n{assignment}: {len(seconds)} students graded in {batch['seconds']:.0f} s")
