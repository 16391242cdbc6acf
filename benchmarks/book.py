"""How long `course book` takes: a clean build, a rebuild after a one-chapter change, and a
rebuild with nothing changed.

Runs on a scratch copy of the course (source/, release/, the CI parameters, the glossary), so
the repository is never edited; the one-chapter change appends a line to a code cell that is
not an nbgrader cell, in source/ and release/ alike, as an edit of the chapter's text would.

    python benchmarks/book.py              # full size (chapter 7 at its CPU size without a GPU)
    python benchmarks/book.py --ci -j 2    # the CI parameters, as tests/browser/test_book_site.py

Prints one line per build (seconds, which chapters ran) and the load average before each.
Recorded figures: benchmarks/BOOK.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import nbformat

from autograder.book import build_book
from course.notebooks import find_root


def scratch_course(root: Path, dest: Path) -> Path:
    for folder in ("source", "release"):
        shutil.copytree(root / folder, dest / folder)
    (dest / "tests").mkdir()
    shutil.copy(root / "tests" / "notebook_params.yaml", dest / "tests")
    for name in ("GLOSSARY.md", "pyproject.toml"):
        shutil.copy(root / name, dest / name)
    return dest


def change_one_chapter(course: Path, chapter: str) -> None:
    """Append a print to the first plain code cell (not parameters, not nbgrader) of both copies."""
    for folder in ("source", "release"):
        path = course / folder / chapter / f"{chapter}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code" and "nbgrader" not in c.metadata
                    and "parameters" not in c.metadata.get("tags", []))
        cell.source += "\nprint('edited for the benchmark')"
        nbformat.write(nb, path)


def timed(what: str, course: Path, out: Path, args) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result = build_book(course, out, ci=args.ci, jobs=args.jobs)
    ran = [c.chapter for c in result.chapters if c.status == "executed"]
    print(f"{what:<26} {result.seconds:7.1f} s   executed: {', '.join(ran) or 'none'}   "
          f"(load before: {load})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="the CI parameters")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="chapters executed at once")
    parser.add_argument("--chapter", default="01_metrics", help="the chapter to change")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="book-bench-") as tmp:
        course = scratch_course(find_root(), Path(tmp) / "course")
        out = Path(tmp) / "book"
        print(f"course book {'--ci ' if args.ci else ''}-j {args.jobs}, {os.cpu_count()} CPUs")
        timed("clean build", course, out, args)
        timed("nothing changed", course, out, args)
        change_one_chapter(course, args.chapter)
        timed(f"{args.chapter} changed", course, out, args)


if __name__ == "__main__":
    main()
