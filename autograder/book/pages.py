"""One chapter page: the student's notebook, with the outputs of an execution of the chapter.

How a page is made, so that it shows every output but no solution and no hidden test:

1. **What runs.** The instructor's notebook (source/), except that every ungraded solution
   cell (the closing exercises' worked solutions, chapter 7's project choices) is replaced by
   its student version from release/: those stubs raise NotImplementedError, which the
   notebooks catch (``course.practice.attempt`` prints a note; chapter 7 falls back to the
   baseline), so the page shows what a student sees on a first Run All. A *graded* exercise's
   solution (its trusted check in autograder/exercises/ names the cell) keeps the reference
   solution, because the rest of its chapter uses it (chapter 5 trains with your dropout).
2. **Executed once per content.** papermill runs it (the chapter's own folder as working
   directory) and jupyter-cache stores the result, keyed on the code of its cells: a rebuild
   runs only the chapters whose code or parameters changed.
3. **What is shown.** The page is release/'s notebook cell for cell. A code cell keeps the
   outputs of its execution only where its code is the same in both; a solution cell or a
   test cell with hidden tests differs, and is shown with no output. Each stub is followed by
   a note that says what it does on the page (``stub-note``), so that no NotImplementedError
   is left unexplained. A cell that differs and is not an nbgrader cell means release/ is
   stale: the build stops and asks for ``course release``.
4. **Widgets** are shown in their static state: the outputs their Output widgets held when the
   cell ran (the figure at the initial slider values), with a note that the controls move in
   JupyterLab; no widget state is left for a page to load a widget manager from a CDN.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["StaleRelease", "ChapterRun", "execution_notebook", "execute", "page_notebook",
           "static_widgets", "relink", "STUB_NOTE_CLASS", "WIDGET_MIME"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STUB_NOTE_CLASS = "stub-note"
STUB = "raise NotImplementedError"
RAN_WITH_SOLUTION = (
    "**Your code goes here.** In your copy this cell raises `NotImplementedError` until you "
    "write it. This page ran the chapter with the course's reference solution in its place, "
    "so the outputs below show what a correct answer gives; the solution itself is not on "
    "this page.")
RAN_AS_STUB = (
    "**An exercise for you.** This page ran the cell above as you will first run it: "
    "`raise NotImplementedError()` stops the function, and the chapter catches it (the cell "
    "prints that it is not answered yet, or the next cells fall back to the baseline). The "
    "worked solution is not on this page.")


class StaleRelease(RuntimeError):
    """release/ does not match source/: a cell other than a solution or test cell differs."""


@dataclass(frozen=True)
class ChapterRun:
    """How one chapter is executed for its page."""

    chapter: str
    parameters: dict
    size: str  # "full size", "CI parameters" or "CPU size"
    label: str  # what the page says about the size it ran at
    timeout: int | None = None  # seconds per cell


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _is_solution(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def execution_notebook(source_nb, release_nb, keep: set[str]):
    """``source_nb`` with every solution cell not in ``keep`` (grade_ids) as released."""
    released = {_grade_id(c): c for c in release_nb.cells if _grade_id(c)}
    nb = copy.deepcopy(source_nb)
    for cell in nb.cells:
        gid = _grade_id(cell)
        if _is_solution(cell) and gid not in keep:
            if gid not in released:
                raise StaleRelease(f"solution cell {gid!r} is not in release/: run "
                                   "`course release`")
            cell.source = released[gid].source
    return nb


def execute(nb, cwd: Path, parameters: dict, timeout: int | None):
    """``nb`` executed by papermill in ``cwd`` with ``parameters`` injected."""
    import os

    import papermill as pm

    os.environ["COURSE_PROGRESS"] = "0"  # the kernel inherits it: no progress bars on a page
    return pm.execute_notebook(nb, None, parameters=parameters, cwd=str(cwd),
                               progress_bar=False, log_output=False, execution_timeout=timeout,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])


def _note(text: str):
    return nbformat.v4.new_markdown_cell(f"```{{note}}\n:class: {STUB_NOTE_CLASS}\n{text}\n```")


def _header(links: dict[str, str], label: str, glossary: str):
    opens = " · ".join(f"[{name}]({url})" for name, url in links.items())
    cell = nbformat.v4.new_markdown_cell(
        f"**Open this chapter to run it:** {opens} · terms in Korean: [Glossary (용어집)]"
        f"({glossary})\n\n*This page was executed {label}.*")
    cell.metadata["tags"] = ["book-header"]
    return cell


def page_notebook(executed_nb, release_nb, keep: set[str], *, links: dict[str, str],
                  label: str, glossary: str = "glossary.md"):
    """The page: ``release_nb`` with ``executed_nb``'s outputs where a cell's code is the same.

    ``keep``: the solution cells that ran with the reference solution (their stub notes say
    so); ``links`` and ``label`` go into the header cell after the title cell.
    """
    ran = [c for c in executed_nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if [c.cell_type for c in ran] != [c.cell_type for c in release_nb.cells]:
        raise StaleRelease("release/ has other cells than source/: run `course release`")
    page = copy.deepcopy(release_nb)
    page.cells = []
    for done, shown in zip(ran, copy.deepcopy(release_nb.cells), strict=True):
        page.cells.append(shown)
        if shown.cell_type == "markdown":
            continue
        if done.source == shown.source:
            shown.outputs, shown.execution_count = done.outputs, done.execution_count
            continue
        if not cell_is_nbgrader(shown):
            raise StaleRelease(f"a cell differs from source/ ({shown.source[:60]!r}): run "
                               "`course release`")
        shown.outputs, shown.execution_count = [], None
    for cell in executed_nb.cells:  # the parameters this page ran with, after its defaults
        if "injected-parameters" in cell.metadata.get("tags", []):
            at = next((i + 1 for i, c in enumerate(page.cells)
                       if "parameters" in c.metadata.get("tags", [])), 1)
            page.cells.insert(at, copy.deepcopy(cell))
    page.cells = _with_stub_notes(page.cells, keep)
    page.cells.insert(1, _header(links, label, glossary))
    page.metadata["widgets"] = executed_nb.metadata.get("widgets", {})
    return static_widgets(page)


def cell_is_nbgrader(cell) -> bool:
    info = cell.metadata.get("nbgrader", {})
    return bool(info.get("solution") or info.get("grade"))


def _with_stub_notes(cells, keep: set[str]) -> list:
    out = []
    for cell in cells:
        out.append(cell)
        if cell.cell_type == "code" and STUB in cell.source:
            out.append(_note(RAN_WITH_SOLUTION if _grade_id(cell) in keep else RAN_AS_STUB))
    return out


def _widget_outputs(state: dict, model_id: str) -> list:
    """The outputs of every Output widget reachable from ``model_id`` (breadth first)."""
    seen, queue, outputs = set(), [model_id], []
    while queue:
        mid = queue.pop(0)
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        model = state[mid].get("state", {})
        if model.get("_model_name") == "OutputModel":
            outputs += model.get("outputs", [])
        for value in model.values():
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, str) and ref.startswith("IPY_MODEL_"):
                    queue.append(ref.removeprefix("IPY_MODEL_"))
    return outputs


def static_widgets(nb):
    """Each widget output of ``nb`` replaced by its static state; the widget state removed."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    note = {"output_type": "display_data", "metadata": {},
            "data": {"text/markdown": "*An interactive explorer: its controls move in "
                     "JupyterLab (open the chapter above); here, what it showed when it ran.*"}}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_MIME)
            if view is None:
                outputs.append(out)
                continue
            outputs.append(nbformat.from_dict(copy.deepcopy(note)))
            outputs += [nbformat.from_dict(o) for o in _widget_outputs(state, view["model_id"])]
        cell.outputs = outputs
    return nb


LINK = re.compile(r"\]\(([^)\s]+)\)")


def relink(nb, chapter: str, blob: str, pages: dict[str, str]):
    """Markdown links of release/<chapter>/'s notebook, made to work on the site.

    A relative link names a file of the repository: a file that is a page of the site
    (``pages``: repository path -> page) links to that page, any other to ``blob`` + its path
    (the file in the public repository).
    """
    def fix(match):
        target = match.group(1)
        path, _, fragment = target.partition("#")
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path) or path.startswith("/"):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join("release", chapter, path))
        new = pages.get(resolved) or f"{blob.rstrip('/')}/{resolved}"
        return f"]({new}{'#' + fragment if fragment else ''})"

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = LINK.sub(fix, cell.source)
    return nb


def dumps(nb) -> str:
    """The notebook's JSON, valid for its format version: cell ids from nbformat 4.5 on only
    (the chapters are 4.4 or 4.5; the cells added here get ids)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if (nb.nbformat, nb.nbformat_minor) < (4, 5):
            cell.pop("id", None)
        elif "id" not in cell:
            cell["id"] = nbformat.v4.new_code_cell().id
    nbformat.validate(nb)
    return json.dumps(nb, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
