"""The nbgrader course folder each student is graded in: the template of ``course grade``.

``release.prepare_course`` makes it (nbgrader's configuration, the assignment's release/ and a
gradebook.db that knows its graded cells), which takes seconds; so it is prepared once per
machine and source, kept under ~/.cache/dl-tuning-course/templates/, and copied into the run's
work folder from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from autograder.inside.linux import current_umask
from autograder.settings import cache_folder
from autograder.store import release

__all__ = ["cached_template", "prepare_template", "template_key"]


def template_key(root: Path, assignment: str) -> str:
    """A hash of what a prepared template is made from: nbgrader's configuration and version,
    the assignment's folder in source/ and the code that prepares it."""
    import nbgrader

    digest = hashlib.sha256(f"{nbgrader.__version__}\0".encode())
    src = Path(root) / "source" / assignment
    files = []  # what prepare_course copies: the same patterns left out
    for folder, dirs, names in os.walk(src):
        skip = release.IGNORE(folder, dirs + names)
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files += [Path(folder) / n for n in sorted(names) if n not in skip]
    for path, name in [(Path(root) / release.CONFIG, "config"), (Path(release.__file__), "code"),
                       *((p, p.relative_to(src).as_posix()) for p in files)]:
        digest.update(f"{name}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cached_template(root: Path, assignment: str) -> Path | None:
    """The assignment's template, prepared once per machine and source under
    ~/.cache/dl-tuning-course/templates/; None where that folder cannot be written."""
    cached = cache_folder("templates") / f"{assignment}-{template_key(root, assignment)}"
    if cached.is_dir():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{assignment}-", dir=cached.parent))
    except OSError:
        return None
    try:
        release.prepare_course(root, [assignment], building / "course")
        try:
            (building / "course").rename(cached)  # whole or not at all
        except OSError:
            if not cached.is_dir():  # not another process that got there first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return cached


def prepare_template(root: Path, exercise, work: Path, cell_timeout: int | None) -> Path:
    """work/_template: the template of ``exercise`` (a GradedExercise), with nbgrader's
    per-cell limit set to ``cell_timeout`` seconds (None: the configuration's own)."""
    template = Path(work) / "_template"
    if template.exists():
        shutil.rmtree(template)
    cached = cached_template(root, exercise.assignment)
    if cached is None:
        release.prepare_course(root, [exercise.assignment], template)
    else:
        shutil.copytree(cached, template, copy_function=shutil.copyfile)
        mask = current_umask()  # the cache's folders keep their modes through copytree
        for folder in (template, *(p for p in template.rglob("*") if p.is_dir())):
            folder.chmod(0o755 & ~mask)
    if cell_timeout is not None:
        with (template / "nbgrader_config.py").open("a", encoding="utf-8") as f:
            f.write(f"\n# course grade --cell-timeout\nc.Execute.timeout = {int(cell_timeout)}\n")
    released = template / "release" / exercise.assignment / exercise.notebook_name
    if not released.is_file():
        raise ValueError(f"nbgrader did not release {released.name} for {exercise.assignment}")
    return template
