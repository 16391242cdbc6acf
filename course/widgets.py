"""ipywidgets explorers for the notebooks.

Each explorer returns a widget to display; the notebook shows a static figure beside it, so
a headless run (papermill, nbgrader, CI) still makes the point.
"""

from __future__ import annotations

__all__: list[str] = []
