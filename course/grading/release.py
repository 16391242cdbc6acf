"""Release the chapters to students: source/ -> release/ with nbgrader ``generate_assignment``.

nbgrader runs in a scratch copy of the course directory (the configuration of
``autograder/nbgrader_config.py`` plus the chapter folders of source/), so a release never
touches the instructor's gradebook; the released folders are then copied into release/.
The output depends only on source/: releasing twice gives the same bytes, and
:func:`check_release_up_to_date` compares a fresh release with the committed one.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ReleaseError", "CONFIG", "alembic_head_in_process", "assignments", "nbgrader_api",
           "prepare_course", "release", "check_release_up_to_date"]

CONFIG = Path("autograder/nbgrader_config.py")
_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")


class ReleaseError(RuntimeError):
    """nbgrader could not generate an assignment (its log says why)."""


def assignments(root: Path) -> list[str]:
    """The chapter folders of source/ that hold a notebook, in chapter order."""
    return sorted(p.name for p in (Path(root) / "source").iterdir()
                  if p.is_dir() and any(p.glob("*.ipynb")))


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
        with _venv_on_path():
            return original()

    get_alembic_version.in_process = True
    nbgrader.api.get_alembic_version = get_alembic_version


@contextmanager
def _venv_on_path():
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def prepare_course(root: Path, names: list[str], course_dir: Path) -> Path:
    """Make ``course_dir`` a course directory holding ``names`` from source/, and generate them.

    Afterwards ``course_dir`` holds release/<name>/ and a gradebook.db that knows every graded
    cell of those assignments (the template ``course grade`` gives each student).
    """
    root, course_dir = Path(root), Path(course_dir)
    course_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / CONFIG, course_dir / "nbgrader_config.py")
    api = nbgrader_api(course_dir)
    for name in names:
        src = root / "source" / name
        if not src.is_dir():
            raise ReleaseError(f"no assignment {name!r}: {src} is not a folder")
        shutil.copytree(src, course_dir / "source" / name, ignore=_IGNORE, dirs_exist_ok=True)
        result = api.generate_assignment(name, force=True, create=True)
        if not result["success"]:
            detail = "\n".join(filter(None, (result.get("log"), result.get("error")))).strip()
            raise ReleaseError(f"nbgrader generate_assignment {name} failed:\n{detail}")
    return course_dir


def _generate(root: Path, names: list[str], dest: Path) -> list[Path]:
    """Generate ``names`` and write each released folder to dest/<name>/, replacing it."""
    with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
        course_dir = prepare_course(root, names, Path(tmp) / "course")
        written = []
        for name in names:
            target = Path(dest) / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(course_dir / "release" / name, target, ignore=_IGNORE)
            written.append(target)
    return written


def release(root: Path, names: list[str] | None = None) -> list[Path]:
    """Regenerate release/<name>/ from source/<name>/ (every chapter when ``names`` is None).

    Returns the folders written. Raises ReleaseError when nbgrader rejects a notebook.
    """
    root = Path(root)
    return _generate(root, names or assignments(root), root / "release")


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not {".ipynb_checkpoints", "__pycache__"} & set(p.parts)}


def check_release_up_to_date(root: Path) -> list[str]:
    """What differs between release/ and a fresh release of source/ (empty: up to date)."""
    root = Path(root)
    names = assignments(root)
    problems = []
    with tempfile.TemporaryDirectory(prefix="course-release-check-") as tmp:
        _generate(root, names, Path(tmp))
        for name in names:
            fresh, committed = Path(tmp) / name, root / "release" / name
            if not committed.is_dir():
                problems.append(f"release/{name}/ is missing")
                continue
            new, old = _tree(fresh), _tree(committed)
            problems += [f"release/{name}/{f} is missing" for f in sorted(new - old)]
            problems += [f"release/{name}/{f} is not in source/" for f in sorted(old - new)]
            problems += [f"release/{name}/{f} differs from a fresh release"
                         for f in sorted(new & old)
                         if not filecmp.cmp(fresh / f, committed / f, shallow=False)]
    extra = sorted({p.name for p in (root / "release").iterdir() if p.is_dir()} - set(names)) \
        if (root / "release").is_dir() else []
    problems += [f"release/{name}/ has no source/{name}/" for name in extra]
    return problems
