"""The ``course`` command: run the notebooks, release assignments, grade submissions."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
