"""A student's path, in a real JupyterLab driven by Chromium.

For every chapter: the released notebook, its exercise solved (the solution from source/), the
CI parameters injected without running it (papermill's prepare-only mode), opened in
JupyterLab, Run All from the Run menu, saved; then the saved notebook must hold every code cell
executed, no error and nothing on stderr, and the page every widget rendered. The explorers of
chapters 1 and 4 must redraw when their slider moves, and nbgrader's Validate button must say
success for the solved exercise and failure for the untouched release.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import papermill
import pytest

from autograder.exercises import registry
from autograder.store.samples import sample_notebook
from course.notebooks import ci_parameters, discover, find_root

ROOT = find_root()
NOTEBOOKS = {nb.parent.name: nb for nb in discover(ROOT)}
RUN_TIMEOUT_MS = 600_000  # one notebook, Run All, on a loaded 2-core machine
WIDGET = "application/vnd.jupyter.widget-view+json"


# The chapters with a graded exercise, from the grading registry (which checks itself against
# the source notebooks' nbgrader metadata); chapter 7's solution cell is an ungraded project
# cell, which its released copy runs past, so it has nothing for Validate to fail on.
EXERCISES = list(registry(ROOT))


def prepare(lab, chapter: str, *, solved: bool, folder: str = "") -> str:
    """Write the released notebook (solved or not) with its CI parameters injected, unexecuted,
    under the lab's root; return its path relative to the root."""
    source = NOTEBOOKS[chapter]
    if solved and chapter in EXERCISES:
        nb = sample_notebook(ROOT, chapter, "solution")
        for cell in nb.cells:  # a finished notebook has its written answer too (Validate asks)
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("solution") and meta.get("grade"):
                cell.source = "My own answer: the student writes a few sentences here."
    else:
        nb = nbformat.read(ROOT / "release" / chapter / source.name, as_version=4)
    rel = f"{folder}/{chapter}/{source.name}".lstrip("/")
    path = lab.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    papermill.execute_notebook(path, path, prepare_only=True, progress_bar=False,
                               parameters=ci_parameters(ROOT)[source.relative_to(ROOT).as_posix()])
    return rel


def open_notebook(page, lab, rel: str):
    """Open ``rel`` in JupyterLab (a fresh workspace) and wait until its kernel is connected
    (the server counts the page's connection) and idle."""
    page.goto(lab.url(f"lab/tree/{rel}?reset"))
    deadline = time.monotonic() + 120
    while not lab.kernel_ready(rel):
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel of {rel} was not connected and idle after 120 s")
        time.sleep(0.5)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"
                           "[data-status='idle']", timeout=60_000)


def run_all(page):
    """Run > Run All Cells; return once no cell is queued or running and the kernel is idle."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator("li[data-command='runmenu:run-all']").click()
    prompts = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
    page.wait_for_function(f"() => {prompts}.some(e => /[*\\d]/.test(e.textContent))",
                           timeout=60_000)
    page.wait_for_function(
        f"""() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status
                    === 'idle' && !{prompts}.some(e => e.textContent.includes('*'))""",
        timeout=RUN_TIMEOUT_MS, polling=1000)


def save(page):
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.locator("li[data-command='docmanager:save']").click()
    page.wait_for_selector(".jp-NotebookPanel", timeout=10_000)
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')",
                           timeout=60_000)


def read_saved(path: Path, wait: float = 30.0):
    """The saved notebook. Jupyter server writes a notebook in place (its "atomic" writing keeps
    a backup copy, it does not rename), so a read during a write, e.g. JupyterLab's autosave
    right after our save, can see an empty or partial file: read again until it parses."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return nbformat.read(path, as_version=4)
        except (nbformat.reader.NotJSONError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def widget_outputs(page) -> tuple[int, list[str]]:
    """(how many widgets the page shows in cell outputs, the outputs that failed to show one),
    once no widget is still loading."""
    outputs = "[...document.querySelectorAll('.jp-Cell-outputArea .jp-OutputArea-output')]"
    loading = "e => e.textContent.startsWith('Loading widget')"
    page.wait_for_function(f"() => !{outputs}.some({loading})", timeout=60_000)
    return page.evaluate(f"""() => [
        {outputs}.filter(e => e.querySelector(':scope > .jupyter-widgets')).length,
        {outputs}.map(e => e.textContent).filter(t => t.includes('Error displaying widget')
                                                    || t.startsWith('Loading widget'))]""")


def validate(page) -> tuple[str, str]:
    """Click nbgrader's Validate button; return the result's class and text (the dialog stays
    open, for the screenshot of a failing test)."""
    page.locator(".jp-NotebookPanel-toolbar .validate-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=RUN_TIMEOUT_MS)
    message = dialog.locator("#validation-message")
    if message.count():
        kind = next((c for c in message.get_attribute("class").split()
                     if c.startswith("validation-")), "validation-unknown")
    else:
        kind = "dialog"
    return kind, dialog.inner_text()


def set_slider(page, label: str, value: str):
    """Type ``value`` into the readout of the slider described by ``label``, as a student can."""
    slider = page.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=label))
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def explorer(page, label: str):
    """The explorer (a VBox) holding the slider described by ``label``."""
    return page.locator(".widget-vbox").filter(
        has=page.locator(".widget-slider .widget-label", has_text=label)).last


