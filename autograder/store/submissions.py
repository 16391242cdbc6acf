"""Find each student's notebook in a folder of submissions, as an LMS or a TA hands it over.

Accepted layouts, one entry per student in SUBMISSIONS/::

    alice/05_regularization.ipynb                       the notebook directly
    bob/05_regularization/05_regularization.ipynb       under the assignment's name
    carol.zip                                           a zip holding either layout
    dave.ipynb                                          a loose notebook

The student id is the folder, zip or notebook name; it must be letters, digits, ``.``, ``_``,
``-``, ``@`` or ``+``, starting with a letter or digit (JupyterHub's usernames such as
``carol@uni.edu`` are ids). Nothing here raises on a bad submission: it becomes a
Submission with ``reason`` set (no notebook, several notebooks, a broken zip, a notebook too
large, an invalid id, anything else that fails while reading that one entry), so one bad entry
never stops the batch. An invalid name gets an id that no valid name can have (it starts with
``_``), so it never takes over a real student's row. Folders are walked without recursion and
only 4 levels deep. Zips are read member by member with size caps, and only notebook members
are extracted, under a name this module chooses (no path from the archive is used).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autograder.store.lms import STUDENT_ID, entries

__all__ = ["Submission", "collect", "member_parts", "notebook_in_folder", "safe_id", "STUDENT_ID",
           "MAX_NOTEBOOK_BYTES"]

MAX_NOTEBOOK_BYTES = 20 * 2**20  # a chapter without outputs is ~100 kB; with outputs, a few MB
MAX_ZIP_MEMBERS = 2000
MAX_DEPTH = 4  # folders below an entry that are searched for the notebook
MAX_FOLDER_ENTRIES = 10_000  # files and folders looked at in one student's folder
_SKIP = {"__MACOSX", ".ipynb_checkpoints", "__pycache__"}  # inside an entry


@dataclass
class Submission:
    """One student's entry: the notebook to grade, or the reason there is none."""

    student_id: str
    notebook: Path | None = None
    reason: str = ""
    digest: str = ""  # sha256 of the notebook's bytes, taken when it was collected
    note: str = ""  # what the channel says of it (Canvas's late mark, the file kept of several)

    @property
    def sha256(self) -> str:
        """Hash of the notebook's bytes ("" without a notebook): what a resumed run compares."""
        return self.digest if self.notebook is not None else ""


