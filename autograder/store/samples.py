"""Sample submissions of a graded chapter, built from the released notebook.

A sample is the released notebook (release/<chapter>/) with one source in the exercise's
solution cell: the instructor's solution ("solution", markers removed), nothing ("release": left
as released), or one of the mistakes students make, kept as the whole cell source in
autograder/samples/<chapter>/<kind>.py. ``course all`` grades them to show the grader at work;
the tests and benchmarks/grading.py build their batches from them.

With ``parameters`` a sample is also what a student hands in after setting the notebook's
parameters (say the small ones of tests/notebook_params.yaml): papermill's injected-parameters
cell after the ``parameters`` cell, as ``papermill -p`` writes it. Only the experiments get
smaller; the solution cell and every graded cell are the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from autograder.exercises import exercise_for
from autograder.settings import SAMPLES_IN_ROOT
from autograder.store.solution_cell import solution_source

__all__ = ["solution_code", "mistakes", "released_with", "reference_notebook", "sample_notebook",
           "write_samples", "with_parameters", "ci_parameters_of"]


def _samples_dir(root: Path, assignment: str) -> Path:
    return Path(root) / SAMPLES_IN_ROOT / assignment


def solution_code(root: Path, assignment: str) -> str:
    """The instructor's solution cell with its ### BEGIN/END SOLUTION lines removed."""
    exercise = exercise_for(assignment, root)
    code = solution_source(exercise.notebook, exercise.solution_id)
    return re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", code, flags=re.M)


def mistakes(root: Path, assignment: str) -> list[str]:
    """The kinds of wrong implementation kept for the chapter, sorted."""
    return sorted(p.stem for p in _samples_dir(root, assignment).glob("*.py"))


def released_with(root: Path, assignment: str, code: str | None, *,
                  release_dir: Path | None = None):
    """The released notebook with ``code`` in the exercise's solution cell (None: as released),
    from ``release_dir`` (default: the course's release/)."""
    spec = exercise_for(assignment, root)
    folder = Path(release_dir) if release_dir is not None else Path(root) / "release"
    nb = nbformat.read(folder / assignment / spec.notebook_name, as_version=4)
    if code is None:
        return nb
    cells = [c for c in nb.cells
             if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == spec.solution_id]
    if len(cells) != 1:
        raise ValueError(f"{folder.name}/{assignment}/{spec.notebook_name} should have one cell "
                         f"{spec.solution_id!r}, found {len(cells)}: run `course release`")
    cells[0].source = code
    return nb


def reference_notebook(root: Path, assignment: str, *, release_dir: Path | None = None):
    """The reference solution: the released notebook (from ``release_dir``, default release/)
    with the instructor's solution (``solution_code``) in its solution cell."""
    return released_with(root, assignment, solution_code(root, assignment),
                         release_dir=release_dir)


def with_parameters(nb, parameters: dict | None):
    """``nb`` with the cell ``papermill -p`` injects after its ``parameters`` cell, written by
    papermill's own translator (None or {}: ``nb`` unchanged)."""
    if not parameters:
        return nb
    from papermill.translators import translate_parameters

    at = next((i for i, c in enumerate(nb.cells)
               if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if at is None:
        raise ValueError("the notebook has no cell tagged `parameters` to set")
    cell = nbformat.v4.new_code_cell(translate_parameters("python3", "python", dict(parameters),
                                                          "Parameters"))
    cell.metadata["tags"] = ["injected-parameters"]
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        del cell["id"]  # cell ids came with nbformat 4.5
    nb.cells.insert(at + 1, cell)
    return nb


def ci_parameters_of(root: Path, assignment: str) -> dict:
    """The chapter's small parameters in tests/notebook_params.yaml ({} if it names none)."""
    from course.notebooks import ci_parameters

    spec = exercise_for(assignment, root)
    return dict(ci_parameters(Path(root)).get(f"source/{assignment}/{spec.notebook_name}", {}))


def sample_notebook(root: Path, assignment: str, kind: str, parameters: dict | None = None):
    """The released notebook with ``kind`` ("solution", "release" or a mistake) handed in,
    run with ``parameters`` (None: the notebook's own)."""
    if kind == "solution":
        return with_parameters(reference_notebook(root, assignment), parameters)
    if kind == "release":
        code = None
    else:
        path = _samples_dir(root, assignment) / f"{kind}.py"
        if not path.is_file():
            raise ValueError(f"no sample {kind!r} for {assignment}; "
                             f"have: solution, release, {', '.join(mistakes(root, assignment))}")
        code = path.read_text(encoding="utf-8")
    return with_parameters(released_with(root, assignment, code), parameters)


def write_samples(root: Path, assignment: str, dest: Path,
                  parameters: dict | None = None) -> dict[str, str]:
    """dest/<student>/<notebook> for the solution, the untouched release and every mistake,
    each with ``parameters`` (None: the notebook's own).

    Returns student -> kind; the students are named after their kind.
    """
    kinds = {"solution": "solution", "untouched": "release"}
    kinds.update({kind.replace("_", "-"): kind for kind in mistakes(root, assignment)})
    for student, kind in kinds.items():
        folder = Path(dest) / student
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(sample_notebook(root, assignment, kind, parameters),
                       folder / exercise_for(assignment, root).notebook_name)
    return kinds
