"""Release the chapters to students: source/ -> release/ with nbgrader ``generate_assignment``.

nbgrader runs in a scratch copy of the course directory (the configuration of
``autograder/nbgrader_config.py`` plus the chapter folders of source/), so a release never
touches the instructor's gradebook; the released folders are then copied into release/.
The output depends only on source/: releasing twice gives the same bytes, and
:func:`check_release_up_to_date` compares a fresh release with the committed one.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path

from autograder.inside.nbgrader_api import nbgrader_api
from autograder.settings import CONFIG_IN_ROOT

__all__ = ["ReleaseError", "CONFIG", "assignments", "prepare_course", "release",
           "check_release_up_to_date"]

CONFIG = CONFIG_IN_ROOT
IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")


class ReleaseError(RuntimeError):
    """nbgrader could not generate an assignment (its log says why)."""


def assignments(root: Path) -> list[str]:
    """The chapter folders of source/ that hold a notebook, in chapter order."""
    return sorted(p.name for p in (Path(root) / "source").iterdir()
                  if p.is_dir() and any(p.glob("*.ipynb")))


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
        shutil.copytree(src, course_dir / "source" / name, ignore=IGNORE, dirs_exist_ok=True)
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
            shutil.copytree(course_dir / "release" / name, target, ignore=IGNORE)
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
