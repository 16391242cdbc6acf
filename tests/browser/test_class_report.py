"""`course report`'s page in Chromium, opened from disk as an instructor opens it: it loads
with no console error, shows every figure, and runs nothing (issue 31)."""

from __future__ import annotations

from pages import assert_no_active_content
from test_report import HOSTILE, made_up_class

from autograder.report import build_report, write_report


def test_the_class_report_opens_with_every_figure_and_no_console_error(page, tmp_path):
    index = write_report(build_report(*made_up_class()), tmp_path / "report")
    page.page.goto(index.as_uri())
    page.page.wait_for_load_state("load")
    images = page.page.locator("img")
    assert images.count() == 3
    for i in range(images.count()):
        shown = images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        assert shown, images.nth(i).get_attribute("src")
    assert page.console == [], page.console  # no error, no CSP violation, nothing logged
    assert HOSTILE in page.page.locator("body").inner_text()  # shown as text, not an element
    assert page.page.locator("img[onerror]").count() == 0
    assert_no_active_content(page.page.content())
