"""Deadlines and late penalties per assignment (autograder/deadlines.yaml), and when a student
handed in.

The configuration names, for each assignment, a deadline (ISO 8601 with a UTC offset, or null
for none) and a late policy: ``per_day`` (the fraction of the assignment's points lost per
started day late), ``max`` (the most that is lost, as a fraction) and ``grace_minutes``
(lateness forgiven). ``course grade`` writes the deadline into nbgrader's gradebook (the
assignment's ``duedate``), the submission's time (``timestamp``) and the penalty in points
(``late_submission_penalty``); an extension granted in nbgrader moves that student's deadline.
Every export shows the penalty.

A submission's time comes from the channel that delivered it, never from what the student
handed in:

- a plain zip's or loose notebook's own file time (what the copy gave it; a ``timestamp.txt``
  inside a zip and the zip's entry times are the student's, and ignored);
- a plain folder: nbgrader's ``timestamp.txt`` (what ``nbgrader collect`` copies from the
  exchange), else the notebook's file time. nbgrader's exchange writes ``timestamp.txt`` on the
  student's side (``nbgrader submit`` runs in the student's account, which can write any time
  there): :func:`time_source` says so, and ``course grade`` notes it in the gradebook's comment;
- a Moodle folder or file: the notebook's file time, as Moodle's zip gave it (a
  ``timestamp.txt`` in the folder is one the student uploaded, and ignored);
- a Canvas file: no time. Canvas's zip holds none (``lms_zip.py``: each entry's time is when
  Canvas made the zip, which ``unzip`` copies onto the file); Canvas's ``LATE`` mark is in the
  row, and the penalty is Canvas's to apply (or a person's, in formgrader);
- the LMS's zip given to ``course grade`` as it is: the entry's time as ``lms_zip.py`` read it
  (extended timestamp, else the DOS time in ``--zip-time-zone``), Canvas's entries excepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from autograder.settings import DEADLINES_IN_ROOT

__all__ = ["CONFIG", "DeadlineError", "LatePolicy", "load_policies", "submission_time",
           "time_source"]

CONFIG = DEADLINES_IN_ROOT
_TIMESTAMP = "timestamp.txt"
_MAX_TIMESTAMP_BYTES = 100


class DeadlineError(ValueError):
    """autograder/deadlines.yaml is malformed (the course's file, not a student's)."""


@dataclass(frozen=True)
class LatePolicy:
    """An assignment's deadline (UTC, None for none) and how lateness costs points."""

    deadline: datetime | None = None
    per_day: float = 0.0
    max_fraction: float = 1.0
    grace_minutes: float = 0.0

    def penalty(self, seconds_late: float, score: float, max_score: float) -> float:
        """Points lost for handing in ``seconds_late`` after the deadline (never above score).

        >>> LatePolicy(per_day=0.1, max_fraction=0.5).penalty(36 * 3600, 8.0, 10.0)
        2.0
        >>> LatePolicy(per_day=0.1, grace_minutes=15).penalty(600, 8.0, 10.0)
        0.0
        """
        late = seconds_late - 60 * self.grace_minutes
        if late <= 0:
            return 0.0
        fraction = min(self.max_fraction, self.per_day * math.ceil(late / 86400))
        return round(min(max(score, 0.0), fraction * max_score), 6)


