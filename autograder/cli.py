"""The ``course`` command as installed: the student's commands (``course/cli.py``: run, score)
and the instructor's on top: release, grade, export, report, feedback, all, book."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from autograder import settings
from autograder.cli_channels import add_feedback_command, add_lms_options, export_to_lms
from autograder.cluster_tls import add_certs_command, add_tls_options
from course.cli import PRIVATE_COMMANDS, add_student_commands, print_table, run_command

__all__ = ["build_parser", "check_samples", "main"]


def cmd_release(args) -> int:
    from autograder.exercises import RegistryError, registry
    from autograder.store.release import ReleaseError, release
    from course.notebooks import find_root

    root = find_root(args.root)
    try:
        registry(root)  # every graded cell has a trusted check, and every check a cell
        written = release(root, args.assignments or None)
    except (RegistryError, ReleaseError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_table([(p.name, str(p.relative_to(root)),
                   ", ".join(sorted(f.name for f in p.iterdir()))) for p in written],
                 ("assignment", "folder", "files"))
    print(f"\nreleased {len(written)} assignment(s); commit release/ with source/")
    return 0


def _recorder(args):
    """Where `course grade` records the class: --db, else nbgrader's db_url of the course."""
    from autograder.store.deadlines import load_policies
    from autograder.store.gradebook import Recorder, course_dir, nbgrader_settings
    from course.notebooks import find_root

    root = find_root(args.root)
    db_url, course_id = nbgrader_settings(root)
    return Recorder(args.db or db_url, course_dir(args.db, root), course_id=course_id,
                    wait=args.db_wait, policies=load_policies(root),
                    say=lambda line: print(line, flush=True))


def cmd_grade(args) -> int:
    from autograder.cluster import ClusterError
    from autograder.cluster_tls import grade_security
    from autograder.exercises import RegistryError
    from autograder.grade import IsolationUnavailable, grade
    from autograder.steps.budget import BudgetError
    from autograder.store.gradebook import GradebookBusy, safe_url

    if args.no_isolation:
        print("WARNING: --no-isolation: student code runs as you, with access to your files, "
              "the network and this repository. Only do this for submissions you trust.",
              file=sys.stderr)

    def progress(row, done, total):
        note = " (already graded)" if row.resumed else f" in {row.seconds:.1f} s"
        print(f"[{done}/{total}] {row.student_id}: {row.status} {row.score:g}/{row.max_score:g}"
              f"{note}", flush=True)

    start = time.perf_counter()
    try:
        recorder = _recorder(args)
        rows = grade(args.assignment, args.submissions, args.out, root=args.root,
                     workers=args.workers, isolate=not args.no_isolation, timeout=args.timeout,
                     cell_timeout=args.cell_timeout, on_row=progress, gradebook=recorder,
                     scheduler=args.scheduler, budgets=not args.flat_limits,
                     security=grade_security(args), keep_work=args.keep_work,
                     roster=args.roster, roster_column=args.roster_column,
                     zip_time_zone=args.zip_time_zone)
    except (ClusterError, BudgetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except GradebookBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except IsolationUnavailable as err:
        print(f"error: cannot isolate student code here: {err}\nInstall bubblewrap, or pass "
              "--no-isolation to grade without isolation (unsafe).", file=sys.stderr)
        return 2
    except (OSError, ValueError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _summarise(rows, args, time.perf_counter() - start, safe_url(recorder.db_url))


def _summarise(rows, args, seconds: float, gradebook: str) -> int:
    """The class's table and totals; exit status 4 when the grader failed on anyone."""
    from autograder.store.results import GRADED, GRADER_ERROR

    print()
    print_table([(r.student_id, f"{r.score:g}/{r.max_score:g}", r.status,
                   "" if r.nbgrader_score is None else f"{r.nbgrader_score:g}",
                   "FLAGGED" if r.flagged else "", r.reason[:70]) for r in rows],
                 ("student", "score", "status", "nbgrader", "flag", "reason"))
    graded = [r for r in rows if r.status == GRADED]
    ours = [r for r in rows if r.status == GRADER_ERROR]
    mean = sum(r.score for r in graded) / len(graded) if graded else float("nan")
    print(f"\n{len(graded)}/{len(rows)} graded, {len(rows) - len(graded) - len(ours)} "
          f"submission error(s), {len(ours)} grader error(s), "
          f"{sum(r.flagged for r in rows)} flagged; mean score {mean:.2f}; {seconds:.1f} s "
          + (f"on the Dask cluster at {args.scheduler}" if args.scheduler
             else f"with {args.workers or os.cpu_count()} worker(s)"))
    print(f"grades: {args.out / 'grades.csv'}; feedback: {args.out / 'feedback'}; "
          f"review in formgrader: {gradebook}")
    if ours:
        print(f"error: the grader failed on {len(ours)} student(s): "
              f"{', '.join(r.student_id for r in ours)}. This is a fault of the grader, not "
              "of their submissions (no score was recorded for them); the reason column says "
              "where. Rerun the same command after the fix: the graded students are skipped.",
              file=sys.stderr)
        return 4
    return 0


def _gradebook_results(args):
    """(gradebook URL, notebooks by assignment, the gradebook's results) for ``course export``
    and ``course report``, or the exit code after saying what is wrong."""
    from autograder.exercises import RegistryError, registry
    from autograder.store.export import read_gradebook
    from autograder.store.gradebook import nbgrader_settings
    from course.notebooks import find_root

    root = find_root(args.root)
    try:
        graded = registry(root)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.assignments) - set(graded))
    if unknown:
        print(f"error: no graded assignment {', '.join(unknown)}; graded: {', '.join(graded)}",
              file=sys.stderr)
        return 2
    db_url, course_id = nbgrader_settings(root)
    db_url = args.db or db_url
    notebooks = {a: graded[a].notebook for a in (args.assignments or graded)}
    results = read_gradebook(db_url, course_id, notebooks)
    return db_url, notebooks, results