def safe_id(name: str) -> str:
    """A printable stand-in for an invalid id, so the row still says whose entry it was.

    It starts with ``_``, which no valid id does, and ends with a hash of the whole name, so
    it can neither be a real student's id nor another invalid entry's.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40]
    tag = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"_{readable}-{tag}"


def _choose(candidates: list[str], expected: str) -> tuple[str | None, str]:
    """Pick the notebook among relative paths: the expected name, else the only one."""
    named = [c for c in candidates if c.rsplit("/", 1)[-1] == expected]
    if len(named) == 1:
        return named[0], ""
    pool = named or candidates
    if not pool:
        return None, "no notebook in the submission"
    if len(pool) == 1:
        return pool[0], ""
    return None, f"several notebooks, none chosen: {', '.join(sorted(pool)[:5])}"


def _visible(parts: tuple[str, ...]) -> bool:
    return not any(p in _SKIP or p.startswith(".") for p in parts)


def member_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """A zip member's name as path parts, or None for a member never read: a folder, a link,
    an absolute name, a drive letter, ``..``, a hidden or skipped part (names are data)."""
    name = info.filename.replace("\\", "/")
    parts = tuple(p for p in name.split("/") if p)
    if (not parts or info.is_dir() or name.startswith("/") or ":" in parts[0] or ".." in parts
            or not _visible(parts) or stat.S_ISLNK(info.external_attr >> 16)):
        return None
    return parts


def _notebooks_in(folder: Path) -> dict[str, Path]:
    """Notebooks at most MAX_DEPTH levels below ``folder``, by relative path (no recursion,
    no links followed, at most MAX_FOLDER_ENTRIES entries looked at)."""
    found, queue, seen = {}, [(folder, ())], 0
    while queue:
        current, parts = queue.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise ValueError(f"more than {MAX_FOLDER_ENTRIES} files and folders")
                rel = (*parts, entry.name)
                if not _visible(rel):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if len(rel) < MAX_DEPTH:
                        queue.append((Path(entry.path), rel))
                elif entry.name.endswith(".ipynb"):
                    found["/".join(rel)] = Path(entry.path)
    return found


def notebook_in_folder(folder: Path, expected: str) -> tuple[Path | None, str]:
    notebooks = _notebooks_in(folder)
    chosen, reason = _choose(list(notebooks), expected)
    if chosen is None:
        return None, reason
    path = notebooks[chosen]
    if path.is_symlink() or not path.is_file():
        return None, f"{chosen} is a link or not a file"
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return None, f"{chosen} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    return path, ""


def _from_zip(archive: Path, expected: str, dest: Path) -> tuple[Path | None, str]:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                return None, f"zip has more than {MAX_ZIP_MEMBERS} files"
            by_name = {}
            for info in members:
                parts = member_parts(info)
                if parts and parts[-1].endswith(".ipynb") and len(parts) <= MAX_DEPTH:
                    by_name["/".join(parts)] = info
            chosen, reason = _choose(list(by_name), expected)
            if chosen is None:
                return None, reason
            info = by_name[chosen]
            if info.file_size > MAX_NOTEBOOK_BYTES:
                return None, f"{chosen} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
            with zf.open(info) as member:  # read with a cap: the header's size may lie
                data = member.read(MAX_NOTEBOOK_BYTES + 1)
            if len(data) > MAX_NOTEBOOK_BYTES:
                return None, f"{chosen} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    except Exception as err:  # noqa: BLE001 - zlib, bz2 and lzma raise their own errors
        return None, f"unreadable zip file: {type(err).__name__}: {err}"[:300]
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / expected
    out.write_bytes(data)
    return out, ""


def _loose_notebook(path: Path) -> tuple[Path | None, str]:
    if path.is_symlink():
        return None, f"{path.name} is a link"
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return None, f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    return path, ""


def collect(submissions: Path, assignment: str, unpack_dir: Path,
            roster=None) -> list[Submission]:
    """Every student's submission of ``assignment`` in ``submissions``, sorted by student id.

    The notebook looked for is ``<assignment>.ipynb``; when a student named theirs differently
    but handed in only one, that one is taken. Zip members are extracted to
    ``unpack_dir/<student>/``. With ``roster`` (``roster.Roster``), Canvas's and Moodle's ids
    become the roster's student ids; an entry the roster cannot place gets a row saying why.
    """
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions}")
    expected = f"{assignment}.ipynb"
    found: dict[str, Submission] = {}
    for name, entry in entries(submissions, roster):
        if entry is not None and entry.problem:  # its name is "_<lms>-<lms id>" (lms.py)
            sid = safe_id(name[1:])
            found[sid] = Submission(sid, None, entry.problem)
            continue
        if not STUDENT_ID.fullmatch(name):
            sid = safe_id(name)
            found[sid] = Submission(sid, None, f"invalid student id {name[:80]!r}")
            continue
        if entry is None or name in found:
            found[name] = Submission(name, None, "several entries for this student "
                                                 "(a folder and a zip?)")
            continue
        sub = _read_entry(entry.path, name, expected, Path(unpack_dir))
        sub.note = entry.note
        found[name] = sub
    return [found[k] for k in sorted(found)]


def _read_entry(entry: Path, name: str, expected: str, unpack_dir: Path) -> Submission:
    """One student's Submission; whatever fails while reading the entry becomes its reason."""
    try:
        if entry.is_dir():
            notebook, reason = notebook_in_folder(entry, expected)
        elif entry.suffix.lower() == ".zip":
            notebook, reason = _from_zip(entry, expected, unpack_dir / name)
        else:
            notebook, reason = _loose_notebook(entry)
        digest = hashlib.sha256(notebook.read_bytes()).hexdigest() if notebook else ""
    except Exception as err:  # noqa: BLE001 - one entry never stops the batch
        return Submission(name, None, f"unreadable submission: {type(err).__name__}: "
                                      f"{str(err)[:200]}")
    return Submission(name, notebook, reason, digest)

