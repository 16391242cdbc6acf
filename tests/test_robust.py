"""Faults of one entry stay that entry's row; a crash never changes grades.csv (issue 16).

Fast tests of the pieces (collecting submissions, the results store, the bounded readers);
the sandboxed ones are marked ``sandbox``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import stat
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from waiting import sandbox_processes, wait_until

from autograder.exercises import registry
from autograder.inside.sanitise import sanitize_html
from autograder.isolation.sandbox import run_sandboxed
from autograder.protocol import Fail, Results, grading_secret, secret_path
from autograder.steps.feedback import publish_feedback
from autograder.steps.trusted import trusted_grade
from autograder.store.results import GradeRow, read_results, record, write_grades_csv
from autograder.store.samples import ci_parameters_of, solution_code, with_parameters
from autograder.store.solution_cell import read_notebook, solution_source
from autograder.store.submissions import STUDENT_ID, collect

ROOT = Path(__file__).resolve().parents[1]
NB = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))


# --------------------------------------------------------------------------- class 1: archives


def _damaged_zip(path: Path, compression: int) -> None:
    """A zip whose one notebook member has its compressed bytes overwritten."""
    buf = io.BytesIO()
    name = "01_metrics.ipynb"
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr(name, NB * 50)
    data = bytearray(buf.getvalue())
    start = 30 + len(name)  # the local header, then the member's data
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression,error", [(zipfile.ZIP_DEFLATED, "error"),
                                               (zipfile.ZIP_BZIP2, "OSError"),
                                               (zipfile.ZIP_LZMA, "BadZipFile")])
def test_a_damaged_compressed_member_is_that_students_row(tmp_path, compression, error):
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    (subs / "alice" / "01_metrics.ipynb").write_text(NB)
    _damaged_zip(subs / "mallory.zip", compression)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert set(found) == {"alice", "mallory"}
    assert found["mallory"].notebook is None
    assert found["mallory"].reason.startswith(f"unreadable zip file: {error}")
    assert found["alice"].notebook is not None and found["alice"].reason == ""


# --------------------------------------------------------------------------- class 2: trees


def _deep_folder(base: Path, depth: int, leaf: str | None = None) -> None:
    """base/d/d/.../d (``depth`` levels, beyond PATH_MAX), optionally a notebook at the end."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = new
    if leaf is not None:
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, NB.encode())
        os.close(out)
    os.close(fd)


