"""nbgrader's API for a course folder, as the grader and its sandboxed worker open it.

Used on both sides of the sandbox: ``store/release.py`` and ``store/gradebook.py`` outside,
``nbgrader_worker.py`` inside. Standard library and nbgrader only.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

__all__ = ["alembic_head_in_process", "nbgrader_api", "venv_on_path"]


def nbgrader_api(course_dir: Path):
    """An ``NbGraderAPI`` for ``course_dir``, configured by its ``nbgrader_config.py``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    alembic_head_in_process()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    config.CourseDirectory.root = str(course_dir)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def alembic_head_in_process() -> None:
    """Let nbgrader learn its database revision here instead of from the ``alembic`` command.

    A ``Gradebook`` that creates its database stamps it with the head revision of nbgrader's
    migrations, which ``nbgrader.api.get_alembic_version`` asks of ``alembic heads``: a new
    Python that imports alembic and nbgrader, about 3 s of CPU for every new gradebook (each
    release, each template, each class gradebook). alembic's ``ScriptDirectory`` over the same
    folder gives the same answer in this process in 0.1 s; where it cannot (several heads, an
    nbgrader without that folder), nbgrader's own function runs, with this environment's
    ``alembic`` first on PATH.
    """
    import functools

    import nbgrader.api

    # nbgrader.api.get_alembic_version is public, but nbgrader (0.9.x, nbgrader/api.py) offers
    # no setting for it: it runs `alembic heads` as a command. Replaced here, so the version
    # range of nbgrader in pyproject.toml is bounded (<0.10); drop this when nbgrader reads the
    # head itself. No upstream issue exists yet (searched jupyter/nbgrader, 2026-12-06).
    if getattr(nbgrader.api.get_alembic_version, "in_process", False):
        return
    original = nbgrader.api.get_alembic_version

    @functools.cache
    def get_alembic_version() -> str:
        try:
            from alembic.script import ScriptDirectory

            head = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")
                                   ).get_current_head()
        except Exception:  # noqa: BLE001 - nbgrader's own way then says what is wrong
            head = None
        if head:
            return head
        with venv_on_path():
            return original()

    get_alembic_version.in_process = True
    nbgrader.api.get_alembic_version = get_alembic_version


@contextmanager
def venv_on_path():
    """This environment's bin/ first on PATH (where nbgrader's commands are), meanwhile."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old])
    try:
        yield
    finally:
        os.environ["PATH"] = old
