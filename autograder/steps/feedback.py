"""Feedback for students: nbgrader's HTML page, made safe to open, with the recorded score on top.

The page is sanitised in the sandbox by ``inside/sanitise.py`` (nh3's allowlist, then a page
whose Content-Security-Policy forbids script). ``publish_feedback`` copies the one page
nbgrader's feedback step writes (nothing else of that folder, and only a regular file under
a size limit) to OUT/feedback/<student>/<assignment>/, sanitised, with a banner giving the
recorded (trusted) score and each test cell's result. When the trusted checks recognised a
known mistake (``Mistake`` of the exercise's module), the banner opens with it: what the code
does, why that is wrong and where the chapter explains it; a failed cell that no known mistake
explains shows the check's own message.
"""

from __future__ import annotations

import html
import os
import shutil
import stat
import sys
from pathlib import Path

from autograder.settings import (
    FEEDBACK_MEMORY_MB,
    FEEDBACK_OUTPUT_BYTES,
    FEEDBACK_SECONDS,
    MAX_FEEDBACK_BYTES,
)

__all__ = ["add_banner", "diagnosis_html", "publish_feedback", "MAX_FEEDBACK_BYTES"]



_HOW = "checked by running your solution cell on the grader's own inputs"


def diagnosis_html(mistakes) -> str:
    """The known mistakes found, as the banner's first part ("" for none)."""
    items = "".join(
        f"<li><b>{html.escape(m.does)}</b> {html.escape(m.why)}<br><i>Hint:</i> "
        f"{html.escape(m.hint)} (see {html.escape(m.section)}).</li>" for m in mistakes)
    return (f'<div class="diagnosis"><b>What your code does</b><ul>{items}</ul></div>'
            if items else "")


def _cell_item(gid: str, c: dict) -> str:
    if c["passed"]:
        detail = ""
    elif c.get("diagnoses"):
        detail = " — explained above"
    else:
        detail = " — " + html.escape(c["message"][:300])
    return f"<li>{html.escape(gid)}: {c['points']:g} / {c['max_points']:g}{detail}</li>"


def add_banner(page: Path, score: float, max_score: float, cells: dict,
               mistakes=(), *, title: str = "Recorded score", detail: str = _HOW) -> None:
    """Put the score, the known mistakes found (``mistakes``: Mistake objects) and each
    graded cell's result at the top of a feedback page."""
    items = "".join(_cell_item(gid, c) for gid, c in cells.items())
    banner = (f'<div style="border:2px solid #444;padding:0.5em 1em;margin:1em">'
              f"<b>{html.escape(title)}: {score:g} / {max_score:g}</b> "
              f"({html.escape(detail)}){diagnosis_html(mistakes)}<ul>{items}</ul></div>")
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
                     timeout: float = FEEDBACK_SECONDS, mistakes=(),
                     title: str = "Recorded score", detail: str = _HOW) -> bool:
    """Publish the one expected page ``source/page`` to ``dest`` (replaced), sanitised, with
    ``row``'s recorded score and the known ``mistakes`` found on top: nbgrader's numbers below
    are its own.

    Nothing else in ``source`` is looked at. The page is sanitised in the sandbox, within
    ``timeout`` seconds (HTML nested thousands of levels deep makes the parser slow). Returns
    False (and publishes nothing) when the page is missing, not a regular file, larger than
    MAX_FEEDBACK_BYTES or not sanitised in time.
    """
    from autograder.isolation.sandbox import run_sandboxed

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
    result = run_sandboxed([sys.executable, "-P", "-m", "autograder.inside.sanitise", "in.html",
                            "out.html"], workdir=scratch, timeout=timeout, isolate=isolate,
                           memory_mb=FEEDBACK_MEMORY_MB, max_output_bytes=FEEDBACK_OUTPUT_BYTES)
    clean = _read_page(scratch / "out.html") if result.ok else None
    shutil.rmtree(scratch, ignore_errors=True)
    if clean is None:
        return False
    dest.mkdir(parents=True)
    (dest / page).write_text(clean, encoding="utf-8")
    add_banner(dest / page, row.score, row.max_score, row.cells,
               [m for m in mistakes if m is not None], title=title, detail=detail)
    return True
