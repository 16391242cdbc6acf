"""`course book`'s pages and launch links, on small notebooks (the site itself:
tests/browser/test_book_site.py)."""

from urllib.parse import parse_qs, urlsplit

import nbformat
import pytest

from autograder.book.launch import Launch, colab_notebook
from autograder.book.pages import (
    RAN_AS_STUB,
    RAN_WITH_SOLUTION,
    WIDGET_MIME,
    StaleRelease,
    execution_notebook,
    page_notebook,
    static_widgets,
)

new_code, new_md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell


def _cell(source, grade_id=None, *, solution=False, grade=False):
    cell = new_code(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "grade": grade,
                                     "locked": not solution, "schema_version": 3}
    return cell


def _notebooks():
    """An instructor's notebook, its release, and an execution of the instructor's."""
    solved = ("def f():\n    ### BEGIN SOLUTION\n    return 42  # the secret answer\n"
              "    ### END SOLUTION")
    stub = "def f():\n    # your code here\n    raise NotImplementedError()"
    exercise = ("def g():\n    ### BEGIN SOLUTION\n    return 'worked-out-answer'\n"
                "    ### END SOLUTION\nattempt(g)")
    exercise_stub = "def g():\n    # your code here\n    raise NotImplementedError()\nattempt(g)"
    hidden = ("assert f() == 42\n### BEGIN HIDDEN TESTS\nassert f() != 'hidden-probe'\n"
              "### END HIDDEN TESTS")
    source = nbformat.v4.new_notebook(cells=[
        new_md("# Chapter 0"), _cell(solved, "f_solution", solution=True),
        _cell(hidden, "test_f", grade=True), _cell(exercise, "exercise_0_1", solution=True),
        _cell("print(f())")])
    release = nbformat.v4.new_notebook(cells=[
        new_md("# Chapter 0"), _cell(stub, "f_solution", solution=True),
        _cell("assert f() == 42\n", "test_f", grade=True),
        _cell(exercise_stub, "exercise_0_1", solution=True), _cell("print(f())")])
    return source, release


def _executed(nb):
    """``nb`` as if executed: each code cell prints a line of its own source."""
    done = nbformat.from_dict(nb)
    for cell in done.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text=f"ran: {cell.source}\n")]
    return done


LINKS = {"JupyterHub": "https://hub.example.edu/x"}


def test_only_ungraded_solutions_run_as_stubs():
    source, release = _notebooks()
    nb = execution_notebook(source, release, keep={"f_solution"})
    assert "return 42" in nb.cells[1].source  # graded: the rest of the chapter uses it
    assert "raise NotImplementedError" in nb.cells[3].source  # the exercise runs as a stub
    assert nb.cells[2].source == source.cells[2].source  # tests as the instructor wrote them


def test_a_page_holds_no_solution_and_no_hidden_test_and_explains_each_stub():
    source, release = _notebooks()
    keep = {"f_solution"}
    page = page_notebook(_executed(execution_notebook(source, release, keep)), release, keep,
                         links=LINKS, label="at test size")
    text = nbformat.writes(page)
    assert "secret answer" not in text and "hidden-probe" not in text
    assert "worked-out-answer" not in text
    assert "ran: print(f())" in text  # outputs of the cells students have as they are
    assert "ran: def g()" in text  # the exercise's stub output: what a first Run All shows
    codes = [c for c in page.cells if c.cell_type == "code"]
    assert [c.source for c in codes] == [c.source for c in release.cells if c.cell_type == "code"]
    assert codes[0].outputs == [] and codes[1].outputs == []  # solution, trimmed hidden tests
    notes = [c.source for c in page.cells if "stub-note" in c.source]
    assert [RAN_WITH_SOLUTION in notes[0], RAN_AS_STUB in notes[1]] == [True, True]
    assert "at test size" in page.cells[1].source and LINKS["JupyterHub"] in page.cells[1].source


def test_a_stale_release_stops_the_page():
    source, release = _notebooks()
    executed = _executed(execution_notebook(source, release, set()))
    release.cells[4].source = "print(f(), 'edited in release/ only')"
    with pytest.raises(StaleRelease, match="course release"):
        page_notebook(executed, release, set(), links=LINKS, label="")
    release.cells.pop()
    with pytest.raises(StaleRelease, match="other cells"):
        page_notebook(executed, release, set(), links=LINKS, label="")


