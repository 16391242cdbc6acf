"""Autograde one student with nbgrader, inside the sandbox; ``course grade`` runs this.

Run as ``python -P -m autograder.inside.nbgrader_worker ASSIGNMENT STUDENT [--isolated]`` in a
scratch course folder that holds nbgrader_config.py, a copy of the assignment's gradebook and
submitted/STUDENT/ASSIGNMENT/*.ipynb. It runs ``autograde`` then ``generate_feedback`` and
writes nbgrader's per-cell scores to ``nbgrader_result.json``:
``{"ok": bool, "error": str, "scores": {grade_id: [score, max_score]}}``.

The student's code runs in nbgrader's kernel, a child of this process. Until the first cell
with hidden tests runs, the files that hold them are not on disk: just before the kernel
starts, the gradebook is read into memory and removed, with nbgrader's sanitised copy of the
notebook; this process is made non-dumpable, so the kernel cannot read its memory either.

From the first hidden-test cell on, the kernel holds hidden test text (it runs it: the
student's code can read IPython's history, hook later cells, inspect the frames that call it),
so nothing the kernel produces from then on is published. ``GuardedExecute`` notes that cell
and freezes the outputs of the cells before it (later kernel messages cannot update them);
the outputs and prompt numbers of that cell and every later one are withheld from the
feedback page. Right after the notebook ran (the kernel is shut down), every other process of
the sandbox is killed (``--isolated``: a pid namespace of its own), then the gradebook is put
back and nbgrader saves the scores. The feedback page is then written by this process alone,
from paths the kernel never saw (a fresh Jupyter data dir: no template it planted is used).

Each cell also has a CPU-time budget (``course grade`` measures the reference solution's, see
budget.py): ``CpuWatch`` adds up the CPU time of the kernel and its children (with
``--isolated``, of every process of the sandbox but this one, so that a process double-forked
away from the kernel still counts) while the cell runs and interrupts the kernel (SIGINT, as
nbclient does at a cell timeout) once the cell has used more; nbclient's wall-clock timeout
stays as the limit for code that waits instead. A spinning loop so costs seconds of CPU, while
an honest cell on a loaded machine, slower by the clock but not in CPU time, keeps its time.

Everything this process writes is still untrusted unless it exits normally (the kernel could
kill it and write this folder itself): ``course grade`` uses the result only after a normal
exit, and only for feedback and to flag disagreements with the trusted scores. Its error is a
code from ``ERRORS`` (a fixed vocabulary), never text that nbgrader or the kernel produced, and
a partial score (a test cell whose output is a number) is refused.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

RESULT = "nbgrader_result.json"
BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"  # nbgrader's delimiters (in a comment)
HIDDEN_MARK = BEGIN  # where hidden test text starts
WITHHELD = "(output withheld: this cell also runs hidden tests; its score is shown above)\n"
WITHHELD_AFTER = ("(output withheld: this cell ran after the hidden tests had started, so its "
                  "output is not shown)\n")
ERRORS = {  # the worker's only error codes; ``course grade`` shows these words, nothing else
    "kernel-died": "the kernel died",
    "cell-timeout": "a cell ran past its time limit",
    "schema": "the notebook's nbgrader metadata has a version nbgrader does not know",
    "notebook": "nbgrader could not read the notebook",
    "partial": ("nbgrader scored a test cell neither 0 nor its points (a number in its output, "
                "or a changed gradebook); refused"),
    "autograde": "nbgrader's autograde failed",
    "feedback": "nbgrader's feedback step failed",
}
# nbgrader's log and traceback (which can quote the kernel) only choose among the codes above
_ERROR_SIGNS = [("DeadKernelError", "kernel-died"), ("Kernel died", "kernel-died"),
                ("CellTimeoutError", "cell-timeout"), ("TimeoutError", "cell-timeout"),
                ("SchemaTooNewError", "schema"), ("SchemaTooOldError", "schema"),
                ("NotJSONError", "notebook"), ("NotebookValidationError", "notebook")]
MIN_SCRUB = 12  # shorter hidden lines (`assert x`) are too common to replace everywhere


class _State:
    course_dir = Path.cwd()
    student = ""
    assignment = ""
    isolated = False
    gradebook: bytes | None = None
    first_hidden: int | None = None  # index of the first cell that ran hidden test text


def _hide_from_kernel(nb, resources):
    """Before the kernel starts: the gradebook and nbgrader's sanitised notebook leave the disk
    (both were read already), and this process's memory becomes unreadable to the kernel."""
    from autograder.inside.linux import set_dumpable

    try:
        set_dumpable(False)
    except (OSError, AttributeError):
        pass
    gradebook = _State.course_dir / "gradebook.db"
    _State.gradebook = gradebook.read_bytes()
    gradebook.unlink()
    autograded = _State.course_dir / "autograded" / _State.student / _State.assignment
    for path in autograded.glob("*.ipynb"):
        path.unlink()
    return nb, resources


