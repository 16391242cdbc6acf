"""Time budgets from the reference solution (course/grading/budget.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

from course.grading import budget
from course.grading.budget import Budgets, _budget, _cell_times, _probe_times, cell_budget_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_budget_is_a_multiple_of_the_reference_with_a_floor_and_a_cap():
    assert _budget(0.01, 30, 300) == 30  # floor
    assert _budget(7.0, 30, 300) == 7.0 * budget.MULTIPLE
    assert _budget(100.0, 30, 300) == 300  # never above the flat limit


def test_cell_times_come_from_nbclient_timestamps(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("import x"),
                nbformat.v4.new_code_cell("assert f(1) == 1"), nbformat.v4.new_code_cell("")]
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-11-27T10:00:00.000000Z",
                                         "shell.execute_reply": "2026-11-27T10:00:04.500000Z"}
    nb.cells[2].metadata["execution"] = {"iopub.execute_input": "2026-11-27T10:00:05.000000Z",
                                         "shell.execute_reply": "2026-11-27T10:00:05.250000Z"}
    nb.cells[2].metadata["nbgrader"] = {"grade": True, "grade_id": "test_f", "points": 1}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert _cell_times(tmp_path / "nb.ipynb") == [(None, 4.5), ("test_f", 0.25)]


def test_probe_times_are_the_gaps_between_result_files(tmp_path):
    import os

    for i, pid in enumerate(["exec", "p1", "p2"]):
        (tmp_path / f"{pid}.json").write_text("{}")
        os.utime(tmp_path / f"{pid}.json", ns=(0, 10**9 * (10 + 3 * i)))
    assert _probe_times(tmp_path, ["p1", "p2"]) == [3.0, 3.0]


def test_nbgrader_config_gives_each_cell_its_budget():
    c = Config()
    text = cell_budget_config(Budgets(cells={"test_a": 42.0, "bad id'); import os; ('": 1.0},
                                      other_cells=95.5))
    exec(compile(text, "nbgrader_config.py", "exec"), {"c": c})
    func = c.Execute.timeout_func
    assert func({"metadata": {"nbgrader": {"grade_id": "test_a"}}}) == 42
    assert func({"metadata": {"nbgrader": {"grade_id": "unknown"}}}) == 95
    assert func({"metadata": {}}) == 95
    assert "import os" not in text  # only plain grade ids are written into the config


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_looping_submission_costs_its_budget_not_the_flat_limit(tmp_path):
    """f_score never returns: the cells and probes that call it stop at their budgets, the
    others pass, and nbgrader's report is complete (no wall-clock limit reached)."""
    from course.grading.exercises import exercise_for
    from course.grading.grade import grade
    from course.grading.samples import sample_notebook, solution_code

    ex = exercise_for("01_metrics", ROOT)
    # it waits rather than spins: the limits are wall-clock ones (nbclient's cell timeout, the
    # harness's ITIMER_REAL alarm), and a spinning loop would take a core from the other tests
    # for the minutes its cells and probes wait
    looping = solution_code(ROOT, "01_metrics") + (
        "\n\nimport time\n\n\ndef f_score(precision, recall, beta=1.0):\n    while True:\n"
        "        time.sleep(0.05)\n")
    nb = sample_notebook(ROOT, "01_metrics", "solution")
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == ex.solution_id:
            cell.source = looping
    (tmp_path / "subs" / "loops").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "loops" / ex.notebook_name)
    rows = grade("01_metrics", tmp_path / "subs", tmp_path / "out", root=ROOT, workers=1,
                 timeout=600)
    row = rows[0]
    template = tmp_path / "out" / "work" / "_template"
    cached = json.loads(budget._cache_file(ROOT, ex, template, True).read_text())
    assert cached["cells"] and all(budget.CELL_FLOOR <= s <= 300 for s in cached["cells"].values())
    assert budget.PROBE_FLOOR <= cached["probe"] <= 30
    assert row.status == "graded" and row.score < row.max_score, row
    assert not row.flagged and "timed out" not in row.reason, row.reason
    failed = [gid for gid, c in row.cells.items() if not c["passed"]]
    assert "test_f_score_values" in failed
    # the flat limits cost at least 300 s for each looping cell; budgets, tens of seconds
    assert row.seconds < 300 * len(failed), (row.seconds, failed)