def cmd_export(args) -> int:
    from autograder.store.export import write_canvas, write_gradescope, write_wide
    from autograder.store.gradebook import safe_url

    found = _gradebook_results(args)
    if isinstance(found, int):
        return found
    db_url, notebooks, results = found
    if not results:
        print(f"error: no graded submissions of {', '.join(notebooks)} in {safe_url(db_url)}: "
              "run `course grade` first (with the same --db)", file=sys.stderr)
        return 1
    out = args.out
    write_canvas(results, out / "canvas.csv")
    write_wide(results, out / "grades_wide.csv")
    jsons = write_gradescope(results, out / "gradescope")
    print_table([(r.assignment, r.student, f"{r.score:g}/{r.max_score:g}",
                   f"-{r.late_penalty:g}" if r.late_penalty else "", r.notes()[:70])
                  for r in results], ("assignment", "student", "score", "late", "notes"))
    ungraded = sum(len(r.ungraded) for r in results)
    print(f"\n{len(results)} submission(s) from {safe_url(db_url)}; {ungraded} answer(s) still "
          f"to grade in formgrader (counted 0 until then)")
    print(f"Canvas: {out / 'canvas.csv'}; wide: {out / 'grades_wide.csv'}; Gradescope: "
          f"{out / 'gradescope'}/<assignment>/<student>/results.json ({len(jsons)} files)")
    return export_to_lms(args, results, sorted({r.assignment for r in results}))


def cmd_report(args) -> int:
    from autograder.report import build_report, write_report
    from autograder.store.gradebook import safe_url
    from autograder.store.results import read_results

    found = _gradebook_results(args)
    if isinstance(found, int):
        return found
    db_url, notebooks, results = found
    rows = [r for folder in args.results for r in read_results(folder)
            if r.assignment in notebooks]
    if not results and not rows:
        print(f"error: no graded submissions of {', '.join(notebooks)} in {safe_url(db_url)}: "
              "run `course grade` first (with the same --db)", file=sys.stderr)
        return 1
    reports = build_report(results, rows)
    page = write_report(reports, args.out)
    print_table([(a, len(r.scores), f"{r.mean:.2f}/{r.max_score:g}",
                  sum(len(s) for s in r.mistakes.values()), len(r.flagged),
                  len(r.grader_errors), sum(len(c) for c in r.ungraded.values()))
                 for a, r in reports.items()],
                ("assignment", "students", "mean", "diagnosed", "flagged", "grader faults",
                 "to grade"))
    print(f"\nreport: {page} (open it in a browser; no server needed)")
    return 0


