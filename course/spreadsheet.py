"""CSV files a spreadsheet opens safely, readable by their owner only.

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``, ``+``, ``-`` or
``@`` (and some read a leading tab or carriage return the same way) as a formula, so text that
came from a student (a file name, an id, a reason) could run one: such text is written with a
leading ``'``, which the spreadsheet shows as text (OWASP's advice for CSV injection). Numbers
are written as numbers. Every CSV the course writes (grades.csv, canvas.csv, grades_wide.csv,
leaderboard.csv) goes through :func:`write_csv`: written whole to a temporary file and renamed,
with mode 0600, since grades are private.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FORMULA_STARTS", "safe_cell", "write_csv"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """``value`` as a spreadsheet cell that cannot be a formula (None and NaN: empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> Path:
    """Write ``header`` and ``rows`` to ``path`` (replaced whole, mode 0600), every text cell
    through :func:`safe_cell`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:  # mkstemp makes it 0600: so is the file it becomes
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([safe_cell(h) for h in header])
            writer.writerows([safe_cell(v) for v in row] for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
