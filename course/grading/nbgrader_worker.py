"""Autograde one student with nbgrader, inside the sandbox; ``course grade`` runs this.

Run as ``python -P -m course.grading.nbgrader_worker ASSIGNMENT STUDENT [--isolated]`` in a
scratch course folder that holds nbgrader_config.py, a copy of the assignment's gradebook and
submitted/STUDENT/ASSIGNMENT/*.ipynb. It runs ``autograde`` then ``generate_feedback`` and
writes nbgrader's per-cell scores to ``nbgrader_result.json``:
``{"ok": bool, "error": str, "scores": {grade_id: [score, max_score]}}``.

The student's code runs in nbgrader's kernel, a child of this process. While it runs, the files
that hold the hidden tests are not on disk: just before the kernel starts, the gradebook is read
into memory and removed, with nbgrader's sanitised copy of the notebook; this process is made
non-dumpable, so the kernel cannot read its memory either. Right after the notebook ran (the
kernel is shut down), every other process of the sandbox is killed (``--isolated``: a pid
namespace of its own), then the gradebook is put back and nbgrader saves the scores. The
feedback page is written with nothing of the student's left running: hidden test regions are
cut from the test cells, the outputs of the cells that ran hidden tests are withheld, and any
line of hidden test text found in another output is replaced.

Everything this process writes is still untrusted (the kernel could change files in this folder
while it ran): ``course grade`` only uses it for feedback and to flag disagreements with the
trusted scores.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

RESULT = "nbgrader_result.json"
BEGIN, END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
WITHHELD = "(output withheld: this cell also runs hidden tests; its score is shown above)\n"
MIN_SCRUB = 12  # shorter hidden lines (`assert x`) are too common to replace everywhere
_PR_SET_DUMPABLE = 4


class _State:
    course_dir = Path.cwd()
    student = ""
    assignment = ""
    isolated = False
    gradebook: bytes | None = None


def _hide_from_kernel(nb, resources):
    """Before the kernel starts: the gradebook and nbgrader's sanitised notebook leave the disk
    (both were read already), and this process's memory becomes unreadable to the kernel."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    gradebook = _State.course_dir / "gradebook.db"
    _State.gradebook = gradebook.read_bytes()
    gradebook.unlink()
    autograded = _State.course_dir / "autograded" / _State.student / _State.assignment
    for path in autograded.glob("*.ipynb"):
        path.unlink()
    return nb, resources


def _after_student_code(nb, resources):
    """The notebook ran: end whatever the student's code left running, put the gradebook back."""
    if _State.isolated:  # this sandbox's own pid namespace: pid 1 (bubblewrap) and us survive
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    gradebook = _State.course_dir / "gradebook.db"
    for leftover in _State.course_dir.glob("gradebook.db*"):
        leftover.unlink()
    gradebook.write_bytes(_State.gradebook or b"")
    return nb, resources


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


def without_hidden_tests(nb) -> None:
    """Cut hidden test regions out of ``nb`` (an autograded notebook), in place."""
    import nbformat

    hidden = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and BEGIN in cell.source:
            cell.source, lines = _cut_hidden(cell.source)
            hidden += lines
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=WITHHELD)]
    hidden = sorted({h for h in hidden if len(h) >= MIN_SCRUB}, key=len, reverse=True)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(_scrub(dict(o), hidden)) for o in cell.outputs]
        else:
            cell.source = _scrub(cell.source, hidden)


def _last_error(result: dict) -> str:
    """The most telling line of a failed nbgrader run: its last exception, else its last error."""
    text = "\n".join(filter(None, (result.get("log"), result.get("error"))))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    generic = ("NbGraderException", "Please see the", "There was an error processing")
    specific = [line for line in lines if ("Error:" in line or "Exception:" in line)
                and not any(g in line for g in generic)]
    errors = [line for line in lines if line.startswith("[ERROR]")]
    return (specific or errors or ["nbgrader failed"])[-1][:500]


def _scores(course_dir: Path, assignment: str, student: str, course_id: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}", course_id) as gb:
        submission = gb.find_submission(assignment, student)
        # test cells only: a written answer (markdown) is graded by a person, not compared
        return {grade.name: [grade.score, grade.max_score]
                for notebook in submission.notebooks for grade in notebook.grades
                if grade.cell.cell_type == "code"}


def _configure(api) -> None:
    """Put the two steps around nbgrader's Execute preprocessor."""
    from nbgrader.converters import Autograde

    steps = list(Autograde.class_traits()["autograde_preprocessors"].default())
    at = next(i for i, p in enumerate(steps) if p.__name__ == "Execute")
    steps[at:at + 1] = [_preprocessor("HideFromKernel", _hide_from_kernel), steps[at],
                        _preprocessor("AfterStudentCode", _after_student_code)]
    api.config.Autograde.autograde_preprocessors = steps


def _strip_feedback_source(course_dir: Path, assignment: str, student: str) -> None:
    import nbformat

    for path in (course_dir / "autograded" / student / assignment).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        without_hidden_tests(nb)
        path.chmod(0o644)  # nbgrader leaves it read-only
        nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    from course.grading.release import nbgrader_api

    assignment, student, *flags = argv
    course_dir = Path.cwd()
    _State.course_dir, _State.student, _State.assignment = course_dir, student, assignment
    _State.isolated = "--isolated" in flags
    out = {"ok": False, "error": "", "scores": {}}
    api = nbgrader_api(course_dir)
    _configure(api)
    result = api.autograde(assignment, student, force=True, create=True)
    if result["success"]:
        out["scores"] = _scores(course_dir, assignment, student, api.coursedir.course_id)
        _strip_feedback_source(course_dir, assignment, student)
        feedback = api.generate_feedback(assignment, student, force=True)
        out["ok"] = bool(feedback["success"])
        out["error"] = "" if feedback["success"] else "feedback: " + _last_error(feedback)
    else:
        out["error"] = _last_error(result)
    (course_dir / RESULT).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
