"""Execute every instructor notebook under papermill with its CI parameters.

A notebook fails the test when a cell raises or when anything is written to stderr
(nbgrader scores a test cell 0 when it writes to stderr).
"""

import pytest

from course.notebooks import ci_parameters, discover, find_root, run_notebook

ROOT = find_root()
NOTEBOOKS = discover(ROOT)


def test_every_notebook_has_ci_parameters():
    params = ci_parameters(ROOT)
    assert NOTEBOOKS, "no notebooks found under source/"
    for nb in NOTEBOOKS:
        assert nb.relative_to(ROOT).as_posix() in params


def test_notebooks_are_committed_without_outputs():
    import nbformat

    for nb_path in NOTEBOOKS:
        nb = nbformat.read(nb_path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and "parameters" in code[0].metadata.get("tags", []), nb_path.name
        for cell in code:
            assert not cell.outputs and cell.execution_count is None, nb_path.name


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.parent.name for nb in NOTEBOOKS])
def test_notebook_runs_in_ci_mode(notebook, tmp_path):
    params = ci_parameters(ROOT)[notebook.relative_to(ROOT).as_posix()]
    result = run_notebook(notebook, tmp_path, params, html=False)
    assert result.status == "ok", f"{result.notebook}: {result.status}: {result.detail}"
