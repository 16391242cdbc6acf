"""The limits of one sandboxed command: per-process rlimits, and totals for all its processes.

``rlimits`` returns the ``preexec_fn`` that sets memory, file size, open files, core dumps,
processes and CPU time for the command's first process (inherited by its children), after moving
it into the cgroups of ``make_cgroups`` and ``cpu_cgroup``: memory, tasks and CPU time counted
for all of the command's processes together, where this process may create cgroups.
``mount_area`` makes the command's writable folder a tmpfs of a fixed size and number of files.
Where this process may not (not root, cgroups not writable), only the per-process limits hold,
plus what the sandbox's wait loop measures (see autograder/README.md, "Isolation").
Used by ``autograder.isolation.sandbox``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from autograder.inside.linux import mount_tmpfs, umount_detach

__all__ = ["cpu_cgroup", "cpu_seconds_used", "folder_usage", "make_cgroups", "mount_area",
           "remove_cgroups", "rlimits", "unmount_area"]

_MB = 1024 * 1024
_lock = threading.Lock()

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_cgroup_counter = 0


def _own_cgroup(controller: str) -> Path | None:
    """This process's cgroup (v1) of ``controller``, as a folder, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = _CGROUP_ROOT / controller / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


def _v2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (all of /sys/fs/cgroup, or its "unified"
    part next to the v1 controllers), or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return Path(fields[0].split()[4])
    return None


def _own_v2_cgroup() -> Path | None:
    """This process's cgroup v2, as a folder, or None."""
    root = _v2_root()
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if root is not None and line.startswith("0::"):
            folder = root / line[3:].lstrip("/")
            return folder if folder.is_dir() else None
    return None


def _new_name() -> str:
    global _cgroup_counter
    with _lock:
        _cgroup_counter += 1
        return f"course-sandbox-{os.getpid()}-{_cgroup_counter}"


# cgroup v1's cpuacct controller first; cgroup v2 counts CPU time in every cgroup (cpu.stat)
CPU_ACCOUNTING = ("v1", "v2")


def cpu_cgroup() -> Path | None:
    """A fresh cgroup that counts the CPU time of all the command's processes
    (``cpu_seconds_used``), or None where this process may not create one."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return None
    for flavour in CPU_ACCOUNTING:
        parent = _own_cgroup("cpuacct") if flavour == "v1" else _own_v2_cgroup()
        if parent is None:
            continue
        try:
            folder = parent / _new_name()
            folder.mkdir()
        except OSError:
            continue
        if cpu_seconds_used(folder) is not None:
            return folder
        remove_cgroups([folder])
    return None


def cpu_seconds_used(folder: Path) -> float | None:
    """CPU seconds (user + system) used so far by all processes of cgroup ``folder``."""
    try:
        if (folder / "cpuacct.usage").exists():  # v1: nanoseconds
            return int((folder / "cpuacct.usage").read_text()) / 1e9
        for line in (folder / "cpu.stat").read_text().splitlines():  # v2: microseconds
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        pass
    return None


def make_cgroups(memory_mb: int, max_procs: int) -> list[Path]:
    """Fresh memory and pids cgroups (v1) holding the whole command: its processes together
    may use ``memory_mb`` of memory and ``max_procs`` tasks. Empty where this process may not
    create cgroups (not root, cgroups not writable, cgroup v2 without delegation): then only the
    per-process rlimits hold."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return []
    name = _new_name()
    made = []
    settings = {"memory": {"memory.limit_in_bytes": memory_mb * _MB,
                           "memory.swappiness": 0},
                "pids": {"pids.max": max_procs}}
    for controller, values in settings.items():
        parent = _own_cgroup(controller)
        if parent is None:
            continue
        try:
            folder = parent / name
            folder.mkdir()
            made.append(folder)
            for key, value in values.items():
                if (folder / key).exists():
                    (folder / key).write_text(str(value))
        except OSError:
            continue
    return made


def remove_cgroups(folders: list[Path]) -> None:
    for folder in folders:
        for _ in range(50):  # the last killed processes may take a moment to leave
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def rlimits(memory_mb: int, cpu_seconds: int, max_procs: int, file_mb: int,
             cgroups: tuple[Path, ...] = ()):
    import resource

    def apply() -> None:
        for folder in cgroups:  # before anything else: every descendant is counted there
            with open(folder / "cgroup.procs", "w") as fh:
                fh.write(str(os.getpid()))
        limits = [
            (resource.RLIMIT_AS, memory_mb * _MB),
            (resource.RLIMIT_FSIZE, file_mb * _MB),
            (resource.RLIMIT_NOFILE, 1024),
            (resource.RLIMIT_CORE, 0),
        ]
        if max_procs:
            limits.append((resource.RLIMIT_NPROC, max_procs))
        # SIGXCPU at the soft CPU limit (a readable reason), SIGKILL 5 s of CPU later
        limits.append((resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5)))
        for which, value in limits:
            soft, hard = value if isinstance(value, tuple) else (value, value)
            _, current = resource.getrlimit(which)
            if current != resource.RLIM_INFINITY:  # never ask for more than we may have
                soft, hard = min(soft, current), min(hard, current)
            resource.setrlimit(which, (soft, hard))

    return apply


# --------------------------------------------------------------------------- disk


AREA_ROOT = Path(tempfile.gettempdir()) / "course-sandbox-areas"


def folder_usage(folder: Path, max_entries: int) -> tuple[int, int]:
    """(bytes on disk, files and folders) under ``folder``. Counting stops past ``max_entries``
    entries, so a folder of millions of files costs no more than one over the limit."""
    size, count = 0, 0
    stack = [str(folder)]
    while stack and count <= max_entries:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    count += 1
                    if count > max_entries:
                        break
                    st = entry.stat(follow_symlinks=False)
                    size += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:  # removed while we looked
            continue
    return size, count


def _remove_stale_areas() -> None:
    """Unmount the areas of grader processes that died before they could (killed -9)."""
    for folder in AREA_ROOT.iterdir():
        pid = folder.name.split("-")[2] if folder.name.count("-") == 3 else ""
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            umount_detach(str(folder))
            try:
                folder.rmdir()
            except OSError:
                pass


def mount_area(size_bytes: int, files: int) -> Path | None:
    """A fresh tmpfs that holds at most ``size_bytes`` and ``files`` files and folders, for the
    command to write in; None where this process may not mount one (not root, not Linux)."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return None
    try:
        AREA_ROOT.mkdir(mode=0o700, exist_ok=True)
        st = AREA_ROOT.lstat()
        if not AREA_ROOT.is_dir() or AREA_ROOT.is_symlink() or st.st_uid != 0:
            return None  # someone else's: never mount through it
        _remove_stale_areas()
        folder = AREA_ROOT / _new_name()
        folder.mkdir(mode=0o700)
    except OSError:
        return None
    options = f"size={size_bytes},nr_inodes={files},mode=0700".encode()
    if not mount_tmpfs(b"course-sandbox", str(folder), options):
        folder.rmdir()
        return None
    return folder


def unmount_area(folder: Path) -> None:
    """Unmount ``folder`` (its memory is freed at once) and remove the mount point."""
    umount_detach(str(folder))
    try:
        folder.rmdir()
    except OSError:
        pass
