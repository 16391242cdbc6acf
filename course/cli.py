"""The ``course`` command: run the notebooks, release assignments, grade submissions."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def cmd_run(args) -> int:
    from course.notebooks import discover, find_root, run_notebooks

    root = find_root(args.root)
    if args.notebooks:
        notebooks = [Path(n).resolve() for n in args.notebooks]
        missing = [str(n) for n in notebooks if not n.is_file()]
        if missing:
            print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
            return 2
    else:
        notebooks = discover(root)
    if not notebooks:
        print(f"error: no notebooks under {root / 'source'}", file=sys.stderr)
        return 2
    out_dir = (args.out or root / "build" / ("notebooks-ci" if args.ci else "notebooks")).resolve()
    start = time.perf_counter()
    results = run_notebooks(root, notebooks, ci=args.ci, out_dir=out_dir, jobs=args.jobs,
                            timeout=args.timeout)
    _print_table([(r.notebook, r.status, f"{r.seconds:.1f}", r.detail) for r in results],
                 ("notebook", "status", "seconds", "detail"))
    failed = [r for r in results if r.status != "ok"]
    print(f"\n{len(results) - len(failed)}/{len(results)} ok in "
          f"{time.perf_counter() - start:.1f} s; executed notebooks and HTML in {out_dir}")
    return 1 if failed else 0


def cmd_release(args) -> int:
    from course.grading.release import ReleaseError, release
    from course.notebooks import find_root

    root = find_root(args.root)
    try:
        written = release(root, args.assignments or None)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _print_table([(p.name, str(p.relative_to(root)),
                   ", ".join(sorted(f.name for f in p.iterdir()))) for p in written],
                 ("assignment", "folder", "files"))
    print(f"\nreleased {len(written)} assignment(s); commit release/ with source/")
    return 0


def cmd_grade(args) -> int:
    from course.grading.grade import IsolationUnavailable, grade

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
        rows = grade(args.assignment, args.submissions, args.out, root=args.root,
                     workers=args.workers, isolate=not args.no_isolation, timeout=args.timeout,
                     on_row=progress)
    except IsolationUnavailable as err:
        print(f"error: cannot isolate student code here: {err}\nInstall bubblewrap, or pass "
              "--no-isolation to grade without isolation (unsafe).", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    _print_table([(r.student_id, f"{r.score:g}/{r.max_score:g}", r.status,
                   "" if r.nbgrader_score is None else f"{r.nbgrader_score:g}",
                   "FLAGGED" if r.flagged else "", r.reason[:70]) for r in rows],
                 ("student", "score", "status", "nbgrader", "flag", "reason"))
    graded = [r for r in rows if r.status == "graded"]
    mean = sum(r.score for r in graded) / len(graded) if graded else float("nan")
    print(f"\n{len(graded)}/{len(rows)} graded, {len(rows) - len(graded)} error(s), "
          f"{sum(r.flagged for r in rows)} flagged; mean score {mean:.2f}; "
          f"{time.perf_counter() - start:.1f} s with {args.workers or os.cpu_count()} worker(s)")
    print(f"grades: {args.out / 'grades.csv'}; feedback: {args.out / 'feedback'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="The deep-learning tuning course: run, release, grade.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute notebooks headlessly with papermill",
                         description="Execute instructor notebooks with papermill, write the "
                         "executed copies and HTML to build/, print a table of the results.")
    run.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of source/)")
    run.add_argument("--ci", action="store_true",
                     help="use the small parameters of tests/notebook_params.yaml")
    run.add_argument("--out", type=Path, help="output folder (default: build/notebooks[-ci])")
    run.add_argument("-j", "--jobs", type=int, default=1, help="notebooks run at once")
    run.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    run.add_argument("--root", type=Path, default=None, help="course repository root")
    run.set_defaults(func=cmd_run)

    rel = sub.add_parser("release", help="regenerate release/ from source/ with nbgrader",
                         description="Generate the student version of each chapter (solutions "
                         "replaced by stubs, hidden tests removed) into release/.")
    rel.add_argument("assignments", nargs="*", help="chapter folders (default: all of source/)")
    rel.add_argument("--root", type=Path, default=None, help="course repository root")
    rel.set_defaults(func=cmd_release)

    grd = sub.add_parser("grade", help="autograde a folder of student submissions",
                         description="Grade every submission (one folder or zip per student) "
                         "in a sandbox; write OUT/grades.csv and OUT/feedback/. Rerunning "
                         "with the same OUT resumes: graded notebooks are not graded again.")
    grd.add_argument("assignment", help="chapter folder, e.g. 05_regularization")
    grd.add_argument("submissions", type=Path, help="folder of <student>/ or <student>.zip")
    grd.add_argument("--out", type=Path, required=True, help="output folder")
    grd.add_argument("--workers", type=int, default=None,
                     help="students graded at once (default: the number of CPU cores)")
    grd.add_argument("--no-isolation", action="store_true",
                     help="run student code without the sandbox (unsafe; only when bubblewrap "
                     "is unavailable and you trust every submission)")
    grd.add_argument("--timeout", type=float, default=600,
                     help="wall-clock seconds for each sandboxed step of one student")
    grd.add_argument("--root", type=Path, default=None, help="course repository root")
    grd.set_defaults(func=cmd_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
