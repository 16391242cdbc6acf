"""An instructor's path, in a real JupyterLab driven by Chromium: nbgrader's formgrader opens
from the Nbgrader menu and lists every assignment of the course (the folders of source/)."""

from __future__ import annotations

from course.notebooks import discover, find_root

ROOT = find_root()


def test_formgrader_lists_the_courses_assignments(instructor_lab, page):
    expected = sorted(nb.parent.name for nb in discover(ROOT))
    page.page.goto(instructor_lab.url("lab?reset"))
    page.page.get_by_role("menuitem", name="Nbgrader", exact=True).click(timeout=120_000)
    page.page.locator("li[data-command='nbgrader:open-formgrader']").click()
    names = page.page.frame_locator("iframe").locator("td.name a")
    names.first.wait_for(timeout=120_000)
    assert sorted(names.all_inner_texts()) == expected
