"""A check shared by the tests of pages shown to people (feedback, formgrader copies)."""

from __future__ import annotations

from html.parser import HTMLParser
from types import SimpleNamespace

__all__ = ["assert_no_active_content", "elements"]


class _Elements(HTMLParser):
    """Every start tag of a page with its attributes, as the standard library parses it."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.found = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append(SimpleNamespace(tag=tag, attrib={k: v or "" for k, v in attrs}))


def assert_no_active_content(html: str) -> None:
    """Nothing in the page ``html`` can run script or load a document: the sanitiser's promise,
    checked on the page as the standard library parses it."""
    elements = _Elements(html).found
    for el in elements:
        tag = el.tag
        assert tag not in {"script", "iframe", "object", "embed", "form", "base", "animate",
                           "set", "noscript", "template"}, tag
        for key, value in el.attrib.items():
            name = key.rsplit("}", 1)[-1].lower()
            assert not name.startswith("on"), (tag, key)
            assert name not in ("srcdoc", "formaction"), (tag, key)
            compact = "".join(value.split()).lower()
            assert "javascript:" not in compact and "vbscript:" not in compact, (tag, key, value)
            if name in ("href", "src", "data", "action") and compact.startswith("data:"):
                assert tag == "img" and compact.startswith("data:image/"), (tag, key, value)
        if tag == "meta" and "http-equiv" in el.attrib:
            assert el.attrib["http-equiv"] == "Content-Security-Policy"
    csp = [el for el in elements if el.tag == "meta"
           and el.attrib.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "script-src 'none'" in csp[0].attrib["content"]


def elements(html: str) -> list[SimpleNamespace]:
    """Every start tag of ``html`` (``.tag``, ``.attrib``), as the standard library parses it."""
    return _Elements(html).found
