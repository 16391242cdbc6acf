"""Run a few sections of a chapter on their own: the cells before its first section (parameters,
imports, the chapter's model) and the sections named, so that a test can break one experiment
and see its claim fail without paying for the whole chapter."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from course.notebooks import RunResult, run_notebook


def heading(cell) -> str | None:
    """The section number a markdown cell opens ("2.1", "10", "10.3"), else None."""
    if cell.cell_type != "markdown":
        return None
    m = re.match(r"#{2,3} (\d+(?:\.\d+)?)[. ]", cell.source)
    return m.group(1) if m else None


def section_cells(path: Path, sections: list[str]) -> list:
    """The preamble and the cells of each section in ``sections`` ("10" is the text of section
    10 up to its first numbered subsection; "10.3" that subsection; "2.1:1" section 2.1 up to
    and including its first code cell)."""
    limits = dict(s.split(":") if ":" in s else (s, "0") for s in sections)
    cells = nbformat.read(path, as_version=4).cells
    first = next(i for i, c in enumerate(cells) if heading(c))
    keep, current, code_seen = list(cells[:first]), None, 0
    for cell in cells[first:]:
        if heading(cell):
            current, code_seen = heading(cell), 0
        if cell.cell_type == "markdown" and cell.source.startswith(("## Summary", "## References")):
            current = None
        code_seen += cell.cell_type == "code"
        if current in limits and (limits[current] == "0" or code_seen <= int(limits[current])):
            keep.append(cell)
    return keep


def run_sections(path: Path, sections: list[str], out_dir: Path, parameters: dict,
                 timeout: int) -> RunResult:
    """Execute only ``sections`` of the notebook at ``path`` with ``parameters``."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = section_cells(path, sections)
    part = out_dir / "sections" / path.name
    part.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, part)
    return run_notebook(part, out_dir, parameters, timeout=timeout, html=False)
