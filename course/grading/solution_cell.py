"""Read the exercise's solution cell out of a student's notebook (JSON read as hostile data).

Only the source of that one cell is taken from a submission: the trusted check never looks at
the rest of the student's notebook.
"""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

from course.grading.protocol import Fail

__all__ = ["solution_source", "to_python"]

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


def to_python(source: str) -> str:
    """IPython syntax (magics, ``!cmd``) -> plain Python, as the kernel would see it."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - a cell IPython cannot parse runs as it is
        return source


def _defines(source: str, names) -> bool:
    try:
        tree = ast.parse(to_python(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    defined = {node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return bool(names) and set(names) <= defined


def _read_cells(path: Path) -> list:
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
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Fail(f"the notebook is not valid JSON: {str(exc)[:200]}") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise Fail("the notebook has no list of cells")
    return cells


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