def _remove_deep(base: Path) -> None:
    """Remove a tree made by _deep_folder without recursion (pytest's cleanup recurses)."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    while True:
        names = os.listdir(fds[-1])
        if "d" in names:
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            continue
        for name in names:
            os.unlink(name, dir_fd=fds[-1])
        os.close(fds.pop())
        if not fds:
            return
        os.rmdir("d", dir_fd=fds[-1])


@pytest.mark.parametrize("depth,leaf", [(1500, None), (1200, "01_metrics.ipynb")])
def test_a_very_deep_folder_is_that_students_row(tmp_path, depth, leaf):
    subs = tmp_path / "subs"
    (subs / "deep").mkdir(parents=True)
    (subs / "zoe").mkdir()
    (subs / "zoe" / "01_metrics.ipynb").write_text(NB)
    _deep_folder(subs / "deep", depth, leaf)
    try:
        found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    finally:
        _remove_deep(subs / "deep")
    assert set(found) == {"deep", "zoe"}
    assert (found["deep"].notebook, found["deep"].reason) == (None, "no notebook in the submission")
    assert found["zoe"].notebook is not None


def test_a_notebook_four_levels_down_is_found_and_five_is_not(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ann" / "a" / "b" / "c").mkdir(parents=True)
    (subs / "ann" / "a" / "b" / "c" / "01_metrics.ipynb").write_text(NB)
    (subs / "ben" / "a" / "b" / "c" / "d").mkdir(parents=True)
    (subs / "ben" / "a" / "b" / "c" / "d" / "01_metrics.ipynb").write_text(NB)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert found["ann"].notebook == subs / "ann" / "a" / "b" / "c" / "01_metrics.ipynb"
    assert (found["ben"].notebook, found["ben"].reason) == (None, "no notebook in the submission")


def test_any_failure_reading_one_entry_is_that_students_row(tmp_path, monkeypatch):
    """Whatever goes wrong inside one entry (here: a fault no check foresaw) is its reason."""
    from autograder.store import submissions

    subs = tmp_path / "subs"
    for name in ("kim", "lee"):
        (subs / name).mkdir(parents=True)
        (subs / name / "01_metrics.ipynb").write_text(NB)
    real = submissions.notebook_in_folder

    def failing(folder, expected):
        if folder.name == "kim":
            raise PermissionError(13, "Permission denied")
        return real(folder, expected)

    monkeypatch.setattr(submissions, "notebook_in_folder", failing)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert found["kim"].notebook is None
    assert found["kim"].reason == "unreadable submission: PermissionError: [Errno 13] " \
                                  "Permission denied"
    assert found["lee"].sha256 != "" and found["lee"].reason == ""


# --------------------------------------------------------------------------- class 3: ids


@pytest.mark.parametrize("invalid", ["alice!", "-alice", "ali ce", "alice\u00e9", "_alice"])
def test_an_invalid_id_never_takes_a_real_students_row(tmp_path, invalid):
    subs = tmp_path / "subs"
    for name in ("alice", "alice_", invalid):
        (subs / name).mkdir(parents=True)
        (subs / name / "01_metrics.ipynb").write_text(NB)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert len(found) == 3
    for real in ("alice", "alice_"):
        assert found[real].notebook is not None and found[real].reason == "", real
    (fake,) = set(found) - {"alice", "alice_"}
    assert not STUDENT_ID.fullmatch(fake) and fake.startswith("_")
    assert found[fake].notebook is None
    assert found[fake].reason == f"invalid student id {invalid!r}"


def test_a_jupyterhub_username_is_a_student_id(tmp_path):
    """nbgrader and JupyterHub accept e-mail-like usernames (issue 30)."""
    subs = tmp_path / "subs"
    for name in ("carol@uni.edu", "dan+tutor@uni.edu"):
        (subs / name).mkdir(parents=True)
        (subs / name / "01_metrics.ipynb").write_text(NB)
    with zipfile.ZipFile(subs / "erin@uni.edu.zip", "w") as zf:
        zf.writestr("01_metrics.ipynb", NB)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert sorted(found) == ["carol@uni.edu", "dan+tutor@uni.edu", "erin@uni.edu"]
    assert all(s.notebook is not None and s.reason == "" for s in found.values())


def test_two_invalid_ids_keep_two_rows(tmp_path):
    subs = tmp_path / "subs"
    for name in ("bad name!", "bad name?", "bad_name_"):
        (subs / name).mkdir(parents=True)
    found = {s.student_id: s for s in collect(subs, "01_metrics", tmp_path / "unpacked")}
    assert len(found) == 3 and "bad_name_" in found
    assert found["bad_name_"].reason == "no notebook in the submission"
    invalid = sorted(s.reason for s in found.values() if s.student_id != "bad_name_")
    assert invalid == ["invalid student id 'bad name!'", "invalid student id 'bad name?'"]


# --------------------------------------------------------------------------- class 4: resume


def _rows(n: int) -> list[GradeRow]:
    return [GradeRow(f"s{i:02d}", "01_metrics", float(i % 4), 4.0, "graded",
                     "" if i % 4 == 3 else "failed test_x", 1.0 * (i % 3), i % 5 == 0,
                     sha256=f"{i:064x}", cells={"t": {"points": 1.0, "message": "é" * i}})
            for i in range(n)]


def _resume(out: Path, rows: list[GradeRow]) -> None:
    """What `course grade` does when run again: grade whoever has no intact row, then write."""
    done = {(r.student_id, r.sha256) for r in read_results(out) if r.status == "graded"}
    for row in rows:
        if (row.student_id, row.sha256) not in done:
            record(out, row)
    write_grades_csv(out)


def test_a_run_cut_at_any_byte_resumes_to_the_same_grades(tmp_path):
    """Stale rows first (an earlier grading of changed notebooks), then this run's rows."""
    rows = _rows(6)
    stale = [GradeRow(**{**r.__dict__, "score": 0.0, "sha256": "0" * 64}) for r in rows]
    clean = tmp_path / "clean"
    clean.mkdir()
    for row in stale + rows:
        record(clean, row)
    expected = write_grades_csv(clean).read_bytes()
    full = (clean / "results.jsonl").read_bytes()
    start = len(b"".join(full.splitlines(keepends=True)[:len(stale)]))
    cut_dir = tmp_path / "cut"
    for cut in range(start, len(full) + 1, 7):
        cut_dir.mkdir()
        (cut_dir / "results.jsonl").write_bytes(full[:cut])
        _resume(cut_dir, rows)
        assert (cut_dir / "grades.csv").read_bytes() == expected, cut
        _resume(cut_dir, rows)  # and again: nothing changes
        assert (cut_dir / "grades.csv").read_bytes() == expected, cut
        for path in cut_dir.iterdir():
            path.unlink()
        cut_dir.rmdir()


