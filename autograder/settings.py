"""Every limit and default of the grader, once. The modules that apply them import them here.

Wall-clock seconds unless a name says CPU; memory in MiB. The chapters' own per-cell limit,
``Execute.timeout``, is nbgrader's setting and lives in ``nbgrader_config.py`` beside this file
(read by :func:`flat_cell_seconds`, never repeated here). LIMITS.md explains each figure and
where it was measured.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

__all__ = ["NBGRADER_CONFIG", "cache_folder", "course_id", "flat_cell_seconds"]

PACKAGE = Path(__file__).resolve().parent
NBGRADER_CONFIG = PACKAGE / "nbgrader_config.py"  # shipped with the package (package data)
CONFIG_IN_ROOT = Path("autograder") / "nbgrader_config.py"  # the same file, in a checkout
DEADLINES_IN_ROOT = Path("autograder") / "deadlines.yaml"
SAMPLES_IN_ROOT = Path("autograder") / "samples"

# --- one student's steps
STEP_SECONDS = 600.0  # each sandboxed step of one student (course grade --timeout)
PROBE_SECONDS = 30.0  # a trusted probe, before budgets are measured
EXEC_SECONDS = 60.0  # the harness running the solution cell's definitions
FEEDBACK_SECONDS = 120.0  # sanitising one feedback page in the sandbox
CONNECT_SECONDS = 10.0  # reaching a Dask scheduler (course grade --scheduler)
GRADEBOOK_WAIT_SECONDS = 600.0  # for another course grade to finish recording (--db-wait)

# --- budgets from the reference solution (steps/budget.py)
MULTIPLE = 10  # a student's code may be this many times slower than the reference
CELL_FLOOR = 30.0  # no notebook cell gets less (wall clock)
PROBE_FLOOR = 10.0  # no trusted probe gets less (wall clock)
CELL_CPU_FLOOR = 5.0  # CPU seconds: no notebook cell gets less
PROBE_CPU_FLOOR = 2.0  # CPU seconds: no trusted probe gets less

# --- the sandbox (isolation/)
HARNESS_MEMORY_MB = 4096  # the trusted harness: address space (torch alone maps ~3 GiB)
NBGRADER_MEMORY_MB = 12288  # nbgrader, its kernel and the chapter's imports
FEEDBACK_MEMORY_MB = 2048
MAX_PROCS = 512
MAX_OUTPUT_BYTES = 8 * 2**20  # stdout + stderr of one sandboxed command
HARNESS_OUTPUT_BYTES = 64 * 2**10
FEEDBACK_OUTPUT_BYTES = 64 * 2**10
MAX_FEEDBACK_BYTES = 20 * 2**20  # a chapter's feedback page with its plots is a few MB
UID_FIRST = 400_000  # sandbox uids: a block of UID_BLOCK per grader process, from here
UID_BLOCK = 64
UID_BLOCKS = 8192  # 400,000 + 8,192 x 64 < 2**20: clear of the users a system makes
UID_LOCKS = "/run/course-grade-uids"  # a lock file per block: the grader holding it (uids.py)
ZYGOTE_READY_SECONDS = 180  # a zygote's imports (8 s idle; far more on a loaded machine)
ZYGOTE_ROOM_MB = 512  # address space a fork must leave its command, under its limit

# --- submissions
MAX_NOTEBOOK_BYTES = 64 * 2**20
MAX_REASON_CHARS = 500

@lru_cache(maxsize=8)
def _config(path: Path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def course_id(config: Path = NBGRADER_CONFIG) -> str:
    """The nbgrader course id that ``config`` sets (``CourseDirectory.course_id``), read the way
    nbgrader reads its configuration; nbgrader's own default where it sets none."""
    from nbgrader.coursedir import CourseDirectory

    return CourseDirectory(config=_config(Path(config).resolve())).course_id


def flat_cell_seconds(config: Path = NBGRADER_CONFIG) -> float:
    """A notebook cell's flat limit: ``c.Execute.timeout`` of the nbgrader configuration
    ``config`` (its last one: ``course grade --cell-timeout`` appends one; the course's own
    by default), else nbgrader's default."""
    from nbgrader.preprocessors import Execute
    from traitlets.config.loader import PyFileConfigLoader

    config = Path(config).resolve()
    loaded = PyFileConfigLoader(config.name, path=str(config.parent)).load_config()
    if "timeout" in loaded.Execute:
        return float(loaded.Execute.timeout)
    return float(Execute.class_traits()["timeout"].default_value)


def cache_folder(kind: str) -> Path:
    """Where this machine keeps what ``course grade`` measured or prepared once
    (``$XDG_CACHE_HOME``, else ~/.cache, then dl-tuning-course/KIND)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dl-tuning-course" / kind
