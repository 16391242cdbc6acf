"""The sandbox uids: never the same for two commands running at once, on the whole machine.

The sandbox kills every process of a command's uid when the command ends (``kill_uid``), so
two commands that shared a uid could kill each other's processes, even two of different
graders. Each grader process claims a block of ``UID_BLOCK`` uids from ``UID_FIRST`` on by
holding an exclusive ``flock`` on the block's lock file, in a root-owned folder only root may
enter, for as long as it lives: the kernel releases the lock of a process that died, however
it died, and a block whose lock is held is never claimed by another. Within its blocks a
process hands out each uid to one running command at a time (``sandbox_uid``); a uid comes
back when its command ended and nothing of it is left running. Where every uid of its blocks
is in use, the process claims one more block.

Only a grader running as root uses these (elsewhere bubblewrap maps the caller's own uid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
from pathlib import Path

from autograder.inside.linux import kill_uid, processes
from autograder.settings import UID_BLOCK, UID_BLOCKS, UID_FIRST, UID_LOCKS

__all__ = ["sandbox_uid"]

_lock = threading.Lock()
_owner = 0  # the process the blocks below belong to (a fork claims its own)
_blocks: list[tuple[int, int]] = []  # (first uid, the fd holding the block's lock)
_in_use: set[int] = set()
_turn = 0  # where the search for a free uid starts: released uids are reused last


def _lock_folder() -> Path:
    """The folder of the lock files, made if missing; refused unless only root may use it."""
    folder = Path(UID_LOCKS)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
        raise OSError(f"{folder} is not a folder that only root may use: no sandbox uid "
                      "can be claimed safely")
    return folder


def _claim_block() -> None:
    """Take the lock of the first free block, starting from one this process's pid picks (so
    graders started together rarely try the same ones first)."""
    folder = _lock_folder()
    start = os.getpid() % UID_BLOCKS
    for step in range(UID_BLOCKS):
        block = (start + step) % UID_BLOCKS
        fd = os.open(folder / f"block-{block}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        first = UID_FIRST + block * UID_BLOCK
        # the grader that held it died: nothing of its commands may survive
        for uid in {p.uid for p in processes() if first <= p.uid < first + UID_BLOCK}:
            kill_uid(uid)
        _blocks.append((first, fd))
        return
    raise OSError(f"all {UID_BLOCKS} blocks of sandbox uids are held by other graders")


def _take() -> int:
    global _owner, _turn
    if _owner != os.getpid():  # a fork shares its parent's locks: it claims blocks of its own
        _owner = os.getpid()
        for _, fd in _blocks:
            os.close(fd)  # the parent's lock holds while the parent keeps its own fd
        _blocks.clear()
        _in_use.clear()
    uids = [first + i for first, _ in _blocks for i in range(UID_BLOCK)]
    for step in range(len(uids)):
        uid = uids[(_turn + step) % len(uids)]
        if uid not in _in_use:
            _turn = (_turn + step + 1) % len(uids)
            _in_use.add(uid)
            return uid
    _claim_block()
    _in_use.add(_blocks[-1][0])
    return _blocks[-1][0]


@contextlib.contextmanager
def sandbox_uid():
    """A uid that no other command running on this machine has, for one command; the caller
    kills its processes before the block ends (the sandbox's wait does)."""
    with _lock:
        uid = _take()
    try:
        yield uid
    finally:
        with _lock:
            _in_use.discard(uid)
