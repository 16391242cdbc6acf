"""Read a student's notebook as hostile data: its solution cell, or the whole of it for nbgrader.

Only the source of that one cell is taken from a submission: the trusted check never looks at
the rest of the student's notebook. Both readers cap the size, never recurse on the JSON's
structure (``bounded_json``), and convert an older nbformat (3) to version 4. Nothing here runs
IPython's transformers on the student's text: that happens in the sandbox (``harness.py``).
"""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

from autograder.protocol import Fail
from autograder.store.bounded_json import MAX_DEPTH, loads_bounded

__all__ = ["solution_source", "read_notebook", "MAX_NOTEBOOK_BYTES"]

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
MAX_CELL_CHARS = 1_000_000  # a cell searched for definitions; a solution is a few kB


def _plain_lines(source: str) -> str:
    """The cell without IPython-only lines (magics, ``!cmd``), enough to see its definitions."""
    return "\n".join("" if line.lstrip()[:1] in ("%", "!") else line
                     for line in source.splitlines())


def _defines(source: str, names) -> bool:
    if len(source) > MAX_CELL_CHARS:
        return False
    try:
        tree = ast.parse(_plain_lines(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return bool(names) and set(names) <= defined


def _load(path: Path) -> tuple[dict, int]:
    """The notebook's JSON (a dict) and how many too-deep containers were dropped from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Fail(f"cannot open the notebook: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Fail("the notebook is not a regular file")
        data = fh.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Fail("the notebook is larger than 64 MB")
    try:
        nb, dropped = loads_bounded(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Fail(f"the notebook is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(nb, dict):
        raise Fail("the notebook is not a JSON object")
    return nb, dropped


def _v3_cells(nb: dict) -> list | None:
    """The code cells of an nbformat 3 notebook, as version 4 cells (``input`` -> ``source``)."""
    sheets = nb.get("worksheets")
    if nb.get("nbformat") != 3 or not isinstance(sheets, list) or not sheets:
        return None
    cells = []
    for sheet in sheets:
        for cell in (sheet.get("cells") if isinstance(sheet, dict) else None) or []:
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                cells.append({**cell, "source": cell.get("input", "")})
    return cells


def _read_cells(path: Path) -> list:
    nb, _ = _load(path)
    cells = nb.get("cells")
    if nb.get("nbformat") == 3:
        cells = _v3_cells(nb)
    if not isinstance(cells, list):
        raise Fail("the notebook has no list of cells")
    return cells


def read_notebook(path: Path):
    """The notebook at ``path`` as a valid nbformat 4 NotebookNode, and a note for its row.

    JSON nested deeper than ``bounded_json.MAX_DEPTH`` levels is removed, and then every output
    (the note says so; nbgrader runs the notebook again anyway). An nbformat 3 notebook is
    converted; older ones are refused. Raises Fail with a reason the student can act on.
    """
    import nbformat

    try:
        nb, dropped = _load(Path(path))
    except Fail as exc:
        raise Fail(f"invalid notebook: {exc}") from None
    note = ""
    if dropped:
        note = (f"JSON nested deeper than {MAX_DEPTH} levels was removed ({dropped} part(s)), "
                "with every output")
        for cell in _all_cells(nb):
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                cell["outputs"] = []
    version = nb.get("nbformat")
    if version not in (3, 4):
        raise Fail(f"nbformat version {str(version)[:20]} is not supported: open the notebook in "
                   "Jupyter and save it again (version 4)")
    try:  # now at most MAX_DEPTH deep: nbformat's own reader (it converts; it only logs a
        # schema problem, as Jupyter does) may recurse on it
        node = nbformat.reads(json.dumps(nb), as_version=4)
        if version == 3:
            note = "; ".join(filter(None, [note, "converted from nbformat 3"]))
    except Exception as exc:  # noqa: BLE001 - whatever nbformat dislikes in hostile data
        raise Fail(f"invalid notebook: {type(exc).__name__}: {str(exc)[:200]}") from None
    return node, note


def _all_cells(nb: dict) -> list:
    """Every cell of a version 4 or version 3 notebook's JSON."""
    cells = list(nb["cells"]) if isinstance(nb.get("cells"), list) else []
    sheets = nb.get("worksheets")
    for sheet in sheets if isinstance(sheets, list) else []:
        if isinstance(sheet, dict) and isinstance(sheet.get("cells"), list):
            cells += sheet["cells"]
    return cells


def setup_imports(notebook: Path, solution_id: str) -> list[str]:
    """The import statements of the instructor's code cells before the solution cell.

    Read from the source notebook (never from the student's): the harness runs them before the
    solution cell, so a solution may use ``np``, ``torch``, ``F`` ... as it would in the notebook.
    """

    statements = []
    for cell in json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == solution_id:
            return statements
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            statements += [ast.unparse(node) for node in ast.parse(_plain_lines(source)).body
                           if isinstance(node, (ast.Import, ast.ImportFrom))]
    raise ValueError(f"{notebook} has no cell {solution_id!r}")


def solution_source(notebook_path, solution_id: str, names=()) -> str:
    """The source of the code cell whose nbgrader grade_id is ``solution_id``.

    Reads the JSON directly (no nbformat validation, which would log to stderr). When no cell
    carries that grade_id (metadata stripped, e.g. cells pasted into a new notebook), the last
    code cell that defines all of ``names`` at top level is taken instead. Raises Fail when the
    file is unreadable, not a notebook, or has no such cell.
    """
    fallback = None
    for cell in _read_cells(Path(notebook_path)):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        meta = cell.get("metadata")
        nbg = meta.get("nbgrader") if isinstance(meta, dict) else None
        if isinstance(nbg, dict) and nbg.get("grade_id") == solution_id:
            if not isinstance(source, str):
                raise Fail(f"the cell {solution_id!r} has no source text")
            return source
        if isinstance(source, str) and _defines(source, names):
            fallback = source
    if fallback is not None:
        return fallback
    raise Fail(f"no code cell with grade_id {solution_id!r} (the exercise's solution cell)")
