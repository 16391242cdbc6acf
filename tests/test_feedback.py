"""The feedback pages (autograder.inside.sanitise, autograder.steps.feedback): nothing in them
can run script."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pages import assert_no_active_content

from autograder.inside.sanitise import sanitize_html
from autograder.steps.feedback import publish_feedback

ATTACKS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<img src=x OnErRoR = 'alert(1)'>",
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><a xlink:href='javascript:alert(1)'><text>x</text></a></svg>",
    "<svg><a><animate attributeName=href values=javascript:alert(1) /><text>y</text></a></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<a href='  jav&#x09;ascript:alert(1)'>link</a>",
    "<a href='JaVaScRiPt:alert(1)'>link</a>",
    "<a href='vbscript:msgbox(1)'>link</a>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "<object data='data:text/html,<script>alert(1)</script>'></object>",
    "<embed src='data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=='>",
    "<form action='javascript:alert(1)'><button>go</button></form>",
    "<button formaction='javascript:alert(1)'>x</button>",
    "<meta http-equiv='refresh' content='0;url=javascript:alert(1)'>",
    "<base href='javascript:alert(1)//'>",
    "<body onload=alert(1)>",
    "<div style='background:url(javascript:alert(1))'>x</div>",
    "<details open ontoggle=alert(1)>",
    "<noscript><p title='</noscript><img src=x onerror=alert(1)>'></noscript>",
    "<template><script>alert(1)</script></template>",
    "</pre></div><script>alert(1)</script>",
    "<a href='data:text/html,<script>alert(1)</script>'>d</a>",
    "<link rel=import href='data:text/html,<script>alert(1)</script>'>",
]


@pytest.mark.parametrize("payload", ATTACKS)
def test_sanitize_html_removes_each_script_vector(payload):
    page = f"<!DOCTYPE html><html><head><title>t</title></head><body><p>before</p>{payload}" \
           f"<p>after</p></body></html>"
    clean = sanitize_html(page)
    assert_no_active_content(clean)
    assert "before" in clean
    assert "alert(1)" not in clean.replace("&lt;", "<") or "<script" not in clean.lower()


def test_sanitize_html_keeps_the_feedback_readable():
    png = "data:image/png;base64,iVBORw0KGgo="
    page = (f"<html><head><style>.score {{ color: green }}</style></head><body>"
            f"<h1>Feedback</h1><table><tr><td class='score'>2 / 2</td></tr></table>"
            f"<img src='{png}' alt='figure'><a href='#cell-3'>cell</a>"
            f"<pre>Traceback: 1 &lt; 2</pre></body></html>")
    clean = sanitize_html(page)
    assert_no_active_content(clean)
    for kept in ("<h1>Feedback</h1>", "2 / 2", png, 'href="#cell-3"', ".score { color: green }",
                 "1 &lt; 2"):
        assert kept in clean, kept


def test_sanitize_html_on_a_real_nbconvert_page(tmp_path):
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hi')")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "text/html": "<b>bold</b><script>alert('html output')</script>"
                         "<img src=x onerror=alert(2)>",
            "text/plain": "x"}),
        nbformat.v4.new_output("display_data", data={
            "application/javascript": "alert('js output')", "text/plain": "js"}),
        nbformat.v4.new_output("stream", name="stdout", text="<script>alert(3)</script>\n"),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title <img src=y onerror=alert(4)>"), cell]
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "<script>alert('html output')</script>" in body  # nbconvert leaves it in
    clean = sanitize_html(body)
    assert_no_active_content(clean)
    assert "<b>bold</b>" in clean and "Title" in clean
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in clean  # stream text stays visible, escaped


def test_publish_feedback_refuses_a_link(tmp_path):
    target = tmp_path / "target.html"
    target.write_text("<p>x</p>")
    (tmp_path / "nbgrader").mkdir()
    (tmp_path / "nbgrader" / "page.html").symlink_to(target)
    row = SimpleNamespace(score=1.0, max_score=2.0, cells={})
    assert not publish_feedback(tmp_path / "nbgrader", tmp_path / "out", row, "page.html",
                                isolate=False)
    assert not (tmp_path / "out").exists() and target.read_text() == "<p>x</p>"