def _end_leftovers() -> None:
    """Kill every other process of the sandbox (its own pid namespace: pid 1, bubblewrap, and
    this process survive)."""
    if _State.isolated:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass


def _after_student_code(nb, resources):
    """The notebook ran: end whatever the student's code left running, put the gradebook back."""
    _end_leftovers()
    gradebook = _State.course_dir / "gradebook.db"
    for leftover in _State.course_dir.glob("gradebook.db*"):
        leftover.unlink()
    gradebook.write_bytes(_State.gradebook or b"")
    return nb, resources


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CPU_NOTE = "(stopped: this cell used more than {limit:g} s of CPU time, its limit here)"


def cpu_seconds(root: int | None) -> float:
    """CPU time of process ``root`` and every process below it (those running, and those it
    has waited for), in seconds; 0 for a process that is gone.

    ``root`` None: of every process of this pid namespace but this one. In the sandbox's own
    namespace (``--isolated``) that is the kernel's tree and whatever left it: a process the
    student's code double-forked is re-parented to the namespace's init, outside the kernel's
    tree, and its time (or, once it is reaped, the init's) still counts."""
    from autograder.inside.linux import processes

    stats, children = {}, {}
    for process in processes(cpu=True):
        stats[process.pid] = process.ticks
        children.setdefault(process.ppid, []).append(process.pid)
    if root is None:
        return sum(t for pid, t in stats.items() if pid != os.getpid()) / _TICKS
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid]
        todo.extend(children.get(pid, ()))
    return total / _TICKS


