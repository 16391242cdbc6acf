"""The raw Linux calls the grader needs and ``os`` lacks (Python 3.10): prctl, setns, mount.

One module for them, on both sides of the sandbox: the zygote (``zygote.py``) and the nbgrader
worker call it inside, ``isolation/`` outside. Standard library only (ctypes).
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["check", "libc", "mount_tmpfs", "pidfd_open", "pidfd_signal", "set_dumpable",
           "setns", "umount_detach"]

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
