"""Who handed in what, in a folder of submissions as an LMS downloads it or a TA makes it.

Three namings are recognised, entry by entry in the folder (one folder may mix them):

- **Canvas** ("Download Submissions"): loose files
  ``<name>_[late_]<user id>_<submission id>_<original name>[-N].<ext>``, e.g.
  ``smithbob_late_340934_208490284_01_metrics-1.ipynb``. The student is Canvas's user id;
  ``late`` is Canvas's own record that the submission came after the due date, and ``-N`` marks
  a resubmitted file of the same name (the highest N is the latest). Several files of one user
  become one entry: the latest notebook (or zip) is graded, and the row says which.
  (The naming as Canvas writes it, shown e.g. in
  https://github.com/mikewesthad/canvas-unzipper's README.)
  Canvas makes the name in ``ContentZipper#get_filename`` and ``#add_upload_submission``
  (canvas-lms lib/content_zipper.rb): the sortable name lowercased with everything but word
  characters removed (so letters beyond ASCII stay), ``LATE`` when ``submission.late?``, the
  user id, the attachment id and the file's display name.
- **Moodle** ("Download all submissions"): folders
  ``<Full Name>_<participant id>_assignsubmission_file[_]/``, or with "Download submissions in
  folders" off, loose files ``<Full Name>_<participant id>_assignsubmission_file_<original>``;
  the student is the participant id (Moodle's grading worksheet names it "Participant <id>").
  The names are made by ``assign::download_submissions`` in Moodle's mod/assign/locallib.php
  (``mod/assign/classes/downloader.php`` since 4.2): full name, participant id, then the
  submission plugin's ``assignsubmission_file``.
- **Plain** (a TA's folder, ``nbgrader collect``'s ``submitted/``): the entry's name is the
  student id: ``<student>/``, ``<student>.zip``, ``<student>.ipynb``.

Names are data from the student and the LMS: they are matched against strict patterns and
only the ids they yield are used; nothing in a name is a path.

With a roster (``roster.Roster``, from the LMS's own export), each Canvas or Moodle entry's LMS
id becomes the roster's student id; an id the roster lacks, or maps to an invalid student id,
gives the entry a ``problem`` (its row says it), never another student's id.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "entries", "entry_of", "CANVAS_FILE", "MOODLE_FILE", "MOODLE_FOLDER",
           "STUDENT_ID"]

# nbgrader's and JupyterHub's usernames, such as carol@uni.edu or dan+tutor@uni.edu; nothing a
# path, a CSV cell or a page could read as syntax (no space, slash, quote or leading sign)
STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
CANVAS_FILE = re.compile(r"(?P<name>\w{1,200}?)_(?P<late>late_)?(?P<user>\d{1,20})_"
                         r"(?P<submission>\d{1,20})_(?P<original>.+?)(?:-(?P<copy>\d{1,4}))?"
                         r"\.(?P<ext>ipynb|zip)", re.I)
MOODLE_FOLDER = re.compile(r"(?P<name>.+)_(?P<participant>\d{1,20})_assignsubmission_file_?")
MOODLE_FILE = re.compile(r"(?P<name>.+)_(?P<participant>\d{1,20})_assignsubmission_file_"
                         r"(?P<original>.+)\.(?P<ext>ipynb|zip)", re.I)
_SKIP = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}


@dataclass
class Entry:
    """One student's entry: the id its name gives, the file or folder, what to say of it."""

    name: str  # the student id the naming gives (validated by the caller)
    path: Path
    note: str = ""
    channel: str = "plain"  # "canvas", "moodle" or "plain"
    lms_id: str = ""  # Canvas's user id or Moodle's participant id, before any roster
    problem: str = ""  # why the entry has no student id (the roster lacks its LMS id)


