"""The sandboxed half of ``course feedback``: nbgrader renders one student's page again.

Runs as ``python -P -m autograder.inside.feedback_worker ASSIGNMENT STUDENT`` in a scratch
course folder that holds the course's configuration, a copy of the gradebook (its final state:
manual scores, comments, late penalty) and the student's graded notebook as formgrader shows
it (hidden tests withheld, sanitised). No code of the student runs here; the notebook is data,
and the page nbgrader writes is sanitised again outside (``steps/feedback.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULT = "feedback_result.json"


def main(argv: list[str]) -> int:
    from course.lean_imports import skip_unused_format_checkers

    skip_unused_format_checkers()
    from autograder.inside.nbgrader_api import nbgrader_api

    assignment, student = argv
    course_dir = Path.cwd()
    result = nbgrader_api(course_dir).generate_feedback(assignment, student, force=True)
    (course_dir / RESULT).write_text(json.dumps({"ok": bool(result.get("success"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
