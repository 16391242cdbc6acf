"""The raw Linux calls the grader needs and ``os`` lacks (Python 3.10): prctl, setns, mount,
process handles; and the one scan of /proc.

One module for them, on both sides of the sandbox: the zygote (``zygote.py``) and the nbgrader
worker call it inside, ``isolation/`` outside. Standard library only (ctypes).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import NamedTuple

__all__ = ["Process", "check", "current_umask", "kill_uid", "libc", "mount_tmpfs", "pidfd_open",
           "pidfd_signal", "processes", "set_dumpable", "setns", "umount_detach"]

PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 4, 38, 24
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


def libc():
    """The C library through ctypes, keeping errno."""
    return ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    """Raise OSError with errno when a libc call returned non-zero."""
    if result != 0:
        raise OSError(ctypes.get_errno(), what)


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): whether processes of this uid may read this one's memory and
    /proc files."""
    check(libc().prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def setns(fd: int) -> None:
    """Join the namespace ``fd`` refers to (``os.setns`` is Python 3.12's)."""
    check(libc().setns(fd, 0), "setns")


def mount_tmpfs(source: bytes, target: str, options: bytes) -> bool:
    """mount(2) a tmpfs, nosuid and nodev; False where the kernel refused."""
    return libc().mount(source, target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) == 0


def umount_detach(target: str) -> None:
    """umount2(MNT_DETACH): the mount goes at once, its memory when nothing uses it."""
    libc().umount2(target.encode(), MNT_DETACH)


def pidfd_open(pid: int) -> int | None:
    """A process handle for ``pid`` (Linux 5.3+), or None where the process is gone or the
    kernel has none: a handle keeps naming that process even once its pid is reused."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def pidfd_signal(pidfd: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` through a process handle; False when the process has already exited."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False


class Process(NamedTuple):
    """One process as /proc shows it: its parent, its real uid, its state (a letter: "R"
    running, "S" sleeping, "Z" a zombie, which runs nothing and waits to be reaped, ...) and
    (when asked for) the clock ticks of CPU time it and the children it waited for used."""

    pid: int
    ppid: int
    uid: int
    state: str
    ticks: int | None = None


def _status(pid: int) -> tuple[int, int, str]:
    """(parent pid, real uid, state) from /proc/PID/status (readable even for a process that
    made itself non-dumpable, unlike the owner of /proc/PID)."""
    found = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("State", "PPid", "Uid"):
                found[key] = value.split()[0]
            if key == "Uid":
                break  # after State and PPid
    if len(found) != 3:
        raise ValueError(f"/proc/{pid}/status without State, PPid or Uid")
    return int(found["PPid"]), int(found["Uid"]), found["State"]


def _ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of /proc/PID/stat (after the command name, which may
    hold anything, parentheses and spaces included)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return sum(int(f) for f in fields[11:15])


def processes(*, cpu: bool = False):
    """Every process this pid namespace shows in /proc, as ``Process`` (with ``ticks`` when
    ``cpu``); a process that ends while it is read is left out."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            yield Process(pid, *_status(pid), _ticks(pid) if cpu else None)
        except (OSError, ValueError, IndexError):
            continue


def _kill_if_uid(pid: int, uid: int) -> None:
    """SIGKILL ``pid`` if it runs as ``uid``. With a handle the signal reaches the process that
    was checked, or none (it exited, its pid maybe taken by another); without one (no pidfd
    here) the pid is signalled right after the check."""
    handle = pidfd_open(pid)
    try:
        _, owner, state = _status(pid)
        if owner != uid or state in ("Z", "X"):
            return
        if handle is not None:
            pidfd_signal(handle, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass  # it ended
    finally:
        if handle is not None:
            os.close(handle)


def kill_uid(uid: int, deadline: float = 5.0) -> bool:
    """Kill every process running as ``uid`` and wait, up to ``deadline`` seconds, until none is
    left (but zombies, which run nothing); whether none is."""
    end = time.monotonic() + deadline
    while True:
        found = [p.pid for p in processes() if p.uid == uid and p.state not in ("Z", "X")]
        if not found:
            return True
        if time.monotonic() > end:
            return False
        for pid in found:
            _kill_if_uid(pid, uid)
        time.sleep(0.02)


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, for every thread
    at once); 0o022 where /proc does not say."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022
