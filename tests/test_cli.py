"""The `course` command."""

import shutil
import subprocess
import sys

import pytest


def test_help_lists_subcommands():
    """The installed command, as a new process: what a user types."""
    out = subprocess.run([sys.executable, "-m", "autograder.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("run", "score", "all", "release", "grade", "export", "report",
                    "cluster-certs"):
        assert command in out


def test_run_rejects_missing_notebook(tmp_path):
    from autograder.cli import main

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "source").mkdir()
    assert main(["run", "--root", str(tmp_path), str(tmp_path / "nope.ipynb")]) == 2


@pytest.mark.parametrize("command", ["run", "score", "all", "release", "grade", "export",
                                     "report", "cluster-certs"])
def test_help_of_every_subcommand(command, capsys):
    from autograder.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: course " + command)


def _row(student, score, status="graded", diagnoses=()):
    from autograder.grade import GradeRow

    return GradeRow(student, "01_metrics", score, 6.0, status, "why",
                    diagnoses=list(diagnoses))


def test_course_all_accepts_only_the_solution_at_full_marks():
    from autograder.cli import check_samples

    kinds = {"solution": "solution", "untouched": "release", "arith": "f_arithmetic_mean"}
    assert check_samples([_row("solution", 6), _row("untouched", 0),
                          _row("arith", 1, diagnoses=["f_arithmetic_mean"])], kinds) == []
    problems = check_samples([_row("solution", 5), _row("untouched", 1),
                               _row("arith", 6, diagnoses=["f_arithmetic_mean"]),
                               _row("x", 0, status="error")], kinds)
    assert [p.split(":")[0] for p in problems] == [
        "solution (solution)", "the untouched release scored 1", "arith (f_arithmetic_mean)",
        "x"]


def test_course_all_wants_each_mistake_diagnosed_as_itself():
    from autograder.cli import check_samples

    kinds = {"solution": "solution", "arith": "f_arithmetic_mean", "zeros": "f_all_zeros"}
    problems = check_samples([_row("solution", 6, diagnoses=["f_all_zeros"]),
                              _row("arith", 1), _row("zeros", 0, diagnoses=[
                                  "f_all_zeros", "f_arithmetic_mean"])], kinds)
    assert problems == ["solution (solution): diagnosed as f_all_zeros",
                        "arith (f_arithmetic_mean): diagnosed as nothing",
                        "zeros (f_all_zeros): diagnosed as f_all_zeros, f_arithmetic_mean"]


def test_samples_put_each_kind_into_the_released_notebook(tmp_path):
    import nbformat

    from autograder.exercises import registry
    from autograder.store.samples import mistakes, sample_notebook, solution_code, write_samples
    from course.notebooks import find_root

    root = find_root()
    for assignment, spec in registry(root).items():
        kinds = write_samples(root, assignment, tmp_path / assignment)
        assert set(kinds.values()) == {"solution", "release", *mistakes(root, assignment)}
        assert len(mistakes(root, assignment)) >= 2

        def cell(nb, spec=spec):
            return next(c.source for c in nb.cells
                        if c.metadata.get("nbgrader", {}).get("grade_id") == spec.solution_id)

        released = nbformat.read(root / "release" / assignment / spec.notebook_name,
                                 as_version=4)
        for student, kind in kinds.items():
            nb = nbformat.read(tmp_path / assignment / student / spec.notebook_name,
                               as_version=4)
            assert [c.source for c in nb.cells if c.cell_type == "markdown"] == \
                [c.source for c in released.cells if c.cell_type == "markdown"]
            if kind == "release":
                assert cell(nb) == cell(released) and "NotImplementedError" in cell(nb)
            elif kind == "solution":
                assert cell(nb) == solution_code(root, assignment)
                assert "### BEGIN SOLUTION" not in cell(nb)
            else:
                assert cell(nb) == (root / "autograder" / "samples" / assignment /
                                    f"{kind}.py").read_text()
    with pytest.raises(ValueError, match="f_arithmetic_mean"):
        sample_notebook(root, "01_metrics", "no_such_mistake")


def test_samples_with_parameters_set_them_as_papermill_does(tmp_path):
    """With the CI parameters, a sample is the same notebook plus papermill's injected cell
    right after the `parameters` cell, and valid nbformat."""
    import nbformat

    from autograder.exercises import registry
    from autograder.store.samples import ci_parameters_of, sample_notebook
    from course.notebooks import find_root

    root = find_root()
    for assignment in registry(root):
        params = ci_parameters_of(root, assignment)
        assert params["CHECK_CLAIMS"] is False, assignment
        plain = sample_notebook(root, assignment, "solution")
        small = sample_notebook(root, assignment, "solution", params)
        nbformat.validate(small)
        at = next(i for i, c in enumerate(plain.cells)
                  if "parameters" in c.metadata.get("tags", []))
        injected = small.cells.pop(at + 1)
        assert injected.metadata.tags == ["injected-parameters"]
        assert small.cells == plain.cells
        namespace = {}
        exec(injected.source, namespace)  # noqa: S102 - the cell papermill would run
        assert {k: namespace[k] for k in params} == params


@pytest.mark.slow
def test_grade_from_a_folder_with_its_own_copy_says_so(tmp_path):
    """`python -m autograder.cli` in a folder holding another copy of the packages runs that
    copy, while the sandbox's Python imports the installed one: said before anything runs,
    never a class of zeros ("the harness exited with status 1")."""
    from course.notebooks import find_root

    root = find_root()
    for package in ("autograder", "course"):
        shutil.copytree(root / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "subs").mkdir()
    result = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", "01_metrics",
                             "subs", "--out", "out", "--root", str(root)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"runs the grader from {tmp_path / 'autograder'}" in result.stderr
    assert "Run the installed `course` command" in result.stderr
    assert not (tmp_path / "out").exists()
