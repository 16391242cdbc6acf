"""Execute every instructor notebook under papermill with its CI parameters.

A notebook fails the test when a cell raises or when anything is written to stderr
(nbgrader scores a test cell 0 when it writes to stderr).
"""

import pytest

from course.notebooks import CI_CELL_LIMIT, ci_parameters, discover, find_root, run_notebook

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
    result = run_notebook(notebook, tmp_path, params, timeout=CI_CELL_LIMIT, html=False)
    assert result.status == "ok", f"{result.notebook}: {result.status}: {result.detail}"


# Chapters 1-6 also run at their full-size defaults, where CHECK_CLAIMS is True: every result
# their text states is checked against the run's own numbers and a claim that does not hold
# fails the notebook. (Chapter 7's full size needs a GPU and CIFAR-10.)
FULL_SIZE = [nb for nb in NOTEBOOKS if nb.parent.name[:2] in {"01", "02", "03", "04", "05", "06"}]


# A cell limit above any full-size cell (all six notebooks together took 633 s under heavy load):
# it ends a run that ipykernel left waiting for a lost request, and run_notebook runs it again
# (see course/notebooks.py, CI_CELL_LIMIT).
CELL_LIMIT = 600


def test_a_run_that_reaches_its_cell_limit_is_run_once_more(monkeypatch, tmp_path):
    import course.notebooks as notebooks

    calls = []

    def fake(path, out_dir, parameters, timeout, html):
        calls.append(timeout)
        status = "failed" if len(calls) == 1 else "ok"
        return notebooks.RunResult(path.name, status, 1.0, "A cell timed out while it was "
                                   "being executed, after 5 seconds." if len(calls) == 1 else "")

    monkeypatch.setattr(notebooks, "execute_once", fake)
    assert run_notebook(tmp_path / "x.ipynb", tmp_path, timeout=5).status == "ok"
    assert calls == [5, 5]
    calls.clear()
    assert run_notebook(tmp_path / "x.ipynb", tmp_path, timeout=None).status == "failed"
    assert calls == [None]  # no limit: nothing to retry


def claim_lines(notebook_path):
    """The ✓ / ✗ lines the claims printed in an executed notebook."""
    import nbformat

    nb = nbformat.read(notebook_path, as_version=4)
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return [line for line in text.splitlines() if line[:1] in ("✓", "✗")]


def test_the_full_size_list_covers_chapters_1_to_6():
    assert [nb.parent.name[:2] for nb in FULL_SIZE] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.slow
@pytest.mark.fullsize
@pytest.mark.parametrize("notebook", FULL_SIZE, ids=[nb.parent.name for nb in FULL_SIZE])
def test_notebook_claims_hold_at_full_size(notebook, tmp_path):
    result = run_notebook(notebook, tmp_path, {}, timeout=CELL_LIMIT, html=False)
    assert result.status == "ok", f"{result.notebook}: {result.status}: {result.detail}"
    lines = claim_lines(tmp_path / notebook.name)
    assert len(lines) >= 10, f"{notebook.name}: only {len(lines)} claims checked"
    assert all(line.startswith("✓") for line in lines), lines


@pytest.mark.slow
@pytest.mark.fullsize
def test_a_broken_experiment_fails_its_claim(tmp_path):
    """Dropout with p = 0 is no regularizer: the chapter's full-size run must stop at the claim
    that dropout lowers the validation loss, with a message naming it."""
    notebook = ROOT / "source/05_regularization/05_regularization.ipynb"
    result = run_notebook(notebook, tmp_path, {"DROPOUT_P": 0.0, "N_SEEDS": 1},
                          timeout=CELL_LIMIT, html=False)
    assert result.status == "failed", result
    assert "claim does not hold: dropout p=0.0 reaches a lower minimum of the validation loss" \
        in result.detail, result.detail
