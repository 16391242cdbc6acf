"""Make an HTML page safe to open: nh3's allowlist, then a page of our own around what is left.

Runs in the sandbox (``python -P -m autograder.inside.sanitise IN OUT``): the page holds what a
student's notebook printed, and the parser is the part that sees it first. nh3 (Rust's
ammonia) keeps only the tags and attributes listed here: formatting, headings, lists, tables,
code, the notebook's CSS and images inlined as ``data:image/...``; script, event handlers,
frames, forms, ``javascript:`` and every other tag or attribute go. The result is put into a
page whose Content-Security-Policy forbids script and remote loads, as a second line of
defence.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["CSP", "FEEDBACK_CELL_METADATA", "FEEDBACK_OUTPUTS", "sanitize_html",
           "sanitize_markdown", "sanitize_notebook"]

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "script-src 'none'; object-src 'none'; frame-src 'none'; form-action 'none'; "
       "base-uri 'none'")
_EXTRA_TAGS = {"style", "section", "main", "input", "label", "caption", "title"}
_GENERIC = {"class", "id", "title", "lang", "dir", "style", "role", "align"}
_ATTRIBUTES = {
    "a": {"href", "name"}, "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"},
    "ol": {"start", "type"}, "input": {"type", "checked", "disabled"},
    "details": {"open"},
}
_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]", re.I)
_BAD_STYLE = ("url(", "expression(", "javascript:", "behavior:", "-moz-binding", "@import")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def _attribute(tag: str, name: str, value: str) -> str | None:
    if name == "src":  # images from the page itself only: never a remote load
        return value if tag == "img" and _IMAGE.match(value.strip()) else None
    if name == "href":  # in-page anchors and ordinary links; nh3 has dropped javascript:
        return value if not value.strip().lower().startswith("data:") else None
    if name == "style":  # layout only: no url(), no script-era CSS extensions
        compact = "".join(value.split()).lower()
        return None if any(bad in compact for bad in _BAD_STYLE) else value
    if name == "type" and tag == "input":
        return value if value.lower() == "checkbox" else None  # task lists in markdown
    return value


def sanitize_html(text: str) -> str:
    """``text`` (a whole HTML page, or a fragment) with nothing left that can run script or
    load anything from elsewhere, as a complete page."""
    import nh3

    title = _TITLE.search(text)
    tags = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - {"title"}
    attributes = {tag: set(_GENERIC) for tag in tags}
    for tag, names in _ATTRIBUTES.items():
        attributes.setdefault(tag, set()).update(names)
    body = nh3.clean(text, tags=tags, clean_content_tags={"script", "title", "noscript"},
                     attributes=attributes, attribute_filter=_attribute,
                     url_schemes={"http", "https", "mailto", "data"},
                     link_rel="noopener noreferrer")
    heading = nh3.clean(title.group(1), tags=set()) if title else "Feedback"
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            f"<title>{heading}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _allowed():
    import nh3

    tags = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - {"title", "style", "input", "label"}
    attributes = {tag: set(_GENERIC) for tag in tags}
    for tag, names in _ATTRIBUTES.items():
        attributes.setdefault(tag, set()).update(names)
    return tags, attributes


def _markdown_attribute(tag: str, name: str, value: str) -> str | None:
    if name == "src" and tag == "img" and value.strip().lower().startswith("attachment:"):
        return value  # the cell's own attachments (kept as images below)
    return _attribute(tag, name, value)


def sanitize_markdown(text: str) -> str:
    """A markdown cell's source with its HTML reduced to the allowlist: formatting, tables,
    code and images from the cell's attachments stay; script, handlers, frames, forms and
    remote loads go. Markdown itself is text to nh3 and is kept."""
    import nh3

    tags, attributes = _allowed()
    return nh3.clean(text, tags=tags, clean_content_tags={"script", "style", "noscript"},
                     attributes=attributes, attribute_filter=_markdown_attribute,
                     url_schemes={"http", "https", "mailto", "data", "attachment"},
                     link_rel="noopener noreferrer")


def _html_output(data) -> str:
    """An HTML output (a string or nbformat's list of lines) reduced to the allowlist, each on
    its own: an unclosed tag (a ``<style>``, a ``<table>``) ends with its output and cannot
    swallow the cells after it when the page is parsed as a whole."""
    text = "".join(data) if isinstance(data, list) else str(data)
    return sanitize_markdown(text)


_RASTER = {"image/png", "image/jpeg", "image/gif"}
# What the feedback page shows of the outputs: text, raster images and HTML (through the
# allowlist, output by output); the page is sanitised once more as a whole after nbgrader
# renders it.
FEEDBACK_OUTPUTS = ("text/plain", "image/png", "image/jpeg", "text/html")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_KEEP_CELL_METADATA = ("nbgrader", "tags", "deletable", "editable")
# and for the feedback step: the run's cell times (nbclient's, and the CPU seconds the worker
# notes under "course"), which steps/budget.py reads of the reference solution's run
FEEDBACK_CELL_METADATA = (*_KEEP_CELL_METADATA, "execution", "course")
_KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")


def _raster_only(bundle) -> dict:
    return {mime: data for mime, data in dict(bundle or {}).items()
            if mime in _RASTER and isinstance(data, str) and _BASE64.fullmatch(data)}


def sanitize_notebook(nb, keep_output=("text/plain", "image/png", "image/jpeg"),
                      keep_cell_metadata=_KEEP_CELL_METADATA) -> None:
    """Make a student's notebook (an nbformat node, changed in place) safe to render for a
    person, as formgrader does with nbconvert: markdown through :func:`sanitize_markdown`,
    attachments raster images only, outputs only the ``keep_output`` types (never SVG,
    JavaScript or widget views; HTML only if named, and then through the allowlist), and no
    metadata but what nbgrader and Jupyter need."""
    nb.metadata = {k: v for k, v in nb.get("metadata", {}).items()
                   if k in _KEEP_NOTEBOOK_METADATA}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.get("metadata", {}).items()
                         if k in keep_cell_metadata}
        if "attachments" in cell:
            cell.attachments = {name: _raster_only(bundle)
                                for name, bundle in dict(cell.attachments or {}).items()
                                if isinstance(name, str)}
        if cell.cell_type == "markdown":
            cell.source = sanitize_markdown(cell.source)
        elif cell.cell_type == "raw":  # its raw_mimetype (text/html: rendered as is) is gone
            cell.source = nh3_text(cell.source)
        for output in cell.get("outputs", []):
            if "metadata" in output:
                output["metadata"] = {}
            if "data" in output:
                output["data"] = {k: v for k, v in output["data"].items() if k in keep_output}
                if "text/html" in output["data"]:
                    output["data"]["text/html"] = _html_output(output["data"]["text/html"])


def nh3_text(text: str) -> str:
    """``text`` with every tag removed and what is left escaped."""
    import nh3

    return nh3.clean(text, tags=set())


if __name__ == "__main__":  # in the sandbox: python -P -m autograder.inside.sanitise IN OUT
    Path(sys.argv[2]).write_text(sanitize_html(Path(sys.argv[1]).read_text(encoding="utf-8")),
                                 encoding="utf-8")