def wait_until(page, predicate: str, arg, what: str, timeout_ms: int = 120_000):
    """Wait for the JavaScript ``predicate(arg)``; fail saying ``what`` when it stays false."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(f"{what} (waited {timeout_ms // 1000} s)") from None


# The Output widget replaces its image when it redraws: look it up again at every poll.
FIGURE = "box => box.querySelector('.widget-output img')?.getAttribute('src')"


def check_threshold_explorer(page):
    """Chapter 1: a new threshold redraws the figure whose titles give precision and recall."""
    box = explorer(page, "threshold")
    before = box.evaluate(FIGURE)
    set_slider(page, "threshold", "0.30")
    wait_until(page, f"([box, old]) => ({FIGURE})(box) !== old", [box.element_handle(), before],
               "the threshold explorer did not redraw after its slider moved to 0.30")


def check_lr_explorer(page):
    """Chapter 4: a new learning rate changes the summary line and redraws the figure."""
    box = explorer(page, "lr")
    summary = box.locator(".widget-html")
    text, before = summary.inner_text(), box.evaluate(FIGURE)
    set_slider(page, "lr", "0.01")
    wait_until(page, f"""([box, text, old]) => ({FIGURE})(box) !== old
                           && box.querySelector('.widget-html').innerText !== text""",
               [box.element_handle(), text, before],
               "the learning-rate explorer did not redraw after its slider moved to 0.01")
    assert "lr=0.01" in summary.inner_text()


EXPLORERS = {"01_metrics": check_threshold_explorer, "04_learning_rate": check_lr_explorer}


@pytest.mark.parametrize("chapter", list(NOTEBOOKS))
def test_run_all_in_jupyterlab(chapter, student_lab, page):
    rel = prepare(student_lab, chapter, solved=True)
    open_notebook(page.page, student_lab, rel)
    run_all(page.page)
    save(page.page)

    nb = read_saved(student_lab.root / rel)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [i for i, c in enumerate(code) if c.execution_count is None] == [], "cells not run"
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(code)
              for o in c.outputs if o.output_type == "error"]
    assert errors == []
    stderr = [f"cell {i}: {o.text[:300]}" for i, c in enumerate(code)
              for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []

    # every widget the kernel displayed is on the page, none failed to render
    displayed = sum(WIDGET in o.get("data", {}) for c in code for o in c.outputs)
    shown, broken = widget_outputs(page.page)
    assert broken == [] and shown == displayed
    if chapter in EXPLORERS:
        EXPLORERS[chapter](page.page)
    if chapter in EXERCISES:
        kind, text = validate(page.page)
        assert kind == "validation-success", text


@pytest.mark.parametrize("chapter", EXERCISES)
def test_validate_fails_on_the_untouched_release(chapter, student_lab, page):
    rel = prepare(student_lab, chapter, solved=False, folder="untouched")
    open_notebook(page.page, student_lab, rel)
    kind, text = validate(page.page)
    assert kind == "validation-failed", text
    assert "NotImplementedError" in text
