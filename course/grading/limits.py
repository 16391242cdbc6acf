"""The limits of one sandboxed command: per-process rlimits, and totals for all its processes.

``rlimits`` returns the ``preexec_fn`` that sets memory, file size, open files, core dumps,
processes and CPU time for the command's first process (inherited by its children), after moving
it into the cgroups of ``make_cgroups``: memory and tasks counted for all of the command's
processes together, where this process may create cgroups (v1 here; see autograder/README.md,
"Isolation", for which limits hold where). Used by ``course.grading.sandbox``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["make_cgroups", "remove_cgroups", "rlimits"]

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


def make_cgroups(memory_mb: int, max_procs: int) -> list[Path]:
    """Fresh memory and pids cgroups (v1) holding the whole command: its processes together
    may use ``memory_mb`` of memory and ``max_procs`` tasks. Empty where this process may not
    create cgroups (not root, cgroups not writable, cgroup v2 without delegation): then only the
    per-process rlimits hold."""
    global _cgroup_counter
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return []
    with _lock:
        _cgroup_counter += 1
        name = f"course-sandbox-{os.getpid()}-{_cgroup_counter}"
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