def check_samples(rows, kinds: dict[str, str]) -> list[str]:
    """What is wrong with a graded sample batch: only the solution may get full marks, and each
    mistake must be diagnosed as itself (the solution and the untouched release as nothing)."""
    problems = []
    for row in rows:
        kind = kinds.get(row.student_id, "?")
        own = [] if kind in ("solution", "release") else [kind]
        if row.status == "graded" and list(row.diagnoses) != own:
            problems.append(f"{row.student_id} ({kind}): diagnosed as "
                            f"{', '.join(row.diagnoses) or 'nothing'}")
        if row.status != "graded":
            problems.append(f"{row.student_id}: {row.status} ({row.reason[:120]})")
        elif (kind == "solution") != (row.score == row.max_score):
            problems.append(f"{row.student_id} ({kind}): {row.score:g}/{row.max_score:g}")
        elif kind == "release" and row.score != 0:
            problems.append(f"the untouched release scored {row.score:g}")
    return problems


def cmd_all(args) -> int:
    import shutil

    from autograder.exercises import registry
    from autograder.grade import grade
    from autograder.isolation.sandbox import isolation_available
    from autograder.store.release import check_release_up_to_date
    from autograder.store.samples import ci_parameters_of, write_samples
    from course.notebooks import discover, find_root, run_notebooks

    root = find_root(args.root)
    graded_exercises = registry(root)  # stops here if a graded cell has no check
    out_dir = (args.out or root / "build" / ("all-ci" if args.ci else "all")).resolve()
    start = time.perf_counter()
    failures = []

    print(f"== 1/3 every notebook{' (CI parameters)' if args.ci else ''}", flush=True)
    results = run_notebooks(root, discover(root), ci=args.ci, out_dir=out_dir / "notebooks",
                            jobs=args.jobs)
    print_table([(r.notebook, r.status, f"{r.seconds:.1f}", r.detail) for r in results],
                 ("notebook", "status", "seconds", "detail"))
    failures += [f"notebook {r.notebook}: {r.status}" for r in results if r.status != "ok"]

    print("\n== 2/3 release/ against a fresh `course release` of source/", flush=True)
    stale = check_release_up_to_date(root)
    print("\n".join(stale) if stale else "up to date")
    failures += stale

    print("\n== 3/3 sample submissions graded with `course grade` (autograder/samples/"
          f"{'; their experiments at the CI parameters' if args.ci else ''})", flush=True)
    isolate, why = isolation_available()
    if not isolate:
        print(f"note: no sandbox here ({why}); grading the course's own samples without "
              "isolation. Real submissions need it: install bubblewrap.")
    table = []
    for assignment in graded_exercises:
        subs, graded = out_dir / "samples" / assignment, out_dir / "graded" / assignment
        for folder in (subs, graded):
            shutil.rmtree(folder, ignore_errors=True)
        kinds = write_samples(root, assignment, subs,
                              ci_parameters_of(root, assignment) if args.ci else None)
        rows = grade(assignment, subs, graded, root=root, workers=args.workers, isolate=isolate)
        table += [(assignment, r.student_id, f"{r.score:g}/{r.max_score:g}", r.status,
                   ", ".join(r.diagnoses) or "-", r.reason[:60]) for r in rows]
        failures += [f"{assignment} {p}" for p in check_samples(rows, kinds)]
    print_table(table, ("assignment", "student", "score", "status", "diagnosis", "reason"))

    print(f"\n{time.perf_counter() - start:.1f} s; notebooks, samples and grades in {out_dir}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all good: every notebook ran, release/ is current, only the solutions got full "
          "marks, and each mistake was diagnosed as itself")
    return 0


