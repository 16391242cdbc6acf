"""Autograde one student with nbgrader, inside the sandbox; ``course grade`` runs this.

Run as ``python -P -m course.grading.nbgrader_worker ASSIGNMENT STUDENT`` in a scratch course
folder that holds nbgrader_config.py, a copy of the assignment's gradebook and
submitted/STUDENT/ASSIGNMENT/*.ipynb. It runs ``autograde`` then ``generate_feedback`` and
writes nbgrader's per-cell scores to ``nbgrader_result.json``:
``{"ok": bool, "error": str, "scores": {grade_id: [score, max_score]}}``.

Everything this process writes is as untrusted as the student's code it executed (the kernel
runs as the same user, in the same sandbox): ``course grade`` only uses it for feedback and to
flag disagreements with the trusted scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULT = "nbgrader_result.json"


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


def main(argv: list[str]) -> int:
    from course.grading.release import nbgrader_api

    assignment, student = argv
    course_dir = Path.cwd()
    out = {"ok": False, "error": "", "scores": {}}
    api = nbgrader_api(course_dir)
    result = api.autograde(assignment, student, force=True, create=True)
    if result["success"]:
        out["scores"] = _scores(course_dir, assignment, student, api.coursedir.course_id)
        feedback = api.generate_feedback(assignment, student, force=True)
        out["ok"] = bool(feedback["success"])
        out["error"] = "" if feedback["success"] else "feedback: " + _last_error(feedback)
    else:
        out["error"] = _last_error(result)
    (course_dir / RESULT).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
