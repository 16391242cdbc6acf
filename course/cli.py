"""The student's half of the ``course`` command: ``course run`` (the notebooks) and ``course score``
(chapter 7's predictions). The instructor's commands (release, grade, export, all) are added on
top by ``autograder/cli.py``, which is what the installed ``course`` command runs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["PRIVATE_COMMANDS", "add_student_commands", "build_parser", "main", "print_table",
           "run_command"]


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


def _score_one(path: Path, y_true, out: Path) -> int:
    from course.score import PredictionsError, save_confusion_figure, score_file

    try:
        score = score_file(path, y_true)
    except PredictionsError as err:
        print(f"error: {path.stem}: {err}", file=sys.stderr)
        return 1
    print(f"{score.student}: accuracy {score.accuracy:.4f} on {len(y_true)} test images, "
          f"macro F1 {score.macro_f1:.4f}\n")
    print(score.table.round(4).to_string())
    figure = save_confusion_figure(score, out / f"{score.student}.confusion.png")
    print(f"\nconfusion matrix: {figure}")
    return 0


def _score_class(folder: Path, y_true, out: Path) -> int:
    from course.score import leaderboard, save_confusion_figure, score_folder
    from course.spreadsheet import write_csv

    scores, errors = score_folder(folder, y_true)
    for student, message in errors.items():  # one line each, and the others are still scored
        print(f"error: {student}: {message}", file=sys.stderr)
    if not scores and not errors:
        print(f"error: no .csv files in {folder}: put one <student>.csv per student there",
              file=sys.stderr)
        return 1
    board = leaderboard(scores, errors)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "leaderboard.csv", list(board.columns), board.itertuples(index=False))
    for score in scores:
        save_confusion_figure(score, out / f"{score.student}.confusion.png")
    print_table([("" if r.error else r.rank, r.student,
                   "" if r.error else f"{r.accuracy:.4f}", "" if r.error else f"{r.macro_f1:.4f}",
                   r.error[:70]) for r in board.itertuples()],
                 ("rank", "student", "accuracy", "macro F1", "error"))
    print(f"\n{len(scores)}/{len(scores) + len(errors)} scored on {len(y_true)} test images; "
          f"leaderboard: {out / 'leaderboard.csv'}; confusion matrices: {out}")
    return 0 if scores else 1


def cmd_score(args) -> int:
    from course.cifar import read_cifar10
    from course.data import DatasetMissingError

    target = args.predictions
    if not target.exists():
        print(f"error: {target} does not exist: give a predictions CSV or a folder of "
              "<student>.csv files", file=sys.stderr)
        return 2
    try:
        _, y_true = read_cifar10(args.data_root, train=False, verify=not args.no_verify)
    except DatasetMissingError as err:
        hint = "" if args.no_verify else (
            "\nIf the files are there, they failed torchvision's MD5 check against the official "
            "release; --no-verify skips it (for generated files only).")
        print(f"error: cannot read the test labels: {err}{hint}", file=sys.stderr)
        return 2
    if target.is_dir():
        return _score_class(target, y_true.numpy(), args.out)
    return _score_one(target, y_true.numpy(), args.out)


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
    print_table([(r.notebook, r.status, f"{r.seconds:.1f}", r.detail) for r in results],
                 ("notebook", "status", "seconds", "detail"))
    failed = [r for r in results if r.status != "ok"]
    print(f"\n{len(results) - len(failed)}/{len(results)} ok in "
          f"{time.perf_counter() - start:.1f} s; executed notebooks and HTML in {out_dir}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """``course`` with the student's commands (run, score)."""
    parser = argparse.ArgumentParser(
        prog="course", description="The deep-learning tuning course: run, score, release, grade.")
    add_student_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def add_student_commands(sub) -> None:
    """``course run`` and ``course score`` on the subparsers ``sub``."""
    _add_run(sub)
    _add_score(sub)


def _add_run(sub) -> None:
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


def _add_score(sub) -> None:
    scr = sub.add_parser(
        "score", help="score chapter 7 predictions CSVs: one file, or a class leaderboard",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score CIFAR-10 test-set predictions against the test labels of DATA_ROOT.\n\n"
        "Expected format: a CSV with the header `id,label` and one row per test image\n"
        "(10,000 for the official test_batch), in any order: `id` the image's index in\n"
        "test_batch (0..9999), `label` the predicted class NAME (airplane, automobile, bird,\n"
        "cat, deer, dog, frog, horse, ship, truck), as chapter 7 writes it. At most 1 MiB.\n\n"
        "PREDICTIONS a file: prints accuracy and per-class precision/recall/F1, writes\n"
        "OUT/<name>.confusion.png. PREDICTIONS a folder: scores every <student>.csv in it,\n"
        "prints the leaderboard and writes OUT/leaderboard.csv and one confusion matrix per\n"
        "student; a file that cannot be scored gets one line on stderr naming the student\n"
        "and what to fix, and a row in the leaderboard with that error.\n\n"
        "Exit status: 0 when at least one file was scored, 1 when none could be, 2 when\n"
        "PREDICTIONS or the test labels are missing.")
    scr.add_argument("predictions", type=Path, metavar="PREDICTIONS",
                     help="an id,label CSV file, or a folder of <student>.csv files")
    scr.add_argument("--data-root", type=Path, default=Path("data"),
                     help="folder holding cifar-10-batches-py/ (default: data)")
    scr.add_argument("--no-verify", action="store_true",
                     help="skip the MD5 check of the CIFAR-10 files (for the generated files of "
                     "tests and CI; the real test labels should be verified)")
    scr.add_argument("--out", type=Path, default=Path("score"),
                     help="folder for the figures and leaderboard.csv (default: score)")
    scr.set_defaults(func=cmd_score)


# Commands whose outputs hold students' grades: what they create is readable by its owner only
# (umask 077), on a shared machine too. A co-grader gets access through a group (see
# autograder/README.md), never through world-readable files.
PRIVATE_COMMANDS = {"score"}


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                private: set[str]) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command; the ``private`` ones with
    umask 077 while they run."""
    from course.lean_imports import skip_unused_format_checkers

    skip_unused_format_checkers()
    args = parser.parse_args(argv)
    if args.command not in private:
        return args.func(args)
    before = os.umask(0o077)
    try:
        return args.func(args)
    finally:  # called in a process that goes on (a test, a notebook): as it was
        os.umask(before)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, PRIVATE_COMMANDS)


if __name__ == "__main__":
    sys.exit(main())