def _fraction(value, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise DeadlineError(f"{CONFIG}: {what} must be a number from 0 to 1, got {value!r}")
    return float(value)


def _deadline(value, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        raise DeadlineError(f"{CONFIG}: {name}'s deadline {value!r} needs a date, a time and a "
                            "UTC offset, e.g. 2026-10-05T23:59:00+02:00")
    return when.astimezone(timezone.utc)


def _policy(entry: dict, default: dict, name: str) -> LatePolicy:
    late = {**default, **(entry.get("late_penalty") or {})}
    unknown = set(late) - {"per_day", "max", "grace_minutes"}
    if unknown:
        raise DeadlineError(f"{CONFIG}: {name}: unknown late_penalty keys {sorted(unknown)}; "
                            "use per_day, max, grace_minutes")
    grace = late.get("grace_minutes", 0)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
        raise DeadlineError(f"{CONFIG}: {name}: grace_minutes must be a number >= 0")
    return LatePolicy(deadline=_deadline(entry.get("deadline"), name),
                      per_day=_fraction(late.get("per_day", 0), f"{name}: per_day"),
                      max_fraction=_fraction(late.get("max", 1), f"{name}: max"),
                      grace_minutes=float(grace))


def load_policies(root: Path, path: Path | None = None) -> dict[str, LatePolicy]:
    """assignment -> its LatePolicy, from ``path`` (default: root/autograder/deadlines.yaml).

    A missing file means no deadlines. Raises DeadlineError naming what to fix.
    """
    import yaml

    path = Path(path) if path else Path(root) / CONFIG
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DeadlineError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("assignments", {}), dict):
        raise DeadlineError(f"{path}: expected a mapping with an 'assignments' mapping")
    default = data.get("default_late_penalty") or {}
    if not isinstance(default, dict):
        raise DeadlineError(f"{path}: default_late_penalty must be a mapping")
    policies = {}
    for name, entry in (data.get("assignments") or {}).items():
        if not isinstance(entry, dict):
            raise DeadlineError(f"{path}: {name} must be a mapping with a deadline")
        policies[str(name)] = _policy(entry, default, str(name))
    return policies


def _parse_timestamp(text: str) -> datetime | None:
    from nbgrader.utils import parse_utc

    try:
        when = parse_utc(text.strip())
    except (ValueError, OverflowError, TypeError):
        return None
    return when.replace(tzinfo=timezone.utc) if when is not None else None


def _file_time(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def _folder_stamp(folder: Path) -> datetime | None:
    """The time in nbgrader's timestamp.txt of a collected folder (at most 3 levels down)."""
    stamps = sorted(p for p in folder.rglob(_TIMESTAMP)
                    if len(p.relative_to(folder).parts) <= 3 and p.is_file()
                    and not p.is_symlink())
    for stamp in stamps:
        with stamp.open("rb") as f:
            when = _parse_timestamp(f.read(_MAX_TIMESTAMP_BYTES).decode("utf-8", "replace"))
        if when is not None:
            return when
    return None


CANVAS_NO_TIME = ("no time: Canvas's download holds no submission time (each file's time is "
                  "when Canvas made the zip); Canvas's own LATE mark is in the row: apply the "
                  "penalty in Canvas (its late policy) or in formgrader")


def _when(submissions: Path, student: str, roster=None) -> tuple[datetime | None, str]:
    """(when ``student`` handed in, where that time came from), as the module's text says."""
    from autograder.store.lms import entry_of
    from autograder.store.lms_zip import download_times

    entry = entry_of(submissions, student, roster)
    if entry is None or entry.path.is_symlink():
        return None, "no time: the entry is gone"
    if entry.channel == "canvas":
        return None, CANVAS_NO_TIME
    unpacked = download_times(submissions).get(entry.path.name)
    if unpacked is not None:  # the LMS's zip given as it is (lms_zip.py)
        return unpacked
    path = entry.path
    if not path.is_dir():
        kind = "zip" if path.suffix.lower() == ".zip" else "notebook"
        return _file_time(path), f"the {kind}'s file time"
    stamp = _folder_stamp(path) if entry.channel == "plain" else None  # Moodle's: the student's
    if stamp is not None:
        return stamp, ("nbgrader's timestamp.txt, which nbgrader submit writes in the student's "
                       "own account (the exchange keeps no time of its own)")
    notebooks = sorted(p for p in path.rglob("*.ipynb") if not p.is_symlink())
    return max((_file_time(p) for p in notebooks), default=None), "the notebook's file time"


def submission_time(submissions: Path, student: str, roster=None) -> datetime | None:
    """When ``student`` handed in (UTC), as the channel recorded it (see the module's text)."""
    return _when(submissions, student, roster)[0]


def time_source(submissions: Path, student: str, roster=None) -> str:
    """Where :func:`submission_time` took the time from, in words for the instructor."""
    return _when(submissions, student, roster)[1]
