"""The channels' commands of ``course``: ``course grade``'s options for the LMS's own files
(its download zip's times, its roster), the LMS's own files filled by ``course export``, and
``course feedback`` (pages again from the gradebook, for nbgrader's release_feedback)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_feedback_command", "add_lms_options", "cmd_feedback", "export_to_lms"]


def add_lms_options(grd) -> None:
    """``course grade``'s options for Canvas's and Moodle's files (lms_zip.py, roster.py)."""
    from autograder.store.roster import COLUMNS

    grd.add_argument("--roster", type=Path, default=None, metavar="CSV",
                     help="the LMS's own export: Canvas's gradebook (Grades, Export) or "
                     "Moodle's grading worksheet; each Canvas user id or Moodle participant id "
                     "is graded as the student id of --roster-column (an id not in it gets a "
                     "row saying so)")
    grd.add_argument("--roster-column", default=None, metavar="COLUMN",
                     help="the roster's column holding the student id: for Canvas "
                     f"{' or '.join(repr(c) for c in COLUMNS['canvas'])}, for Moodle "
                     f"{' or '.join(repr(c) for c in COLUMNS['moodle'])} (default: the first)")
    grd.add_argument("--zip-time-zone", default=None, metavar="ZONE",
                     help="the LMS server's time zone (e.g. Europe/Berlin), to read the DOS "
                     "times of its download zip given as SUBMISSIONS when they carry no UTC "
                     "time; Canvas's entries get no time either way (its zip holds none)")


def export_to_lms(args, results, assignments: list[str]) -> int:
    """The LMS's own exported file, filled (``--canvas-gradebook``, ``--moodle-worksheet``)."""
    from autograder.store.lms_export import LmsFileError, fill_canvas, fill_moodle

    try:
        if args.canvas_gradebook:
            path = args.canvas_gradebook
            for assignment in assignments:  # each fills its own column of the same file
                path, missing = fill_canvas(results, assignment, path,
                                            args.out / "canvas_import.csv")
                _say_missing("Canvas", assignment, missing)
            print(f"Canvas import (Grades, Import): {path}")
        if args.moodle_worksheet:
            if len(assignments) != 1:
                print("error: a Moodle grading worksheet is one assignment's: name it, e.g. "
                      "course export 01_metrics --moodle-worksheet FILE", file=sys.stderr)
                return 2
            path, missing = fill_moodle(results, assignments[0], args.moodle_worksheet,
                                        args.out / "moodle_import.csv")
            _say_missing("Moodle", assignments[0], missing)
            print(f"Moodle upload (Upload grading worksheet): {path}")
    except LmsFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _say_missing(lms: str, assignment: str, missing: list[str]) -> None:
    if missing:
        print(f"{lms}: {len(missing)} graded student(s) of {assignment} not in its file "
              f"(left out): {', '.join(missing[:10])}")


def cmd_feedback(args) -> int:
    from autograder.final_feedback import FeedbackError, final_feedback
    from autograder.isolation.sandbox import isolation_available
    from course.notebooks import find_root

    root = find_root(args.root)
    isolate = not args.no_isolation
    if isolate:
        ok, why = isolation_available()
        if not ok:
            print(f"error: the grading sandbox does not work here: {why} (`bash "
                  "scripts/setup-system.sh` installs it; --no-isolation renders without it)",
                  file=sys.stderr)
            return 2
    try:
        made, failed = final_feedback(root, args.assignment, db_url=args.db, isolate=isolate)
    except (FeedbackError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(made)} page(s) made in feedback/<student>/{args.assignment}/ of the course "
          f"folder; next: nbgrader release_feedback {args.assignment}")
    return 1 if failed else 0


def add_feedback_command(sub) -> None:
    fbk = sub.add_parser("feedback", help="render every student's feedback page again from the "
                         "gradebook (after grading by hand)", description="Render each graded "
                         "student's page again from the gradebook's final state (manual scores, "
                         "comments, late penalty), sanitised, into feedback/<student>/"
                         "<assignment>/ of the course folder, with what `nbgrader "
                         "release_feedback` needs beside it.")
    fbk.add_argument("assignment", help="a graded chapter folder, e.g. 01_metrics")
    fbk.add_argument("--db", default=None, metavar="URL",
                     help="the gradebook, SQLite or postgresql://... (default: nbgrader's db_url, "
                     "gradebook.db of the course "
                     "directory)")
    fbk.add_argument("--no-isolation", action="store_true",
                     help="render without the sandbox (only where it cannot work)")
    fbk.add_argument("--root", type=Path, default=None, help="course repository root")
    fbk.set_defaults(func=cmd_feedback)