class CpuWatch:
    """Interrupt the kernel when the running cell has used more than ``limit`` s of CPU
    (``namespace``: counted over the whole pid namespace, see ``cpu_seconds``)."""

    def __init__(self, pid: int | None, limit: float | None, namespace: bool = False):
        import threading

        self.pid, self.limit, self.fired, self.used = pid, limit, False, 0.0
        self.root = None if namespace else pid
        self.start = self._seconds()
        self.done = threading.Event()
        self.thread = None
        if pid and limit:
            self.thread = threading.Thread(target=self._watch, daemon=True)
            self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            self.used = max(self.used, self._seconds() - self.start)
            if self.used > self.limit:
                self.fired = True
                try:
                    os.kill(self.pid, signal.SIGINT)  # ipykernel: KeyboardInterrupt in the cell
                except OSError:
                    pass
                return  # a cell that swallows it meets nbclient's wall-clock timeout

    def stop(self) -> float:
        """The CPU seconds the cell used (as last seen, if the kernel is gone)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        self.used = max(self.used, self._seconds() - self.start)
        return self.used

    def _seconds(self) -> float:
        return cpu_seconds(self.root) if self.pid else 0.0


def _kernel_pid(client) -> int | None:
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    pid = getattr(provisioner, "pid", None)
    return pid if isinstance(pid, int) and pid > 0 else None


def guarded_execute(execute):
    """nbgrader's Execute, noting the first cell that sends hidden test text to the kernel,
    and holding each cell to its CPU-time budget (``cpu_budgets`` by grade_id, ``cpu_other``
    for every other cell; 0: none). The CPU time each cell used is noted in its metadata
    (``course.cpu_seconds``), which is how budget.py measures the reference solution.

    Before the first hidden-test cell runs, the outputs of the cells before it are replaced by
    copies and the kernel's display ids are forgotten: an ``update_display_data`` sent later
    (by code that has read the hidden tests) cannot rewrite them.
    """
    from traitlets import Dict, Float, Unicode

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return execute.preprocess_cell(self, cell, resources, index)
        if _State.first_hidden is None and HIDDEN_MARK in cell.source:
            _State.first_hidden = index
            for earlier in self.nb.cells[:index]:
                if earlier.cell_type == "code":
                    earlier.outputs = copy.deepcopy(earlier.outputs)
            for earlier in range(index):  # nbclient's public way to forget display ids
                self.clear_display_id_mapping(earlier)
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        limit = float(self.cpu_budgets.get(grade_id, self.cpu_other)) or None
        watch = CpuWatch(_kernel_pid(self), limit, namespace=_State.isolated)
        try:
            return execute.preprocess_cell(self, cell, resources, index)
        finally:
            used = watch.stop()
            cell.metadata.setdefault("course", {})["cpu_seconds"] = round(used, 3)
            if watch.fired:
                from nbformat.v4 import new_output

                # stdout: nbgrader zeroes a test cell with stderr; the note decides nothing
                cell.outputs.append(new_output("stream", name="stdout",
                                               text=self.cpu_note.format(limit=limit) + "\n"))

    return type("GuardedExecute", (execute,), {
        "preprocess_cell": preprocess_cell,
        "cpu_budgets": Dict(help="CPU seconds per test cell, by grade_id").tag(config=True),
        "cpu_other": Float(0.0, help="CPU seconds of every other cell (0: no limit)").tag(
            config=True),
        "cpu_note": Unicode(CPU_NOTE, help="what a stopped cell says ({limit}: its budget)").tag(
            config=True)})


def _preprocessor(name: str, function):
    from nbconvert.preprocessors import Preprocessor

    return type(name, (Preprocessor,), {"preprocess": lambda self, nb, res: function(nb, res)})


def _cut_hidden(source: str) -> tuple[str, list[str]]:
    """The source without its hidden test regions, and the hidden lines."""
    kept, hidden, inside = [], [], False
    for line in source.splitlines(keepends=True):
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif inside:
            hidden.append(line.strip())
        else:
            kept.append(line)
    return "".join(kept), hidden


def _scrub(value, hidden: list[str]):
    if isinstance(value, str):
        for line in hidden:
            value = value.replace(line, "[hidden test]")
        return value
    if isinstance(value, list):
        return [_scrub(v, hidden) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, hidden) for k, v in value.items()}
    return value


def without_hidden_tests(nb, first_hidden: int | None = None) -> None:
    """Cut hidden test regions out of ``nb`` (an autograded notebook), in place.

    ``first_hidden`` is the index of the first cell that ran hidden test text: the outputs and
    prompt numbers of that cell and of every cell after it are withheld (the kernel could show
    the hidden tests there, in any encoding). ``None``: no hidden test ran; only the cells that
    hold hidden tests are withheld.
    """
    import nbformat

    if first_hidden is None:
        first_hidden = len(nb.cells)
    elif first_hidden >= len(nb.cells) or HIDDEN_MARK not in nb.cells[first_hidden].source:
        first_hidden = 0  # not the notebook that ran: withhold every output
    nb.metadata.pop("widgets", None)  # widget state the kernel sent, at any time
    hidden = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        has_hidden = HIDDEN_MARK in cell.source
        if has_hidden:
            cell.source, lines = _cut_hidden(cell.source)
            hidden += lines
        if has_hidden or index >= first_hidden:
            note = WITHHELD if has_hidden else WITHHELD_AFTER
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=note)]
            cell.execution_count = None
    hidden = sorted({h for h in hidden if len(h) >= MIN_SCRUB}, key=len, reverse=True)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(_scrub(dict(o), hidden)) for o in cell.outputs]
        else:
            cell.source = _scrub(cell.source, hidden)


def error_code(result: dict, default: str) -> str:
    """The code in ERRORS for a failed nbgrader run (its log only chooses among them)."""
    text = "\n".join(str(result.get(k) or "") for k in ("log", "error"))
    return next((code for sign, code in _ERROR_SIGNS if sign in text), default)


def _scores(course_dir: Path, assignment: str, student: str, course_id: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}", course_id) as gb:
        submission = gb.find_submission(assignment, student)
        # test cells only: a written answer (markdown) is graded by a person, not compared
        return {grade.name: [grade.score, grade.max_score]
                for notebook in submission.notebooks for grade in notebook.grades
                if grade.cell.cell_type == "code"}


def _all_or_nothing(scores: dict) -> bool:
    """Every test cell got 0 or its points. Anything else comes from the student's code (a
    number in a test cell's output: nbgrader's partial credit, which these tests never use, or
    a score written into the gradebook) and could carry any value."""
    return all(score in (0, max_score) for score, max_score in scores.values())


def _configure(api) -> None:
    """Put the two steps around nbgrader's Execute preprocessor, and guard Execute."""
    from nbgrader.converters import Autograde

    steps = list(Autograde.class_traits()["autograde_preprocessors"].default())
    at = next(i for i, p in enumerate(steps) if p.__name__ == "Execute")
    steps[at:at + 1] = [_preprocessor("HideFromKernel", _hide_from_kernel),
                        guarded_execute(steps[at]),
                        _preprocessor("AfterStudentCode", _after_student_code)]
    api.config.Autograde.autograde_preprocessors = steps
    from autograder.inside import zygote

    if zygote.IN_FORK:  # the kernel is the fork main() left waiting (forked_kernel.py)
        from autograder.inside.forked_kernel import ForkedKernelManager

        api.config.ExecutePreprocessor.kernel_manager_class = ForkedKernelManager


