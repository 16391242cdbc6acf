"""The autograded copy formgrader renders (nbconvert) carries nothing active from the student
(issue 29, point 1): autograder.inside.sanitise.sanitize_notebook, as the gradebook step uses it."""

from __future__ import annotations

import nbformat
import pytest
from nbconvert import HTMLExporter
from pages import elements

from autograder.inside.sanitise import sanitize_notebook

# Each payload calls back to a listener in the browser test of the issue; here each must leave
# no element that could run it in nbconvert's rendering, while the answer's text stays.
PAYLOADS = {
    "img-onerror": '<img src="x" onerror="fetch(\'http://127.0.0.1:9/1\')">',
    "svg-onload": '<svg onload="fetch(\'http://127.0.0.1:9/2\')"><circle r="1"/></svg>',
    "script": "<script>fetch('http://127.0.0.1:9/3')</script>",
    "iframe-srcdoc": '<iframe srcdoc="&lt;script&gt;fetch(4)&lt;/script&gt;"></iframe>',
    "details-ontoggle": '<details open ontoggle="fetch(\'http://127.0.0.1:9/5\')">d</details>',
    "a-javascript": '<a href="javascript:fetch(6)">link</a>',
    "form": '<form action="http://127.0.0.1:9/7"><button>go</button></form>',
    "remote-img": '<img src="http://127.0.0.1:9/8.png">',
    "style-url": "<p style=\"background:url('http://127.0.0.1:9/9')\">p</p>",
    "object": '<object data="http://127.0.0.1:9/10"></object>',
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=javascript:fetch(11)">',
    "math-mglyph": "<math><mtext><table><mglyph><style><img src=x onerror=fetch(12)>",
}
ANSWER = "My answer: **precision** is TP / (TP + FP), and $F_1 < 1$ here."


def _render(cells, metadata=None) -> str:
    nb = nbformat.v4.new_notebook(cells=cells, metadata=metadata or {})
    sanitize_notebook(nb)
    nbformat.validate(nb)
    return HTMLExporter().from_notebook_node(nb)[0]


def _active(html: str) -> list:
    """Elements that act by themselves: handlers, frames, objects, forms, javascript: or
    remote URLs, refreshes (nbconvert's own scripts are counted apart)."""
    found = []
    for tag, attrs in ((el.tag, el.attrib) for el in elements(html)):
        if any(name.startswith("on") for name in attrs) or tag in ("iframe", "object", "embed",
                                                                   "form", "meta"):
            if tag != "meta" or "http-equiv" in attrs and attrs["http-equiv"] != "Content-Type":
                found.append((tag, attrs))
        for name in ("src", "href", "action", "data", "style"):
            value = "".join((attrs.get(name) or "").split()).lower()
            if "javascript:" in value or "127.0.0.1:9" in value:
                found.append((tag, attrs))
    return found


@pytest.mark.parametrize("name", PAYLOADS)
def test_a_written_answer_keeps_its_text_and_loses_its_payload(name):
    payload = PAYLOADS[name]
    cell = nbformat.v4.new_markdown_cell(f"{ANSWER}\n\n{payload}",
                                         metadata={"nbgrader": {"grade_id": "answer"}})
    html = _render([cell])
    baseline = _render([nbformat.v4.new_markdown_cell(ANSWER)])
    assert _active(html) == []
    scripts = [el for el in elements(html) if el.tag == "script"]
    assert len(scripts) == [el.tag for el in elements(baseline)].count("script")  # nbconvert's
    assert "<strong>precision</strong>" in html and "TP / (TP + FP)" in html


def test_outputs_attachments_and_metadata_keep_only_what_is_inert():
    md = nbformat.v4.new_markdown_cell("![figure](attachment:f.png)",
                                       metadata={"nbgrader": {"grade_id": "w"}, "x": "<b>"})
    md.attachments = {"f.png": {"image/png": "iVBORw0KGgo=",
                                "image/svg+xml": "<svg onload='fetch(1)'/>",
                                "text/html": "<script>fetch(2)</script>"}}
    raw = nbformat.v4.new_raw_cell("<script>fetch(3)</script>",
                                   metadata={"raw_mimetype": "text/html"})
    code = nbformat.v4.new_code_cell("show()")
    code.outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": "<script>fetch(4)</script>", "application/javascript": "fetch(5)",
        "image/svg+xml": "<svg onload='fetch(6)'/>", "text/plain": "plain",
        "application/vnd.jupyter.widget-view+json": {"model_id": "m"}})]
    nb = nbformat.v4.new_notebook(cells=[md, raw, code],
                                  metadata={"widgets": {"state": {}}, "kernelspec": {
                                      "name": "python3", "display_name": "Python 3"}})
    sanitize_notebook(nb)
    assert md.attachments == {"f.png": {"image/png": "iVBORw0KGgo="}}
    assert md.metadata == {"nbgrader": {"grade_id": "w"}} and raw.metadata == {}
    assert code.outputs[0]["data"] == {"text/plain": "plain"}
    assert set(nb.metadata) == {"kernelspec"}
    html = HTMLExporter().from_notebook_node(nb)[0]
    assert "<script>fetch(" not in html and "onload=" not in html
    assert _active(html) == [] and 'src="data:image/png;base64,iVBORw0KGgo="' in html
