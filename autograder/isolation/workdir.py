"""The work folder of a sandboxed command: filled before, given back after.

As root the command writes in a tmpfs of its own (``limits.mount_area``): ``copy_back`` puts
the caller's files in it before the run, and the outputs the caller reads back out after it.
After the run ``reclaim`` makes what the command left safe for the trusted side to read:
links and special files removed (the grader never follows a link a student planted),
ownership back to the caller (which clears setuid bits); ``keep_only`` leaves only the
outputs the caller reads. No recursion: a student's tree may be thousands of levels deep.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from autograder.inside import linux
from autograder.inside.tree import entries, remove

__all__ = ["copy_back", "keep_only", "reclaim"]


def keep_only(folder: Path, keep) -> None:
    """Remove everything in ``folder`` but the paths ``keep`` (relative to it)."""
    wanted = {Path(k) for k in keep}
    above = {parent for k in wanted for parent in k.parents}
    stack = [Path()]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(folder / rel)
        except OSError:
            continue
        for name in names:
            path = folder / rel / name
            if rel / name in wanted:
                continue
            if rel / name in above and path.is_dir() and not path.is_symlink():
                stack.append(rel / name)
                continue
            try:
                remove(path)
            except OSError:  # what could not be removed stays (the caller owns it)
                pass


def copy_back(area: Path, workdir: Path, keep=None) -> None:
    """Replace what ``workdir`` holds with the folders and regular files of ``area`` (only the
    paths ``keep``, relative to it, when given)."""
    keep_only(workdir, ())
    for top in [""] if keep is None else keep:
        try:
            found = [(Path(top), os.lstat(area / top))] if top else []
        except OSError:  # an output the command did not write
            continue
        if not found or stat.S_ISDIR(found[0][1].st_mode):
            found += [(Path(top) / rel, st) for rel, st in entries(area / top)]
        for rel, st in found:
            try:
                if stat.S_ISDIR(st.st_mode):
                    (workdir / rel).mkdir(parents=True, exist_ok=True)
                elif stat.S_ISREG(st.st_mode):
                    (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(area / rel, workdir / rel, follow_symlinks=False)
            except OSError:  # a name too long for a path of the disk: that output is lost
                pass


def reclaim(workdir: Path, uid: int, gid: int) -> None:
    """Give workdir back: drop links/special files the command left, restore ownership, and
    the modes the grader's umask allows (``course grade``'s 077: nothing the command made is
    readable by other accounts)."""
    mask = linux.current_umask()
    for rel, st in entries(workdir):  # parents first: a folder is opened up before it is read
        path = workdir / rel
        try:
            if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode)
                                                or stat.S_ISDIR(st.st_mode)):
                os.unlink(path)
                continue
            os.lchown(path, uid, gid)
            os.chmod(path, (stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
                            | stat.S_IRUSR | stat.S_IWUSR
                            | (stat.S_IXUSR if stat.S_ISDIR(st.st_mode) else 0)) & ~mask)
        except OSError:
            pass
    try:
        os.lchown(workdir, uid, gid)
    except OSError:
        pass
