"""Walk and remove folder trees that a student's code may have shaped, without recursion.

A student's tree may be thousands of folders deep (``shutil.rmtree`` and ``os.walk`` recurse
and stop with RecursionError there) and hold links planted to point elsewhere: nothing here
follows a link. Used on both sides of the sandbox (the nbgrader worker inside, the grader's
sandbox and nbgrader step outside). Standard library only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["entries", "remove"]


def entries(folder: Path):
    """(relative path, lstat) of everything under ``folder``, parents first."""
    stack = [Path()]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(folder / rel) as found:
                names = [e.name for e in found]
        except OSError:
            continue
        for name in names:
            try:
                st = os.lstat(folder / rel / name)
            except OSError:
                continue
            yield rel / name, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel / name)


def remove(path: Path) -> None:
    """Remove ``path`` whatever it is, if it exists: a link or file is unlinked (never
    followed), a folder removed with all it holds, deepest first. Raises OSError where some
    of it could not be removed (as ``shutil.rmtree`` does)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        path.unlink(missing_ok=True)
        return
    folders = [path]
    for rel, st in entries(path):
        if stat.S_ISDIR(st.st_mode):
            folders.append(path / rel)
        else:
            (path / rel).unlink(missing_ok=True)
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass  # what it still holds: said below
    if os.path.lexists(path):
        raise OSError(f"could not remove all of {path}")