def test_a_cut_line_never_swallows_the_next_row(tmp_path):
    rows = _rows(2)
    record(tmp_path, rows[0])
    data = (tmp_path / "results.jsonl").read_bytes()
    for cut, kept in ((1, ["s01"]), (len(data) // 2, ["s01"]), (len(data) - 2, ["s01"]),
                      (len(data) - 1, ["s00", "s01"])):  # only the newline lost: s00 is whole
        (tmp_path / "results.jsonl").write_bytes(data[:cut])
        record(tmp_path, rows[1])
        assert [r.student_id for r in read_results(tmp_path)] == kept, cut


# --------------------------------------------------------------------------- the trusted step

ISOLATE = sys.platform.startswith("linux")
EXERCISES = registry(ROOT)


def _submission(tmp_path: Path, assignment: str, code: str, version: int = 4) -> Path:
    spec = EXERCISES[assignment]
    nb = nbformat.read(ROOT / "release" / assignment / spec.notebook_name, as_version=4)
    cell = next(c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == spec.solution_id)
    cell.source = code
    path = tmp_path / f"{assignment}-v{version}.ipynb"
    if version == 4:
        nbformat.write(nb, path)
    else:
        path.write_text(json.dumps(nbformat.convert(nb, version)))
    return path


def _trusted(tmp_path, assignment, code, version=4, **kw):
    path = _submission(tmp_path, assignment, code, version)
    scores = trusted_grade(EXERCISES[assignment], path, tmp_path / "work", isolate=ISOLATE, **kw)
    return {gid for gid, s in scores.items() if not s.passed}, scores


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("assignment", ["04_learning_rate", "06_batch_norm"])
def test_class_11_a_solution_may_use_what_the_notebook_imported(tmp_path, assignment):
    """``import torch`` is in the notebook's first cells: a solution cell without it passes."""
    code = solution_code(ROOT, assignment)
    assert code.startswith("import torch\n")
    failed, _ = _trusted(tmp_path, assignment, code.replace("import torch\n", "", 1))
    assert failed == set()


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_11_only_the_imports_a_solution_names_run_before_it(tmp_path):
    """The harness skips the notebook's imports the solution never names (pandas, scikit-learn
    through course.data: seconds per student), and runs all of them when the solution can
    reach a name dynamically (``globals()``, ``eval``)."""
    code = solution_code(ROOT, "06_batch_norm")
    (tmp_path / "lean").mkdir()
    (tmp_path / "dynamic").mkdir()
    lean = "import sys\nassert not {'pandas', 'sklearn', 'matplotlib'} & set(sys.modules)\n"
    failed, _ = _trusted(tmp_path / "lean", "06_batch_norm", lean + code)
    assert failed == set()
    dynamic = "assert globals()['pd'].__name__ == 'pandas'\n"
    failed, _ = _trusted(tmp_path / "dynamic", "06_batch_norm", dynamic + code)
    assert failed == set()


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("magic", ["%%time", "%%capture captured"])
def test_class_12_a_cell_magic_runs_its_body(tmp_path, magic):
    failed, _ = _trusted(tmp_path, "01_metrics", f"{magic}\n" + solution_code(ROOT, "01_metrics"))
    assert failed == set()


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_13_an_nbformat_3_notebook_is_graded(tmp_path):
    failed, _ = _trusted(tmp_path, "01_metrics", solution_code(ROOT, "01_metrics"), version=3)
    assert failed == set()
    sample = (ROOT / "autograder" / "samples" / "01_metrics" / "f_arithmetic_mean.py").read_text()
    failed, _ = _trusted(tmp_path, "01_metrics", sample, version=3)
    assert failed and failed != set(EXERCISES["01_metrics"].points)


def test_class_13_old_notebooks_are_converted_or_refused_clearly(tmp_path):
    v3 = _submission(tmp_path, "01_metrics", solution_code(ROOT, "01_metrics"), version=3)
    nb, note = read_notebook(v3)
    assert nb.nbformat == 4 and note == "converted from nbformat 3"
    assert any("def f_score" in c.source for c in nb.cells)
    old = tmp_path / "v2.ipynb"
    old.write_text(json.dumps({"nbformat": 2, "nbformat_minor": 0, "worksheets": [],
                               "metadata": {}}))
    with pytest.raises(Fail, match="nbformat version 2 is not supported: open the notebook in "
                                   "Jupyter and save it again"):
        read_notebook(old)


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_10_the_grading_process_never_transforms_student_text(tmp_path, monkeypatch):
    """A cell built to make IPython's transformer slow (minutes here) costs the sandbox's time
    limit, not the grader's CPU; the same cell pasted without metadata as well."""
    from IPython.core.inputtransformer2 import TransformerManager

    def refuse(self, cell):
        raise AssertionError("IPython's transformer ran in the grading process")

    monkeypatch.setattr(TransformerManager, "transform_cell", refuse)
    slow = "\n".join(f"y{i} = !ls" for i in range(400)) + "\n" + "z = 1\n" * 20000
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    failed, scores = _trusted(tmp_path, "01_metrics", slow + solution_code(ROOT, "01_metrics"),
                              exec_seconds=5)
    assert failed == set(EXERCISES["01_metrics"].points)
    assert all(s.message.startswith("the solution cell ran too long") for s in scores.values())
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert after.ru_utime - before.ru_utime < 5 and time.monotonic() - start < 60
    nb = nbformat.read(_submission(tmp_path, "01_metrics", "pass"), as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    nb.cells.append(nbformat.v4.new_code_cell(slow))
    nb.cells.append(nbformat.v4.new_code_cell(solution_code(ROOT, "01_metrics")))
    nbformat.write(nb, tmp_path / "pasted.ipynb")
    scores = trusted_grade(EXERCISES["01_metrics"], tmp_path / "pasted.ipynb", tmp_path / "w2",
                           isolate=ISOLATE)
    assert {gid for gid, s in scores.items() if not s.passed} == set()


# --------------------------------------------------------------------------- class 14: nesting


def _deep_output_notebook(tmp_path: Path, depth: int, where: str) -> Path:
    nb = nbformat.read(_submission(tmp_path, "01_metrics", solution_code(ROOT, "01_metrics")),
                       as_version=4)
    deep = "[" * depth + "]" * depth
    text = nbformat.writes(nb)
    data = json.loads(text)
    cell = next(c for c in data["cells"] if c["cell_type"] == "code")
    if where == "output":
        cell["outputs"] = [{"output_type": "display_data", "metadata": {},
                            "data": {"application/json": "DEEP"}}]
    else:
        cell["metadata"]["deep"] = "DEEP"
    path = tmp_path / f"deep-{where}.ipynb"
    path.write_text(json.dumps(data).replace('"DEEP"', deep))
    return path


@pytest.mark.parametrize("where", ["output", "metadata"])
def test_class_14_deep_nesting_is_read_without_recursion(tmp_path, where):
    path = _deep_output_notebook(tmp_path, 100_000, where)
    with pytest.raises(RecursionError):
        json.loads(path.read_text())  # what the grader used to do
    assert solution_source(path, "f_score_solution", ()).startswith("def f_score")
    nb, note = read_notebook(path)  # graded, with a reason
    assert note == "JSON nested deeper than 64 levels was removed (1 part(s)), with every output"
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    if where == "metadata":
        deep = next(c for c in nb.cells if c.cell_type == "code").metadata["deep"]
        assert json.dumps(deep).count("[") < 64 and "null" in json.dumps(deep)


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_14_a_page_too_deep_to_sanitise_in_time_is_not_published(tmp_path):
    """html5lib slows down with depth (quadratic): the sandbox's time limit holds."""
    source = tmp_path / "nbgrader"
    source.mkdir()
    (source / "01_metrics.html").write_text("<html><body>" + "<div>" * 1_000_000 + "x")
    (source / "ok.html").write_text("<html><body><p>fine</p></body></html>")
    row = GradeRow("s", "01_metrics", 1.0, 4.0, "graded")
    start = time.monotonic()
    assert not publish_feedback(source, tmp_path / "out", row, "01_metrics.html", timeout=10)
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()
    assert publish_feedback(source, tmp_path / "out", row, "ok.html", timeout=60)
    assert "Recorded score: 1 / 4" in (tmp_path / "out" / "ok.html").read_text()


def test_class_14_deep_html_and_result_files_are_bounded(tmp_path):
    page = "<html><body>" + "<div>" * 3000 + "<script>x()</script><b onclick='y()'>t</b>" + \
        "</div>" * 3000 + "</body></html>"
    clean = sanitize_html(page)
    assert "<script" not in clean and "onclick" not in clean and ">t</b>" in clean
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "p.json").write_text("[" * 200_000 + "]" * 200_000)
    fd = os.open(tmp_path / "results", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(Fail, match="result p.json is malformed"):
            Results(fd, "").record("p")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- class 15: secret


def _inputs(assignment="01_metrics") -> list:
    plan, _ = EXERCISES[assignment].build_plan()
    return [arr.tolist() for arr in plan.inputs.values()] + [p["seed"] for p in plan.probes]


def test_class_15_a_random_secret_per_course_made_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_SECRET", raising=False)
    monkeypatch.setenv("COURSE_GRADING_HOME", str(tmp_path / "a"))
    first = _inputs()
    path = secret_path()
    assert path == tmp_path / "a" / "dl-tuning" / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) == 64
    assert _inputs() == first  # a regrade draws the same inputs
    monkeypatch.setenv("COURSE_GRADING_HOME", str(tmp_path / "b"))
    assert _inputs() != first  # another course's secret: other inputs
    monkeypatch.setenv("COURSE_GRADING_SECRET", "dl-tuning-course/trusted-grader/v1")
    assert _inputs() not in (first, _inputs_with_home(monkeypatch, tmp_path / "b"))
    assert ROOT not in path.parents


def _inputs_with_home(monkeypatch, home):
    monkeypatch.delenv("COURSE_GRADING_SECRET", raising=False)
    monkeypatch.setenv("COURSE_GRADING_HOME", str(home))
    return _inputs()


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_15_the_secret_is_out_of_the_sandboxs_reach(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_GRADING_SECRET", raising=False)
    monkeypatch.setenv("COURSE_GRADING_HOME", str(tmp_path / "home"))
    secret = grading_secret()
    script = f"import os; print(os.path.exists({str(secret_path())!r}))"
    result = run_sandboxed([sys.executable, "-I", "-c", script], workdir=tmp_path / "w",
                           timeout=60)
    assert result.stdout.strip() == "False" and secret not in result.stdout
    monkeypatch.setenv("COURSE_GRADING_HOME", str(Path(sys.prefix) / "grading"))
    with pytest.raises(ValueError, match="would be readable by student code"):
        grading_secret()


# --------------------------------------------------------------------------- classes 5-7


READER = '''
import glob, os, sqlite3
found = []
for path in glob.glob("**/gradebook.db*", recursive=True) + glob.glob("/**/gradebook.db"):
    try:
        found += [r[0] for r in sqlite3.connect(path).execute("SELECT source FROM source_cell")]
    except Exception as err:
        found.append(f"{path}: {err}")
for path in glob.glob("**/autograded/**/*.ipynb", recursive=True):
    found.append(open(path).read())
print("LOOT", len(found), "\\n".join(found))
with open(os.path.join(os.environ["HOME"], "loot.txt"), "w") as fh:  # a late cell's output is
    fh.write(f"LOOT {len(found)}")  # withheld from the page: the test reads this instead
'''

PLANTER = '''
import os, subprocess, sys
code = """
import os, time
end = time.time() + 120
while time.time() < end:
    for root, dirs, files in os.walk("."):
        if root.rstrip("/").endswith("01_metrics") and "feedback" in root:
            for name in ("extra.html", "01_metrics.html"):
                try:
                    with open(os.path.join(root, name), "w") as f:
                        f.write("<html><body>PLANTED " + "x" * 1000 + "</body></html>")
                except OSError:
                    pass
    time.sleep(0.05)
"""
subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("planted")
'''


def _hidden_lines(assignment: str) -> list[str]:
    nb = json.loads((ROOT / "source" / assignment / EXERCISES[assignment].notebook_name)
                    .read_text())
    lines, inside = [], False
    for cell in nb["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                inside = "BEGIN" in line
            elif inside and len(line.strip()) >= 12:
                lines.append(line.strip())
    return lines


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    """Chapter 1 graded for an honest student and students whose cells read or plant files."""
    from autograder.grade import grade

    base = tmp_path_factory.mktemp("hostile")
    spec = EXERCISES["01_metrics"]
    for name, extra in (("honest", None), ("reader", READER), ("planter", PLANTER),
                        ("reader-late", READER)):
        nb = nbformat.read(_submission(base, "01_metrics", solution_code(ROOT, "01_metrics")),
                           as_version=4)
        if extra:  # the hostile students' experiments at CI size; the honest one's full size
            nb = with_parameters(nb, ci_parameters_of(ROOT, "01_metrics"))
            at = len(nb.cells) if name == "reader-late" else next(
                i for i, c in enumerate(nb.cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == spec.solution_id) + 1
            nb.cells.insert(at, nbformat.v4.new_code_cell(extra))
        (base / "subs" / name).mkdir(parents=True)
        nbformat.write(nb, base / "subs" / name / spec.notebook_name)
    rows = grade("01_metrics", base / "subs", base / "out", root=ROOT, workers=2,
                 isolate=ISOLATE, timeout=240, cell_timeout=60,
                 keep_work=True)  # the readers' loot.txt stays for class 6
    # once no process runs as a sandbox uid, no planter can write any more
    wait_until(lambda: not sandbox_processes(), 60, "a student's process is still alive")
    return base / "out", {r.student_id: r for r in rows}


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_5_feedback_shows_no_hidden_test(hostile_batch):
    out, rows = hostile_batch
    hidden = _hidden_lines("01_metrics")
    assert hidden
    for student in rows:
        page = (out / "feedback" / student / "01_metrics" / "01_metrics.html").read_text()
        assert [h for h in hidden if h in page] == [], student
        assert "output withheld: this cell also runs hidden tests" in page


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("student", ["reader", "reader-late"])
def test_class_6_student_code_finds_no_gradebook_or_graded_copy(hostile_batch, student):
    out, rows = hostile_batch
    assert (rows[student].score, rows[student].flagged) == (rows["honest"].score, False)
    page = (out / "feedback" / student / "01_metrics" / "01_metrics.html").read_text()
    assert ("LOOT 0" in page) == (student == "reader")  # reader-late ran after hidden tests
    assert (out / "work" / student / "nbgrader" / "loot.txt").read_text() == "LOOT 0"


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_7_only_the_expected_page_is_published(hostile_batch):
    out, rows = hostile_batch
    for student in rows:
        pages = sorted(p.name for p in (out / "feedback" / student / "01_metrics").iterdir())
        assert pages == ["01_metrics.html"], student
        page = (out / "feedback" / student / "01_metrics" / "01_metrics.html").read_text()
        top = EXERCISES["01_metrics"].max_score
        assert "PLANTED " + "x" * 20 not in page, student  # the planted body, not the source
        assert f"Recorded score: {top:g} / {top:g}" in page, student
    assert rows["planter"].score == rows["honest"].score == EXERCISES["01_metrics"].max_score


# --------------------------------------------------------------------------- forbidden calls


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("assignment,old,new,called,failed", [
    ("01_metrics", "def binary_scores(y_true, y_pred):\n",
     "def binary_scores(y_true, y_pred):\n    from sklearn.metrics import f1_score\n"
     "    f1_score([1, 0], [1, 0])\n", "sklearn.metrics.f1_score",
     {"test_binary_scores", "test_binary_scores_zero_division"}),
    ("05_regularization", "def dropout(x, p, training=True):\n",
     "def dropout(x, p, training=True):\n    return torch.nn.functional.dropout(x, p, training)\n",
     "torch.nn.functional.dropout", None),
])
def test_forbidden_calls_fail_their_cells_with_the_reason(tmp_path, assignment, old, new, called,
                                                          failed):
    code = solution_code(ROOT, assignment)
    assert old in code
    got, scores = _trusted(tmp_path, assignment, code.replace(old, new, 1))
    assert got == (failed or set(EXERCISES[assignment].points) - {"test_dropout_module"}) \
        or got == set(EXERCISES[assignment].points), got
    for gid in got:
        assert f"the solution called {called}, which the exercise forbids" in scores[gid].message


@pytest.mark.slow
@pytest.mark.sandbox
def test_subclassing_a_forbidden_class_is_flagged(tmp_path):
    code = solution_code(ROOT, "04_learning_rate")
    fake = ("import torch\n\n\nclass MomentumSGD(torch.optim.SGD):\n"
            "    def __init__(self, params, lr, momentum=0.9):\n"
            "        super().__init__(params, lr=lr, momentum=momentum)\n")
    assert "class MomentumSGD" in code
    got, scores = _trusted(tmp_path, "04_learning_rate", fake)
    assert got == set(EXERCISES["04_learning_rate"].points)
    assert all("torch.optim.SGD, which the exercise forbids" in s.message
               for s in scores.values()), [s.message for s in scores.values()]


# --------------------------------------------------------------------------- class 8: totals

MEMORY_HOG = r'''
import os, time
kids = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        try:
            block = bytearray(150 * 2**20)
            for j in range(0, len(block), 4096):
                block[j] = 1
            time.sleep(3)
        finally:
            os._exit(0)
    kids.append(pid)
killed = sum(os.WIFSIGNALED(os.waitpid(pid, 0)[1]) for pid in kids)
print("killed", killed)
'''

THREAD_HOG = r'''
import os, threading, time
started = 0
for i in range(8):
    if os.fork() == 0:
        n = 0
        try:
            for _ in range(20):
                threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
                n += 1
        except RuntimeError:
            pass
        print("threads", n, flush=True)
        time.sleep(3.5)
        os._exit(0)
time.sleep(5)
'''


def _cgroups_here() -> bool:
    from autograder.isolation.limits import make_cgroups, remove_cgroups

    made = make_cgroups(64, 8)
    remove_cgroups(made)
    return len(made) == 2


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_8_memory_is_limited_for_all_processes_together(tmp_path):
    """8 processes of 150 MB each, 400 MB for the command: per process each would fit."""
    if not _cgroups_here():
        pytest.skip("the grader may not create cgroups here: only per-process limits hold")
    result = run_sandboxed([sys.executable, "-c", MEMORY_HOG], workdir=tmp_path, timeout=60,
                           memory_mb=400)
    killed = int(result.stdout.split()[1])
    assert 5 <= killed <= 7, result.stdout
    result = run_sandboxed([sys.executable, "-c", MEMORY_HOG], workdir=tmp_path, timeout=60,
                           memory_mb=2048)
    assert result.stdout.split() == ["killed", "0"]


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_8_tasks_are_limited_for_all_processes_together(tmp_path):
    """8 processes starting 20 threads each, 60 tasks for the command."""
    result = run_sandboxed([sys.executable, "-c", THREAD_HOG], workdir=tmp_path, timeout=60,
                           max_procs=60)
    counts = [int(line.split()[1]) for line in result.stdout.splitlines()
              if line.startswith("threads")]
    assert 0 < sum(counts) + len(counts) + 1 <= 60, counts


# ------------------------------------------------------------------- classes 1-3, end to end


@pytest.mark.slow  # runs course grade for real
def test_classes_1_to_3_the_command_writes_every_row(tmp_path):
    """`course grade` on a class where no entry can be read: exit 0, one error row each."""
    import csv
    import subprocess

    subs = tmp_path / "subs"
    subs.mkdir()
    _damaged_zip(subs / "zed.zip", zipfile.ZIP_DEFLATED)
    (subs / "deep").mkdir()
    _deep_folder(subs / "deep", 1500)
    (subs / "bad name!").mkdir()
    (subs / "bad_name_").mkdir()
    (subs / "v2").mkdir()
    (subs / "v2" / "01_metrics.ipynb").write_text(json.dumps(
        {"nbformat": 2, "nbformat_minor": 0, "worksheets": [], "metadata": {}}))
    try:
        proc = subprocess.run([str(Path(sys.executable).with_name("course")), "grade",
                               "01_metrics", str(subs), "--out", str(tmp_path / "out"),
                               "--root", str(ROOT), "--workers", "1"],
                              capture_output=True, text=True, timeout=600)
    finally:
        _remove_deep(subs / "deep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as fh:
        rows = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 5 and all(r["status"] == "error" for r in rows.values())
    assert rows["zed"]["reason"].startswith("unreadable zip file: error: Error -3")
    assert rows["deep"]["reason"] == "no notebook in the submission"
    assert rows["bad_name_"]["reason"] == "no notebook in the submission"
    (invalid,) = [sid for sid in rows if sid.startswith("_bad_name_-")]
    assert rows[invalid]["reason"] == "invalid student id 'bad name!'"
    assert rows["v2"]["reason"].startswith("nbformat version 2 is not supported")