def _fresh_feedback_env(course_dir: Path) -> None:
    """Nothing the kernel wrote can shape the feedback: its Jupyter folders are removed and
    Jupyter's data and config paths (where nbconvert finds templates) point to a folder made
    now, with every other process dead; the feedback folder is made anew by nbgrader."""
    from autograder.inside.tree import remove

    for name in (".jupyter", ".ipython", ".local", ".config", "feedback", RESULT):
        remove(course_dir / name)
    fresh = Path(tempfile.mkdtemp(prefix="feedback-env-"))
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("HOME", "home")):
        (fresh / sub).mkdir()
        os.environ[var] = str(fresh / sub)
    for var in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        os.environ.pop(var, None)


def _strip_feedback_source(course_dir: Path, assignment: str, student: str) -> None:
    import nbformat

    from autograder.inside.sanitise import (
        FEEDBACK_CELL_METADATA,
        FEEDBACK_OUTPUTS,
        sanitize_notebook,
    )

    for path in (course_dir / "autograded" / student / assignment).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        without_hidden_tests(nb, _State.first_hidden)
        # cell by cell, so that one cell's unclosed tag cannot hide the next ones when the
        # page is sanitised as a whole
        sanitize_notebook(nb, keep_output=FEEDBACK_OUTPUTS,
                          keep_cell_metadata=FEEDBACK_CELL_METADATA)
        path.chmod(0o644)  # nbgrader leaves it read-only
        nbformat.write(nb, path)


def _grade(api, course_dir: Path, assignment: str, student: str) -> dict:
    """autograde, then (with nothing of the student's left running) feedback."""
    out = {"ok": False, "error": "", "scores": {}}
    try:
        result = api.autograde(assignment, student, force=True, create=True)
    finally:
        _end_leftovers()  # also when autograde stopped before AfterStudentCode
    _fresh_feedback_env(course_dir)
    if not result["success"]:
        out["error"] = error_code(result, "autograde")
        return out
    scores = _scores(course_dir, assignment, student, api.coursedir.course_id)
    if not _all_or_nothing(scores):
        out["error"] = "partial"
        return out
    _strip_feedback_source(course_dir, assignment, student)
    feedback = api.generate_feedback(assignment, student, force=True)
    if not feedback["success"]:
        out["error"] = error_code(feedback, "feedback")
        return out
    return {"ok": True, "error": "", "scores": scores}


def main(argv: list[str]) -> int:
    from autograder.inside import zygote

    if zygote.IN_FORK:  # first, before anything is read: the kernel-to-be holds no secret
        from autograder.inside import forked_kernel

        forked_kernel.prefork()
    from course.lean_imports import skip_unused_format_checkers

    skip_unused_format_checkers()  # 1.2 s of nbformat's import, per student
    from autograder.inside.nbgrader_api import nbgrader_api

    assignment, student, *flags = argv
    course_dir = Path.cwd()
    _State.course_dir, _State.student, _State.assignment = course_dir, student, assignment
    _State.isolated = "--isolated" in flags
    api = nbgrader_api(course_dir)
    _configure(api)
    out = _grade(api, course_dir, assignment, student)
    (course_dir / RESULT).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
