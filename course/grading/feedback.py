"""Feedback for students: nbgrader's HTML page, made safe to open, with the recorded score on top.

``sanitize_html`` rewrites an nbconvert/nbgrader HTML page so that nothing in it can run script:
it removes ``<script>``, frames, objects, forms, ``on*`` handlers,
``javascript:``/``vbscript:``/non-image ``data:`` URLs, SVG animation of links, ``<base>`` and
``<meta http-equiv>``, and adds a Content-Security-Policy that forbids scripts.
``publish_feedback`` copies the one page nbgrader's feedback step writes (nothing else of that
folder, and only a regular file under a size limit) to OUT/feedback/<student>/<assignment>/,
sanitised, with a banner giving the recorded (trusted) score and each test cell's result.
"""

from __future__ import annotations

import html
import os
import shutil
import stat
import sys
from pathlib import Path

__all__ = ["sanitize_html", "sanitize_feedback_html", "add_banner", "publish_feedback",
           "MAX_FEEDBACK_BYTES"]

MAX_FEEDBACK_BYTES = 20 * 2**20  # a chapter's page with its plots is a few MB

_DROP_ELEMENTS = {
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "form",
    "portal", "noscript", "template", "animate", "set", "animatemotion", "animatetransform",
    "handler", "listener", "fencedframe", "param",
}
_URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "background",
              "poster", "lowsrc", "dynsrc", "ping", "codebase", "cite", "longdesc", "srcset",
              "manifest", "icon", "profile", "usemap", "archive", "classid", "from", "to",
              "values", "by", "attributename"}
_CSP = ("default-src 'self' data: 'unsafe-inline'; script-src 'none'; object-src 'none'; "
        "frame-src 'none'; child-src 'none'; worker-src 'none'; form-action 'none'; "
        "base-uri 'none'")


def _safe_url(name: str, value: str, tag: str) -> bool:
    compact = "".join(ch for ch in value if ch > " " and ch != "\x7f").lower()
    if name in ("values", "by", "from", "to", "attributename"):
        return "javascript:" not in compact and "vbscript:" not in compact
    if compact.startswith(("javascript:", "vbscript:", "livescript:", "mocha:")):
        return False
    if "javascript:" in compact or "vbscript:" in compact:
        return False
    if compact.startswith("data:"):
        # inline images (matplotlib PNGs) stay; an <img> never runs script, even SVG
        return tag in ("img", "image", "source") and compact.startswith("data:image/")
    return True


def _drop(child) -> bool:
    tag = child.tag if isinstance(child.tag, str) else ""
    local = tag.rsplit("}", 1)[-1].lower()
    return local in _DROP_ELEMENTS or (local == "meta" and any(
        k.rsplit("}", 1)[-1].lower() == "http-equiv" for k in child.attrib)) or (
        local == "link" and "stylesheet" not in child.get("rel", "").lower())


def _remove(element, child) -> None:
    """Remove ``child`` from ``element``, keeping the text that followed it."""
    tail = child.tail
    index = list(element).index(child)
    element.remove(child)
    if tail:
        if index > 0:
            prev = element[index - 1]
            prev.tail = (prev.tail or "") + tail
        else:
            element.text = (element.text or "") + tail


def _clean_attributes(child) -> None:
    local = (child.tag if isinstance(child.tag, str) else "").rsplit("}", 1)[-1].lower()
    for key in list(child.attrib):
        attr = key.rsplit("}", 1)[-1].lower()
        full = ("xlink:" + attr) if key.startswith("{http://www.w3.org/1999/xlink}") else attr
        value = child.attrib[key]
        if attr.startswith("on") or attr in ("srcdoc", "formaction", "http-equiv"):
            del child.attrib[key]
        elif (attr in _URL_ATTRS or full in _URL_ATTRS) and not _safe_url(attr, value, local):
            del child.attrib[key]
        elif attr == "style" and any(s in value.lower().replace(" ", "")
                                     for s in ("expression(", "javascript:", "behavior:",
                                               "-moz-binding")):
            del child.attrib[key]


def _clean_tree(root) -> None:
    """Clean every element below ``root``, with an explicit stack (a page nested thousands of
    levels deep is cleaned like any other, never a RecursionError)."""
    stack = [root]
    while stack:
        element = stack.pop()
        for child in list(element):
            if _drop(child):
                _remove(element, child)
                continue
            _clean_attributes(child)
            stack.append(child)