def cmd_book(args) -> int:
    from autograder.book import Launch, build_book
    from autograder.book.pages import StaleRelease
    from autograder.book.site import ChapterFailed
    from course.notebooks import find_root

    root = find_root(args.root)
    try:
        launch = Launch.from_settings(repository=args.repository, branch=args.branch,
                                      hub=args.hub_url, binder=args.binder,
                                      pages_branch=args.pages_branch, install=args.install)
        launch.links("01_metrics")  # a repository Binder and Colab cannot open stops here
        result = build_book(root, args.out or root / "build" / "book", ci=args.ci,
                            jobs=args.jobs, launch=launch)
    except ModuleNotFoundError as err:
        print(f"error: {err}: `course book` needs the book extra (Python 3.11+): "
              "pip install -e '.[book]'", file=sys.stderr)
        return 2
    except (StaleRelease, ChapterFailed, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_table([(c.chapter, c.status, f"{c.seconds:.1f}", c.size) for c in result.chapters],
                ("chapter", "page", "seconds", "size"))
    for line in result.warnings:
        print(f"sphinx: {line}", file=sys.stderr)
    print(f"\n{result.seconds:.1f} s; the site: {result.html / 'index.html'}")
    return 0


def _add_all(sub) -> None:
    every = sub.add_parser("all", help="the course end to end: notebooks, release, grading",
                           description="Execute every notebook, check that release/ matches "
                           "source/, and grade the sample submissions of every graded chapter "
                           "(solution, untouched release, common mistakes). Exit status 1 if "
                           "anything is not as expected.")
    every.add_argument("--ci", action="store_true",
                       help="run the notebooks with the small parameters of "
                       "tests/notebook_params.yaml")
    every.add_argument("--out", type=Path, help="output folder (default: build/all[-ci])")
    every.add_argument("-j", "--jobs", type=int, default=1, help="notebooks run at once")
    every.add_argument("--workers", type=int, default=None,
                       help="students graded at once (default: the number of CPU cores)")
    every.add_argument("--root", type=Path, default=None, help="course repository root")
    every.set_defaults(func=cmd_all)


def _add_release(sub) -> None:
    rel = sub.add_parser("release", help="regenerate release/ from source/ with nbgrader",
                         description="Generate the student version of each chapter (solutions "
                         "replaced by stubs, hidden tests removed) into release/.")
    rel.add_argument("assignments", nargs="*", help="chapter folders (default: all of source/)")
    rel.add_argument("--root", type=Path, default=None, help="course repository root")
    rel.set_defaults(func=cmd_release)


def _add_grade(sub) -> None:
    grd = sub.add_parser("grade", help="autograde a folder of student submissions",
                         description="Grade every submission (one folder or zip per student) "
                         "in a sandbox; write OUT/grades.csv and OUT/feedback/. Rerunning "
                         "with the same OUT resumes: graded notebooks are not graded again.")
    grd.add_argument("assignment", help="chapter folder, e.g. 05_regularization")
    grd.add_argument("submissions", type=Path, help="folder of <student>/ or <student>.zip, "
                     "or the LMS's download zip as it is (Canvas, Moodle)")
    grd.add_argument("--out", type=Path, required=True, help="output folder")
    grd.add_argument("--workers", type=int, default=None,
                     help="students graded at once (default: the number of CPU cores)")
    grd.add_argument("--no-isolation", action="store_true",
                     help="run student code without the sandbox (unsafe; only when bubblewrap "
                     "is unavailable and you trust every submission)")
    grd.add_argument("--timeout", type=float, default=settings.STEP_SECONDS,
                     help="wall-clock seconds for each sandboxed step of one student")
    grd.add_argument("--cell-timeout", type=int, default=None,
                     help="seconds nbgrader lets one cell run before it interrupts it and "
                     "fails the cell (default: Execute.timeout of autograder/nbgrader_config.py)")
    grd.add_argument("--flat-limits", action="store_true",
                     help=f"limit each cell and each trusted probe by the flat limits "
                     f"({settings.flat_cell_seconds():g} s, {settings.PROBE_SECONDS:g} s) instead "
                     "of budgets measured from the reference solution on this machine "
                     f"({settings.MULTIPLE}x its CPU time, at least "
                     f"{settings.CELL_CPU_FLOOR:g} s per cell and {settings.PROBE_CPU_FLOOR:g} s "
                     f"per probe, and {settings.MULTIPLE}x its clock time, at least "
                     f"{settings.CELL_FLOOR:g} s per cell and {settings.PROBE_FLOOR:g} s per "
                     "probe)")
    grd.add_argument("--keep-work", action="store_true",
                     help="leave all that each student's grading wrote in OUT/work/STUDENT/ "
                     "(within the per-student disk limit), to inspect a submission; by default "
                     "only the files the grader reads stay there")
    grd.add_argument("--scheduler", default=None, metavar="tls://HOST:8786",
                     help="grade on the workers of this Dask scheduler, all with the course's "
                     "certificates (`course cluster-certs`, autograder/CLUSTER.md), instead of "
                     "--workers threads here; this machine still writes every result")
    add_tls_options(grd)
    add_lms_options(grd)
    grd.add_argument("--db", default=None, metavar="URL",
                     help="nbgrader gradebook to record into, any SQLAlchemy URL, e.g. "
                     "postgresql://user@host/course (default: nbgrader's db_url, the "
                     "gradebook.db of the course directory)")
    grd.add_argument("--db-wait", type=float, default=settings.GRADEBOOK_WAIT_SECONDS, metavar="S",
                     help="seconds to wait while another `course grade` records into the same "
                     f"gradebook before giving up (default {settings.GRADEBOOK_WAIT_SECONDS:g})")
    grd.add_argument("--root", type=Path, default=None, help="course repository root")
    grd.set_defaults(func=cmd_grade)


def _add_export(sub) -> None:
    exp = sub.add_parser("export", help="export the gradebook for Canvas, a spreadsheet and "
                         "Gradescope", description="Read nbgrader's gradebook (trusted scores, "
                         "manual scores from formgrader, late penalties) and write OUT/canvas.csv "
                         "(Canvas's gradebook import), OUT/grades_wide.csv (one column per "
                         "assignment and per graded cell) and OUT/gradescope/<assignment>/"
                         "<student>/results.json (Gradescope's autograder results).")
    exp.add_argument("assignments", nargs="*",
                     help="graded chapter folders (default: every graded one)")
    exp.add_argument("--out", type=Path, default=Path("grading/export"),
                     help="output folder (default: grading/export)")
    exp.add_argument("--db", default=None, metavar="URL",
                     help="the gradebook (default: nbgrader's db_url, gradebook.db of the course "
                     "directory)")
    exp.add_argument("--canvas-gradebook", type=Path, default=None, metavar="CSV",
                     help="Canvas's exported gradebook (Grades, Export): also write "
                     "OUT/canvas_import.csv, that file with each assignment's column filled")
    exp.add_argument("--moodle-worksheet", type=Path, default=None, metavar="CSV",
                     help="one assignment's Moodle grading worksheet: also write "
                     "OUT/moodle_import.csv, that file with Grade and Feedback comments filled")
    exp.add_argument("--root", type=Path, default=None, help="course repository root")
    exp.set_defaults(func=cmd_export)


def _add_book(sub) -> None:
    book = sub.add_parser("book", help="the course as a static website, every chapter executed",
                          description="Execute every chapter (full size; chapter 7 at its CPU "
                          "size without a GPU), take the student's version of each with its "
                          "outputs, and build a website of them with Sphinx and MyST-NB into "
                          "OUT/html. Executions are cached in OUT/jupyter_cache: a rebuild "
                          "runs only the chapters that changed. Launch links: "
                          "autograder/book.yaml.")
    book.add_argument("--ci", action="store_true",
                      help="run the chapters with the small parameters of "
                      "tests/notebook_params.yaml (as the tests do)")
    book.add_argument("--out", type=Path, default=None, help="output folder (default: build/book)")
    book.add_argument("-j", "--jobs", type=int, default=1, help="chapters executed at once")
    book.add_argument("--repository", default=None, help="public GitHub repository URL")
    book.add_argument("--branch", default=None, help="its branch JupyterHub and Binder open")
    book.add_argument("--hub-url", default=None, help="the JupyterHub (with nbgitpuller)")
    book.add_argument("--binder", default=None, help="the BinderHub (default mybinder.org)")
    book.add_argument("--pages-branch", default=None,
                      help="the branch the site is published on (Colab opens _colab/ there)")
    book.add_argument("--install", default=None, help="what Colab's first cell gives pip")
    book.add_argument("--root", type=Path, default=None, help="course repository root")
    book.set_defaults(func=cmd_book)


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="a static HTML page about the class, from the gradebook",
                         description="Read nbgrader's gradebook (and the results of `course "
                         "grade`) and write OUT/index.html with its PNGs: the score "
                         "distribution per assignment, each test cell's pass rate, the known "
                         "mistakes diagnosed (with the students who made each), lateness, "
                         "flagged rows and grader faults, written answers still to grade, and "
                         "the time to grade per student.")
    rep.add_argument("assignments", nargs="*",
                     help="graded chapter folders (default: every graded one)")
    rep.add_argument("--out", type=Path, default=Path("grading/report"),
                     help="output folder (default: grading/report)")
    rep.add_argument("--db", default=None, metavar="URL",
                     help="the gradebook (default: nbgrader's db_url, gradebook.db of the course "
                     "directory)")
    rep.add_argument("--results", type=Path, action="append", default=[], metavar="DIR",
                     help="an --out folder of `course grade` (its results.jsonl: grader faults "
                     "and grading times); repeat for several")
    rep.add_argument("--root", type=Path, default=None, help="course repository root")
    rep.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="The deep-learning tuning course: run, score, release, grade.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_student_commands(sub)
    add_certs_command(sub)
    for add in (_add_all, _add_release, _add_grade, _add_export, _add_report,
                add_feedback_command, _add_book):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv,
                       PRIVATE_COMMANDS | {"grade", "export", "all", "report", "feedback"})


if __name__ == "__main__":
    sys.exit(main())
