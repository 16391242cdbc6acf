"""The LMS's download zip given to ``course grade`` as it is (issue 30), unpacked the way
``lms.py`` reads a folder, with the limits of ``submissions.py``.

Only what ``lms.py`` would read is written, under names this module makes from what the
naming yields (names are data, never paths): at the top, Canvas's loose notebooks and zips
(``<name>_[late_]<user>_<attachment>_<original>[-N].ipynb|.zip``), Moodle's folders
(``<Full Name>_<participant>_assignsubmission_file[_]/``, their notebooks up to
``MAX_DEPTH`` deep) and loose files, and plain ``<student>/``, ``<student>.zip`` and
``<student>.ipynb``. A student's own zip is written as it is and read later as any zip of a
folder (its entry times and any ``timestamp.txt`` in it stay ignored). Absolute names, ``..``,
drive letters, hidden files, links and folders are skipped; a member is read with a cap
whatever its header says, and the whole download is bounded in members and bytes.

**The time.** What the zip holds are the LMS's times, not the student's, but neither LMS writes
the submission time there:

- Canvas writes each file with rubyzip's ``Zip::File#get_output_stream(name)``
  (canvas-lms lib/content_zipper.rb, ``add_attachment_to_zip``), whose ``Zip::Entry`` takes
  ``time: Zip::DOSTime.now`` and no extended-timestamp field (rubyzip lib/zip/entry.rb: the
  ``UniversalTime`` field is made only by ``time=``): the entry's time is when Canvas made the
  zip, in its server's zone. So a Canvas entry gets no time from the zip (nor from the unzipped
  file, ``deadlines.py``); Canvas's own ``LATE`` mark is what the download says of lateness.
- Moodle writes each file with ``zip_archive::add_file_from_pathname`` (lib/filestorage/
  zip_archive.php), PHP's ``ZipArchive::addFile`` of the file-pool copy of the upload, with no
  ``setMtime``: the entry holds that copy's file time (when those bytes were stored on the
  server, normally the student's upload) as a DOS time, which has no time zone.

So for every other entry the time is the entry's **extended timestamp** (extra field 0x5455,
UTC) when the zip has one, else its DOS time read in ``zone`` (``--zip-time-zone``, the LMS
server's zone, e.g. ``Europe/Berlin``). Without either, :func:`unpack_download` refuses and says
to pass the zone, or to unzip with ``TZ=<zone> unzip`` (which reads DOS times in that zone) and
grade the folder. The times and where each came from are written beside the entries
(:data:`TIMES`, a file of this module's own, in the grader's work folder), for ``deadlines.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from autograder.store.lms import CANVAS_FILE, MOODLE_FILE, MOODLE_FOLDER, STUDENT_ID
from autograder.store.submissions import (
    MAX_DEPTH,
    MAX_NOTEBOOK_BYTES,
    MAX_ZIP_MEMBERS,
    member_parts,
    safe_id,
)

__all__ = ["DownloadError", "TIMES", "download_times", "unpack_download"]

TIMES = ".course-download-times.json"  # hidden: lms.entries skips it
MAX_DOWNLOAD_MEMBERS = 50 * MAX_ZIP_MEMBERS  # a class of hundreds, a few files each
MAX_STUDENT_ZIP_BYTES = 5 * MAX_NOTEBOOK_BYTES  # a student's own zip inside the download
MAX_DOWNLOAD_BYTES = 4 * 2**30  # all that is written
_UT = 0x5455  # Info-ZIP's extended timestamp: flags, then the UTC mtime (seconds, signed)


class DownloadError(ValueError):
    """The download zip cannot be graded as it is: says what to do."""


def _clean(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)[:100] or "_"


def _utc_time(extra: bytes) -> datetime | None:
    """The extended timestamp's mtime in a member's extra field, if there is one."""
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4:at + 4 + size]
        if tag == _UT and len(body) >= 5 and body[0] & 1:
            return datetime.fromtimestamp(struct.unpack_from("<i", body, 1)[0], timezone.utc)
        at += 4 + size
    return None


def _top_file(top: str) -> tuple[str, str] | None:
    """(the name it is written under, its channel) for a file at the top of the zip."""
    ext = top.rsplit(".", 1)[-1].lower()
    if ext not in ("ipynb", "zip") or "." not in top:
        return None
    if (m := CANVAS_FILE.fullmatch(top)) is not None:
        late, copy = "late_" if m["late"] else "", f"-{m['copy']}" if m["copy"] else ""
        return (f"{m['name'][:60]}_{late}{m['user']}_{m['submission']}_"
                f"{_clean(m['original'])}{copy}.{ext}", "canvas")
    if (m := MOODLE_FILE.fullmatch(top)) is not None:
        return f"moodle_{m['participant']}_assignsubmission_file_{_clean(m['original'])}.{ext}", \
            "moodle"
    stem = top[:-len(ext) - 1]
    return (top if STUDENT_ID.fullmatch(stem) else f"{safe_id(stem)}.{ext}"), "plain"


def _target(info: zipfile.ZipInfo) -> tuple[tuple[str, ...], str] | None:
    """Where a member is written (parts under the destination) and its channel, or None."""
    parts = member_parts(info)
    if parts is None:
        return None
    if len(parts) == 1:
        found = _top_file(parts[0])
        return None if found is None else ((found[0],), found[1])
    if not parts[-1].lower().endswith(".ipynb") or len(parts) > MAX_DEPTH + 1:
        return None  # in a folder, only notebooks are read (as in lms.py's folders)
    moodle = MOODLE_FOLDER.fullmatch(parts[0])
    if moodle is not None:
        top, channel = f"moodle_{moodle['participant']}_assignsubmission_file_", "moodle"
    else:
        top = parts[0] if STUDENT_ID.fullmatch(parts[0]) else safe_id(parts[0])
        channel = "plain"
    return (top, *(_clean(p) for p in parts[1:])), channel


def _free(path: Path) -> Path:
    """``path``, or the first ``<stem>~N<suffix>`` beside it not taken (several notebooks in
    one folder stay several, as they were)."""
    n = 0
    while path.exists():
        n += 1
        path = path.with_name(f"{path.stem.split('~')[0]}~{n}{path.suffix}")
    return path


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    with zf.open(info) as member:  # read with a cap: the header's size may lie
        data = member.read(cap + 1)
    if len(data) > cap:
        raise DownloadError(f"{info.filename[:120]!r} in the download is larger than "
                            f"{cap // 2**20} MB: not a submission this course grades")
    return data


def _when(info: zipfile.ZipInfo, zone) -> tuple[datetime | None, str]:
    utc = _utc_time(info.extra)
    if utc is not None:
        return utc, "the download zip's entry time (its extended timestamp, in UTC)"
    if zone is None:
        return None, ""
    return (datetime(*info.date_time, tzinfo=zone).astimezone(timezone.utc),
            f"the download zip's entry time (a DOS time, read in {zone.key} as told by "
            "--zip-time-zone)")


def unpack_download(archive: Path, dest: Path, *, zone: str | None = None) -> Path:
    """The LMS's download ``archive`` unpacked into ``dest`` (emptied first) as ``lms.py``
    reads a folder; returns ``dest``. Raises DownloadError saying what to do."""
    tz = _zone(zone)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    times: dict[str, dict] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_DOWNLOAD_MEMBERS:
                raise DownloadError(f"{archive} has more than {MAX_DOWNLOAD_MEMBERS} files: "
                                    "not a download of one assignment")
            written = 0
            for info in members:
                found = _target(info)
                if found is None:
                    continue
                parts, channel = found
                top = dest / parts[0]
                if len(parts) == 1 and top.exists():
                    raise DownloadError(f"{archive} holds {info.filename[:120]!r} twice: not a "
                                        "download as the LMS makes it; unzip it and look")
                cap = MAX_STUDENT_ZIP_BYTES if parts[-1].endswith(".zip") else MAX_NOTEBOOK_BYTES
                data = _read(zf, info, cap)
                written += len(data)
                if written > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"{archive} holds more than {MAX_DOWNLOAD_BYTES >> 30} "
                                        "GB of notebooks and zips: split the download")
                path = _free(dest.joinpath(*parts))
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                except OSError as err:  # a folder and a file of one name, say
                    raise DownloadError(f"{archive}: cannot unpack {info.filename[:120]!r} "
                                        f"({err.strerror}): unzip it and look") from err
                if channel != "canvas":  # Canvas's entry times are when it made the zip
                    _note_time(times, parts[0], path, *_when(info, tz),
                               entry=info.filename.replace("\\", "/").split("/")[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise DownloadError(f"{archive} is not a zip this can read ({err}): download it "
                            "again from the LMS") from err
    _check_times(archive, times)
    (dest / TIMES).write_text(json.dumps(times, indent=1), encoding="utf-8")
    return dest


def _zone(zone: str | None):
    if zone is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise DownloadError(f"--zip-time-zone {zone!r} is not a time zone this machine knows: "
                            "give an IANA name such as Europe/Berlin or UTC") from err


def _note_time(times: dict, top: str, path: Path, when: datetime | None, source: str, *,
               entry: str) -> None:
    """The entry's time: the latest of its notebooks' (as ``deadlines.py`` takes a folder's)."""
    if when is not None:
        os.utime(path, (when.timestamp(), when.timestamp()))
    known = times.get(top)
    if known is None or (when is not None and (known["time"] is None
                                               or when.isoformat() > known["time"])):
        times[top] = {"time": None if when is None else when.isoformat(), "source": source,
                      "entry": entry[:120]}


def _check_times(archive: Path, times: dict) -> None:
    untimed = sorted(t["entry"] for t in times.values() if t["time"] is None)
    if untimed:
        raise DownloadError(
            f"{archive}: the entry times of {len(untimed)} submission(s) (e.g. "
            f"{untimed[0][:60]}) are DOS times, without a time zone (as Moodle writes them): "
            "pass --zip-time-zone with the LMS server's zone (e.g. Europe/Berlin), or unzip it "
            "with `TZ=Europe/Berlin unzip -d DIR download.zip` and grade DIR")


def download_times(submissions: Path) -> dict[str, tuple[datetime | None, str]]:
    """The times :func:`unpack_download` wrote beside the entries: top-level name -> (time,
    where it came from); empty for any other folder."""
    path = Path(submissions) / TIMES
    if not path.is_file() or path.is_symlink() or path.stat().st_size > 10 * 2**20:
        return {}
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    last = _READ[0]
    if last is not None and last[0] == key:  # asked once per student: read once per state
        return last[1]
    times = json.loads(path.read_text(encoding="utf-8"))
    read = {top: (None if t["time"] is None else datetime.fromisoformat(t["time"]), t["source"])
            for top, t in times.items()}
    if time.time() - stat.st_mtime > 2.0:  # settled (see lms.entry_of)
        _READ[0] = (key, read)
    return read


_READ: list = [None]  # ((file, inode, mtime, size), its times): the last one read