def sanitize_html(text: str) -> str:
    """Return ``text`` (a whole HTML page) with everything that could run script removed.

    The page is parsed the way a browser parses it (html5lib), cleaned as a tree and serialised
    again, so markup hidden in odd places (``</script>`` inside a string, broken tags, SVG/MathML)
    ends up either removed or escaped. A Content-Security-Policy ``<meta>`` forbidding scripts is
    put first in ``<head>`` as a second line of defence.
    """
    from bleach._vendor import html5lib
    from bleach._vendor.html5lib import serializer
    from bleach._vendor.html5lib.treebuilders import getTreeBuilder
    from bleach._vendor.html5lib.treewalkers import getTreeWalker

    builder = getTreeBuilder("etree")
    parser = html5lib.HTMLParser(tree=builder, namespaceHTMLElements=True)
    doc = parser.parse(text)
    ns = "{http://www.w3.org/1999/xhtml}"
    _clean_tree(doc)
    head = doc.find(f"{ns}head")
    if head is None:  # html5lib always makes one, but be safe
        head = builder.elementClass("head").element
        doc.insert(0, head)
    meta = type(doc)(f"{ns}meta")
    meta.set("http-equiv", "Content-Security-Policy")
    meta.set("content", _CSP)
    head.insert(0, meta)
    charset = type(doc)(f"{ns}meta")
    charset.set("charset", "utf-8")
    head.insert(0, charset)
    walker = getTreeWalker("etree")
    ser = serializer.HTMLSerializer(quote_attr_values="always", omit_optional_tags=False,
                                    minimize_boolean_attributes=False,
                                    use_trailing_solidus=True, escape_lt_in_attrs=True,
                                    escape_rcdata=True, sanitize=False)
    body = ser.render(walker(doc))
    return "<!DOCTYPE html>\n" + body


def sanitize_feedback_html(path) -> None:
    """Sanitise the HTML file at ``path`` in place (see ``sanitize_html``)."""
    path = Path(path)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    text = path.read_text(encoding="utf-8", errors="replace")
    path.write_text(sanitize_html(text), encoding="utf-8")


def add_banner(page: Path, score: float, max_score: float, cells: dict) -> None:
    """Put the recorded score and each test cell's result at the top of a feedback page."""
    items = "".join(
        f"<li>{html.escape(gid)}: {c['points']:g} / {c['max_points']:g}"
        f"{'' if c['passed'] else ' — ' + html.escape(c['message'][:300])}</li>"
        for gid, c in cells.items())
    banner = (f'<div style="border:2px solid #444;padding:0.5em 1em;margin:1em">'
              f"<b>Recorded score: {score:g} / {max_score:g}</b> (checked by running "
              f"your solution cell on the grader's own inputs)<ul>{items}</ul></div>")
    text = page.read_text(encoding="utf-8")
    start = text.find("<body")
    end = text.find(">", start) + 1 if start >= 0 else 0
    page.write_text(text[:end] + banner + text[end:], encoding="utf-8")


def _read_page(path: Path) -> str | None:
    """The page's text: a regular file (never a link) of at most MAX_FEEDBACK_BYTES, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        data = fh.read(MAX_FEEDBACK_BYTES + 1)
    if len(data) > MAX_FEEDBACK_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


def publish_feedback(source: Path, dest: Path, row, page: str, *, isolate: bool = True,
                     timeout: float = 120) -> bool:
    """Publish the one expected page ``source/page`` to ``dest`` (replaced), sanitised, with
    ``row``'s recorded score on top: nbgrader's numbers below are its own.

    Nothing else in ``source`` is looked at. The page is sanitised in the sandbox, within
    ``timeout`` seconds (HTML nested thousands of levels deep makes the parser slow). Returns
    False (and publishes nothing) when the page is missing, not a regular file, larger than
    MAX_FEEDBACK_BYTES or not sanitised in time.
    """
    from course.grading.sandbox import run_sandboxed

    if dest.exists():
        shutil.rmtree(dest)
    text = _read_page(Path(source) / page)
    if text is None:
        return False
    scratch = dest.parent / f".{dest.name}-sanitise"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / "in.html").write_text(text, encoding="utf-8")
    result = run_sandboxed([sys.executable, "-P", "-m", "course.grading.feedback", "in.html",
                            "out.html"], workdir=scratch, timeout=timeout, isolate=isolate,
                           memory_mb=2048, max_output_bytes=65536)
    clean = _read_page(scratch / "out.html") if result.ok else None
    shutil.rmtree(scratch, ignore_errors=True)
    if clean is None:
        return False
    dest.mkdir(parents=True)
    (dest / page).write_text(clean, encoding="utf-8")
    add_banner(dest / page, row.score, row.max_score, row.cells)
    return True


if __name__ == "__main__":  # in the sandbox: python -P -m course.grading.feedback IN OUT
    Path(sys.argv[2]).write_text(sanitize_html(Path(sys.argv[1]).read_text(encoding="utf-8")),
                                 encoding="utf-8")
