"""The graded exercises: one module each, paired with the source notebooks' nbgrader cells.

Each module of this package that defines ``EXERCISE = Exercise(...)`` is one graded exercise:
the assignment (chapter folder) it belongs to, the grade_id of its solution cell, the names that
cell defines, and ``plan(plan) -> {grade_id: check}``, which adds the exercise's probes to a
:class:`~autograder.protocol.Plan` and returns, for each nbgrader test cell, its trusted
check. An exercise whose probes need more than calling a function can ship sandbox-side code
(``sandbox_code``: a file of plain Python that the harness loads; it defines ``SCENARIOS``).

Points are not declared here: :func:`registry` reads them from the source notebook's nbgrader
metadata, the one place they live. It also checks itself when it is built: every graded test
cell of every source notebook has a check, and every check has a cell. A mismatch is the
course's fault, so it raises :class:`RegistryError` for the instructor before anyone is graded.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autograder.protocol import Check, Plan

__all__ = ["Exercise", "GradedExercise", "Mistake", "RegistryError", "known", "registry",
           "exercise_for"]


class RegistryError(RuntimeError):
    """The exercise modules and the source notebooks disagree (the course's own files)."""


@dataclass(frozen=True)
class Mistake:
    """A mistake students make in an exercise, told to the student who made it.

    ``name`` is also the name of its sample in autograder/samples/<assignment>/. The texts (from
    course/mistakes.py, see :func:`known`) say what the code does and why that is wrong, and
    point at the idea in the chapter (``section``); they never name an input of the hidden
    tests nor show the solution. Which results show the mistake is the exercise's plan's
    business (``Plan.recognise``), decided on the trusted side.
    """

    name: str
    does: str  # what the code does, as the student would recognise it
    why: str  # why that is wrong
    hint: str  # the concept to revisit
    section: str  # where the chapter explains it

    def text(self) -> str:
        """The diagnosis as plain text (the gradebook comment, results.json)."""
        return f"{self.does} {self.why} Hint: {self.hint} (see {self.section})"


def known(*names: str) -> tuple[Mistake, ...]:
    """The known mistakes ``names``, in that order, with the words course/mistakes.py tells
    the student (the visible tests of the notebooks show the same)."""
    from course.mistakes import KNOWN

    return tuple(Mistake(n, KNOWN[n].does, KNOWN[n].why, KNOWN[n].hint, KNOWN[n].section)
                 for n in names)


@dataclass(frozen=True)
class Exercise:
    """What an exercise module declares."""

    assignment: str  # the chapter folder of source/, e.g. "05_regularization"
    solution_id: str  # grade_id of the solution cell
    names: tuple[str, ...]  # what the solution cell defines (to find it without metadata)
    plan: Callable[[Plan], dict[str, Check]]  # adds probes; returns {test grade_id: check}
    sandbox_code: Path | None = None  # plain Python defining SCENARIOS, run by the harness
    # library functions, classes or whole modules (dotted names) the solution may not use, as
    # the exercise's text says; they raise and are reported while the solution cell and every
    # probe run, and a cell whose probe used one fails with that reason
    forbidden: tuple[str, ...] = ()
    # modules the harness's probes import beyond NumPy and torch
    harness_imports: tuple[str, ...] = ()
    # the known mistakes, most specific first: the plan recognises each (Plan.recognise)
    mistakes: tuple[Mistake, ...] = ()

    def mistake(self, name: str) -> Mistake | None:
        """The known mistake called ``name`` (None for a name the exercise does not know)."""
        return next((m for m in self.mistakes if m.name == name), None)

    @property
    def harness_preload(self) -> tuple[str, ...]:
        """What the grading sandbox's warm Python (autograder/isolation/preload.py) imports for this
        exercise's harness, once per run instead of once per student: ``harness_imports`` and
        the modules of the forbidden names, which the harness imports to forbid them
        (scikit-learn's metrics: 2 s)."""
        return (*self.harness_imports, *self.forbidden)


@dataclass(frozen=True)
class GradedExercise:
    """An exercise together with what its source notebook says about it."""

    exercise: Exercise
    notebook: Path  # source/<assignment>/<name>.ipynb
    points: dict[str, float] = field(default_factory=dict)  # test grade_id -> points, in order

    @property
    def assignment(self) -> str:
        return self.exercise.assignment

    @property
    def solution_id(self) -> str:
        return self.exercise.solution_id

    @property
    def notebook_name(self) -> str:
        return self.notebook.name

    @property
    def max_score(self) -> float:
        return float(sum(self.points.values()))

    def build_plan(self) -> tuple[Plan, dict[str, Check]]:
        """A fresh plan with the exercise's probes, and its checks."""
        plan = Plan(self.assignment)
        return plan, self.exercise.plan(plan)


def _declared() -> list[tuple[str, Exercise]]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        exercise = getattr(module, "EXERCISE", None)
        if isinstance(exercise, Exercise):
            found.append((info.name, exercise))
    return found


def _graded_cells(notebook: Path) -> tuple[set[str], dict[str, float]]:
    """(solution grade_ids, {test grade_id: points}) of a source notebook's nbgrader cells."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    solutions, tests = set(), {}
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            solutions.add(meta.get("grade_id"))
        elif meta.get("grade"):
            tests[meta.get("grade_id")] = float(meta.get("points", 0))
    return solutions, tests


def _notebooks(root: Path) -> dict[str, Path]:
    """assignment -> its source notebook, for every chapter folder that holds one."""
    found = {}
    for folder in sorted(p for p in (root / "source").iterdir() if p.is_dir()):
        notebooks = sorted(folder.glob("*.ipynb"))
        if notebooks:
            found[folder.name] = notebooks[0]
    return found


def _pair(module: str, exercise: Exercise, notebook: Path | None,
          problems: list[str]) -> GradedExercise | None:
    where = f"autograder/exercises/{module}.py ({exercise.assignment})"
    if notebook is None:
        problems.append(f"{where}: there is no source/{exercise.assignment}/*.ipynb")
        return None
    solutions, tests = _graded_cells(notebook)
    if exercise.solution_id not in solutions:
        problems.append(f"{where}: {notebook.name} has no solution cell "
                        f"{exercise.solution_id!r}")
    plan, checks = GradedExercise(exercise, notebook, tests).build_plan()
    checks = set(checks)
    declared = {m.name for m in exercise.mistakes}
    for name in sorted(declared ^ set(plan.recognisers)):
        problems.append(f"{where}: the mistake {name!r} is "
                        + ("declared but never recognised" if name in declared
                           else "recognised but not declared in mistakes"))
    for gid in sorted(set(tests) - checks):
        problems.append(f"{where}: the test cell {gid!r} of {notebook.name} has no trusted check")
    for gid in sorted(checks - set(tests)):
        problems.append(f"{where}: the check {gid!r} has no test cell in {notebook.name}")
    return GradedExercise(exercise, notebook, tests)


@functools.lru_cache(maxsize=8)
def _build(root: Path) -> dict[str, GradedExercise]:
    notebooks = _notebooks(root)
    problems: list[str] = []
    graded: dict[str, GradedExercise] = {}
    for module, exercise in _declared():
        if exercise.assignment in graded:
            problems.append(f"{exercise.assignment} has two exercise modules; keep one")
            continue
        paired = _pair(module, exercise, notebooks.get(exercise.assignment), problems)
        if paired is not None:
            graded[exercise.assignment] = paired
    for assignment, notebook in notebooks.items():
        tests = _graded_cells(notebook)[1]
        if tests and assignment not in graded:
            problems.append(f"source/{assignment}/{notebook.name} has graded test cells "
                            f"({', '.join(tests)}) but no module in autograder/exercises/")
    if problems:
        raise RegistryError("the graded exercises do not match the source notebooks (see "
                            "autograder/README.md, 'Add a graded exercise'):\n  "
                            + "\n  ".join(problems))
    return dict(sorted(graded.items()))


def registry(root: Path | None = None) -> dict[str, GradedExercise]:
    """Every graded exercise of the course at ``root``, by assignment, in chapter order.

    Raises RegistryError when the exercise modules and the source notebooks disagree.
    """
    from course.notebooks import find_root

    return _build(find_root(Path(root) if root else None))


def exercise_for(assignment: str, root: Path | None = None) -> GradedExercise:
    """The graded exercise of ``assignment``; ValueError naming the graded ones if none."""
    graded = registry(root)
    if assignment not in graded:
        raise ValueError(f"{assignment} has no graded exercises; graded: {', '.join(graded)}")
    return graded[assignment]