def _canvas_entries(files: list[tuple[Path, re.Match]]) -> dict[str, Entry]:
    """One entry per Canvas user: the latest resubmission of their notebook (or zip)."""
    by_user: dict[str, list[tuple[Path, re.Match]]] = {}
    for path, match in files:
        by_user.setdefault(match["user"], []).append((path, match))
    chosen = {}
    for user, candidates in by_user.items():
        notebooks = [c for c in candidates if c[1]["ext"].lower() == "ipynb"] or candidates

        def order(candidate):
            _, m = candidate
            return int(m["copy"] or 0), int(m["submission"]), m.string

        path, match = max(notebooks, key=order)
        notes = []
        if match["late"]:
            notes.append("Canvas marks it late")
        if len(notebooks) > 1:
            notes.append(f"the latest of {len(notebooks)} files graded: {match['original']}"
                         f"{'-' + match['copy'] if match['copy'] else ''}")
        chosen[user] = Entry(user, path, "; ".join(notes), "canvas", lms_id=user)
    return chosen


def _mapped(entry: Entry, roster) -> Entry:
    """The entry under the roster's student id, or with the problem that keeps it from one."""
    if roster is None or entry.channel == "plain":
        return entry
    student, problem = roster.student_of(entry.channel, entry.lms_id)
    if student is None:
        entry.name, entry.problem = f"_{entry.channel}-{entry.lms_id}", problem
    else:
        entry.name = student
        entry.note = "; ".join(n for n in (entry.note, roster.says(entry.channel, entry.lms_id,
                                                                   student)) if n)
    return entry


def entries(submissions: Path, roster=None) -> list[tuple[str, Entry | None]]:
    """Every entry of the folder as (its raw name, the Entry), sorted by the id it gives; an
    Entry of None is a duplicate of an earlier name (the caller says so in that row). With
    ``roster`` (a ``roster.Roster``), Canvas's and Moodle's ids become the roster's."""
    canvas, found = [], []
    for path in sorted(Path(submissions).iterdir()):
        if path.name.startswith(".") or path.name in _SKIP:
            continue
        if path.is_dir() and not path.is_symlink():
            moodle = MOODLE_FOLDER.fullmatch(path.name)
            if moodle:
                found.append(Entry(moodle["participant"], path, "", "moodle",
                                   lms_id=moodle["participant"]))
            else:
                found.append(Entry(path.name, path))
        elif path.is_file() and path.suffix.lower() in (".zip", ".ipynb"):
            match, moodle = CANVAS_FILE.fullmatch(path.name), MOODLE_FILE.fullmatch(path.name)
            if match:
                canvas.append((path, match))
            elif moodle:
                found.append(Entry(moodle["participant"], path, "", "moodle",
                                   lms_id=moodle["participant"]))
            else:
                found.append(Entry(path.stem, path))
    found += _canvas_entries(canvas).values()
    found = [_mapped(entry, roster) for entry in found]
    out, seen = [], set()
    for entry in sorted(found, key=lambda e: (e.name, str(e.path))):
        out.append((entry.name, None if entry.name in seen else entry))
        seen.add(entry.name)
    return out


def entry_of(submissions: Path, student: str, roster=None) -> Entry | None:
    """``student``'s entry in the folder (None if none, or several).

    Recording a class asks this of every student: the folder is listed once per state of it
    (its inode and modification time, which any added, removed or renamed entry changes), not
    once per student. As git does for its index, a folder changed in the last seconds is listed
    again each time (a change within the file system's clock tick keeps the same time)."""
    return _index(Path(submissions), roster).get(student)


_LAST: list = [None]  # (folder, inode, mtime), roster, {student: Entry or None}: the last listing
_SETTLED_SECONDS = 2.0


def _index(folder: Path, roster) -> dict[str, Entry | None]:
    stat = folder.stat()
    key = (str(folder.resolve()), stat.st_ino, stat.st_mtime_ns)
    last = _LAST[0]
    if last is not None and last[0] == key and last[1] is roster:
        return last[2]
    by_name: dict[str, list] = {}
    for name, entry in entries(folder, roster):
        by_name.setdefault(name, []).append(entry)
    index = {name: (found[0] if len(found) == 1 else None) for name, found in by_name.items()}
    if time.time() - stat.st_mtime > _SETTLED_SECONDS:
        _LAST[0] = (key, roster, index)
    return index