def test_a_widget_shows_what_its_output_widget_held():
    nb = nbformat.v4.new_notebook(cells=[new_code("explorer()")])
    nb.cells[0].outputs = [nbformat.v4.new_output(
        "display_data", data={WIDGET_MIME: {"model_id": "box"}, "text/plain": "VBox(...)"})]
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {
        "box": {"state": {"_model_name": "VBoxModel", "children": ["IPY_MODEL_slider",
                                                                   "IPY_MODEL_out"]}},
        "slider": {"state": {"_model_name": "FloatSliderModel", "value": 0.5}},
        "out": {"state": {"_model_name": "OutputModel", "outputs": [figure]}}}}}
    shown = static_widgets(nb)
    outputs = shown.cells[0].outputs
    assert "widgets" not in shown.metadata
    assert [WIDGET_MIME in o.get("data", {}) for o in outputs] == [False, False]
    assert outputs[1]["data"]["image/png"] == figure["data"]["image/png"]


def test_launch_links_open_the_students_notebook():
    launch = Launch(repository="https://github.com/someone/dl-course", branch="spring",
                    hub="https://hub.uni.edu/", pages_branch="site")
    links = launch.links("05_regularization")
    hub = urlsplit(links["JupyterHub"])
    query = parse_qs(hub.query)
    assert (hub.netloc, hub.path) == ("hub.uni.edu", "/hub/user-redirect/git-pull")
    assert query == {"repo": ["https://github.com/someone/dl-course"], "branch": ["spring"],
                     "urlpath": ["lab/tree/dl-course/release/05_regularization/"
                                 "05_regularization.ipynb"]}
    binder = urlsplit(links["Binder"])
    assert binder.path == "/v2/gh/someone/dl-course/spring"
    assert parse_qs(binder.query)["urlpath"] == [
        "lab/tree/release/05_regularization/05_regularization.ipynb"]
    assert links["Colab"] == ("https://colab.research.google.com/github/someone/dl-course/blob/"
                              "site/_colab/05_regularization.ipynb")
    first = colab_notebook(nbformat.v4.new_notebook(), launch).cells[0].source
    assert '%pip install --quiet "git+https://github.com/someone/dl-course@spring"' in first


def test_launch_settings_refuse_what_binder_cannot_open(tmp_path):
    with pytest.raises(ValueError, match="github.com/OWNER/NAME"):
        Launch(repository="https://gitlab.com/a/b").links("01_metrics")
    settings = tmp_path / "book.yaml"
    settings.write_text("hub: https://hub.a.edu\nhubb: typo\n")
    with pytest.raises(ValueError, match="hubb"):
        Launch.from_settings(settings)
    settings.write_text("hub: https://hub.a.edu\n")
    assert Launch.from_settings(settings, hub=None).hub == "https://hub.a.edu"
    assert Launch.from_settings(settings, hub="https://b.edu").hub == "https://b.edu"


def test_course_book_stops_on_a_repository_binder_cannot_open(capsys):
    from autograder.cli import main

    assert main(["book", "--repository", "https://gitlab.com/a/b"]) == 1
    assert "github.com/OWNER/NAME" in capsys.readouterr().err


def test_chapter_7_runs_at_its_cpu_size_without_a_gpu_and_says_so():
    from autograder.book.site import CPU_SIZE, FULL, chapter_runs
    from course.notebooks import ci_parameters, find_root

    root = find_root()
    chapters = ["05_regularization", "07_cifar10_project"]
    small = ci_parameters(root)["source/07_cifar10_project/07_cifar10_project.ipynb"]
    on_cpu, on_gpu = (chapter_runs(root, chapters, ci=False, gpu=g) for g in (False, True))
    assert [(r.parameters, r.label) for r in on_cpu] == [({}, FULL), (small, CPU_SIZE)]
    assert [(r.parameters, r.label) for r in on_gpu] == [({}, FULL), ({}, FULL)]
    assert all(r.size == "CI parameters" for r in chapter_runs(root, chapters, ci=True, gpu=True))


@pytest.mark.slow  # starts a kernel
def test_a_chapter_that_fails_stops_the_book_naming_it(tmp_path):
    from autograder.book.pages import ChapterRun
    from autograder.book.site import ChapterFailed, execute_chapters

    nb = nbformat.v4.new_notebook(cells=[new_code("raise ValueError('a claim that fails')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for folder in ("source", "release"):
        (tmp_path / folder / "08_extra").mkdir(parents=True)
        nbformat.write(nb, tmp_path / folder / "08_extra" / "08_extra.ipynb")
    run = ChapterRun("08_extra", {}, "full size", "at full size")
    with pytest.raises(ChapterFailed, match="08_extra failed: a claim that fails"):
        execute_chapters(tmp_path, [run], {}, tmp_path / "cache", jobs=1)
