"""The closing exercises of every chapter: 3 to 6, before the References, each with a hint, at
least one "predict, then run" per chapter, worked solutions only inside nbgrader's solution
markers of ungraded solution cells, and a released stub that leaves the notebook running."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(ROOT.glob("source/*/*.ipynb"))
STUB = "# your code here\nraise NotImplementedError()"  # autograder/nbgrader_config.py


def closing_exercises(path):
    """[(question markdown, solution cell)] between the '## ...Exercises' heading and the
    References."""
    cells = nbformat.read(path, as_version=4).cells
    start = next(i for i, c in enumerate(cells)
                 if c.cell_type == "markdown" and re.match(r"## (\d+\. )?Exercises", c.source))
    end = next(i for i, c in enumerate(cells) if c.source.startswith("## References"))
    assert end > start
    block = cells[start + 1:end]
    return list(zip(block[::2], block[1::2], strict=True))


def released(source: str) -> str:
    """What nbgrader's ClearSolutions makes of a solution region (indented as the marker)."""
    return re.sub(r"^([ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n",
                  lambda m: "".join(m.group(1) + line + "\n" for line in STUB.split("\n")),
                  source, flags=re.M | re.S)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_each_chapter_closes_with_3_to_6_exercises_with_hints(path):
    exercises = closing_exercises(path)
    assert 3 <= len(exercises) <= 6
    chapter = int(path.parent.name[:2])
    for k, (question, _) in enumerate(exercises, 1):
        assert question.cell_type == "markdown"
        assert question.source.startswith(f"**Exercise {chapter}.{k} — "), question.source[:40]
        assert "*Hint:*" in question.source
    assert any("**Predict, then run.**" in q.source for q, _ in exercises)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_solutions_sit_in_ungraded_solution_cells_between_markers(path):
    for _, cell in closing_exercises(path):
        meta = cell.metadata["nbgrader"]
        assert cell.cell_type == "code" and meta["solution"] is True and meta["grade"] is False
        assert meta["grade_id"].startswith("exercise_")
        assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") == 1
        # the call that runs the exercise is outside the markers: it stays in the release
        assert re.search(r"^attempt\(exercise_\w+\)$", cell.source.split("### END SOLUTION")[1],
                         re.M)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_the_released_stubs_run_and_say_they_are_unanswered(path, capsys):
    namespace = {}
    for _, cell in closing_exercises(path):
        stub = released(cell.source)
        assert "BEGIN SOLUTION" not in stub and "raise NotImplementedError()" in stub
        # the imports of the cell (before its function) are the course's own; keep only them
        # and the function with its attempt(...) call
        exec(compile(stub, f"{path.name} exercise", "exec"), namespace)  # noqa: S102
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if "not answered yet" in line]) == len(
        closing_exercises(path))
