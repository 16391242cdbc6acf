"""Run untrusted student code isolated (process isolation only; feedback pages: feedback.py).

``run_sandboxed(argv, workdir=..., timeout=...)`` runs a command with Linux isolation built
from bubblewrap (``apt-get install -y bubblewrap``):

- new pid, network, IPC, UTS and mount namespaces: the command sees only its own processes,
  has no network at all (not even the host's 127.0.0.1), and sees the file system as
  ``/usr`` (+ the ``/bin``, ``/lib`` links), a few files of ``/etc``, the Python installation
  and virtual environment and the ``course`` package, all read-only, plus ``workdir``
  (read-write), a private ``/tmp`` and ``/dev/shm`` (small tmpfs) and whatever ``readable``
  lists (read-only). The course repository's ``source/``, ``tests/``, the instructor's
  gradebook, other students' folders and ``$HOME`` do not exist inside.
- when the caller is root, the command runs as a fresh unprivileged uid (no capabilities,
  ``no_new_privs``); otherwise bubblewrap maps the caller's uid in a user namespace;
- rlimits on address space (memory), CPU seconds, processes, file size and open files, per
  process; and, where the grader may create cgroups (root, cgroup v1 memory and pids
  controllers writable), totals for the whole command: all its processes together get
  ``memory_mb`` of memory and ``max_procs`` tasks, and ``cpu_total_seconds`` of CPU time
  (cgroup v1 cpuacct or v2 cpu.stat, checked by the wait loop; ``autograder.isolation.limits``);
- a total for what the command writes in ``workdir``: ``disk_mb`` and ``max_files`` more than
  the caller put there. As root, ``workdir`` is a tmpfs of that size and number of files while
  the command runs (the caller's files are copied in; ``keep`` back out); elsewhere the wait
  loop measures the folder every second. Past the limit the command is killed;
- a wall-clock timeout and a cap on the bytes written to stdout + stderr;
- every process the command started is dead when ``run_sandboxed`` returns: killing
  bubblewrap tears the pid namespace down, and every process still owned by the sandbox uid
  is killed and waited for. Sandbox uids are never shared by two commands running at once,
  even of two graders on one machine (``uids.py``), and signals go through process handles,
  so no other process is ever killed (``waiting.py``).

After the run, ``workdir`` is given back to the caller: symbolic links and special files the
command left there are removed (so the trusted side never follows a link planted by a student)
and ownership returns to the caller (which also clears setuid bits). With ``keep``, it holds
only those paths, the command's outputs that the caller reads; nothing else is left on disk.

With ``preload`` (``course grade`` as root), bubblewrap builds the same sandbox but the command
is not a new interpreter: a fork of a process that has imported torch, nbgrader and the rest
enters it and runs the command as the sandbox uid, with the same limits (``preload.py``);
where that fork cannot serve, bubblewrap starts the command as above.

``isolate=False`` runs the command without namespaces (rlimits, timeout and output cap still
apply); the grader only does this when the instructor passes ``--no-isolation``.

The parts: ``mounts.py`` (bubblewrap's command line), ``environment.py`` (the command's
environment), ``limits.py`` (rlimits, cgroups, the tmpfs), ``uids.py``, ``waiting.py``,
``workdir.py`` (the work folder filled and given back); this module runs them in order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autograder.isolation.environment import sandbox_env
from autograder.isolation.limits import (
    cpu_cgroup,
    folder_usage,
    make_cgroups,
    mount_area,
    remove_cgroups,
    rlimits,
    unmount_area,
)
from autograder.isolation.mounts import isolated_command, visible_in_sandbox
from autograder.isolation.uids import sandbox_uid
from autograder.isolation.waiting import Totals, stop_reason, wait
from autograder.isolation.workdir import copy_back, keep_only, reclaim

__all__ = [
    "visible_in_sandbox",
    "SandboxResult",
    "SandboxUnavailableError",
    "isolation_available",
    "run_sandboxed",
]

_MB = 1024 * 1024


class SandboxUnavailableError(RuntimeError):
    """Isolation was asked for but this machine cannot provide it."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed command did.

    ``returncode`` is the exit status (negative: killed by that signal; None: never started),
    ``reason`` is "" for a normal exit, or says why it stopped ("timeout after 5 s",
    "output limit ...", "killed by signal 9 (SIGKILL) ...").
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    reason: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.reason


# --------------------------------------------------------------------------- isolation


def _probe() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"isolation needs Linux namespaces; this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return False, ("bubblewrap (bwrap) is not installed: run `apt-get install -y bubblewrap` "
                       "(Debian/Ubuntu) or `dnf install bubblewrap`")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return False, "setpriv (util-linux) is missing: install util-linux"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="course-sbx-probe-") as tmp:
        try:
            res = _run(["/bin/sh", "-c", "echo ok"], workdir=Path(tmp), timeout=60, memory_mb=512,
                       max_procs=64, max_output_bytes=4096, cpu_seconds=30,
                       cpu_total_seconds=None, file_mb=16, disk_mb=16, max_files=100, keep=None,
                       env=None, isolate=True, readable=())
        except OSError as exc:
            return False, f"bubblewrap could not start: {exc}"
    if res.returncode != 0 or res.stdout.strip() != "ok":
        detail = (res.stderr.strip() or res.reason or f"exit status {res.returncode}")[:300]
        return False, f"bubblewrap cannot create namespaces here: {detail}"
    version = subprocess.run([shutil.which("bwrap"), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    who = "root -> unprivileged uid" if os.geteuid() == 0 else "user namespace"
    return True, f"{version or 'bubblewrap'} ({who}; no network; read-only system)"


_probe_cache: tuple[bool, str] | None = None


def isolation_available() -> tuple[bool, str]:
    """(True, description) when ``run_sandboxed(isolate=True)`` works here, else (False, why)."""
    global _probe_cache
    if _probe_cache is None:
        _probe_cache = _probe()
    return _probe_cache


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Launch:
    """One command to start: what, seeing ``area`` as ``workdir``, as which uid."""

    argv: list[str]
    workdir: Path
    area: Path
    readable: tuple
    env: dict[str, str]
    isolate: bool
    uid: int | None  # None: not root (a user namespace maps the caller's uid), or no isolation


def _start(launch: _Launch, preexec, stub_fd: int | None = None) -> subprocess.Popen:
    """Start the command: bubblewrap around it (around the stub, with ``stub_fd``), or the
    command itself without isolation."""
    cmd, data_fds = list(launch.argv), []
    if launch.isolate:
        cmd, data_fds = isolated_command(launch.argv, launch.workdir, launch.area,
                                         launch.readable, launch.uid, stub_fd)
    try:
        return subprocess.Popen(
            cmd, cwd=launch.workdir, env=launch.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=data_fds + ([stub_fd] if stub_fd is not None else []), preexec_fn=preexec)
    finally:
        for fd in data_fds:  # the /etc/passwd and /etc/group data (not the stub's socket)
            os.close(fd)


def _start_and_wait(launch: _Launch, preexec, cgroups, timeout: float, max_output_bytes: int,
                    totals: Totals, preload):
    """Run the command to its end: forked from ``preload`` where it can serve, else (or where
    its fork could not start the command, nothing of which then ran) started by bubblewrap."""
    handoff = None
    if launch.isolate and preload is not None and launch.uid is not None:
        handoff = preload.handoff({"argv": launch.argv, "uid": launch.uid, "env": launch.env,
                                   "cwd": str(launch.workdir),
                                   "cgroups": [str(g) for g in cgroups]})
    while True:
        try:
            proc = _start(launch, preexec, handoff.stub_fd if handoff is not None else None)
        finally:
            if handoff is not None:
                handoff.release_stub()
        outcome = wait(proc, launch.uid, timeout, max_output_bytes, totals)
        forked, why = handoff.started() if handoff is not None else (True, "")
        if forked:
            return proc, outcome
        print(f"course grade: a preloaded start failed ({why}); starting the command "
              "afresh", file=sys.stderr)
        handoff = None


def _uid_for(isolate: bool):
    """A sandbox uid of its own for the command (as root), else None."""
    if isolate and os.geteuid() == 0:
        return sandbox_uid()
    return contextlib.nullcontext(None)


def _run(argv, *, workdir: Path, timeout: float, memory_mb: int, max_procs: int,
         max_output_bytes: int, cpu_seconds: int | None, cpu_total_seconds: float | None,
         file_mb: int, disk_mb: int, max_files: int, keep, env: dict | None,
         isolate: bool, readable, preload=None) -> SandboxResult:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cpu = int(cpu_seconds if cpu_seconds is not None else max(10, timeout + 10))
    owner = (os.getuid(), os.getgid())
    base = folder_usage(workdir, 1 << 30)  # the caller's own files: not the command's
    area = mount_area(base[0] + disk_mb * _MB, base[1] + max_files + 1) if isolate else None
    try:
        if area is not None:
            copy_back(workdir, area)
        writable = area or workdir
        cpu_group = cpu_cgroup() if isolate else None
        cgroups = (make_cgroups(memory_mb, max_procs) if isolate else []) + (
            [cpu_group] if cpu_group else [])
        totals = Totals(cpu_group, float(cpu_total_seconds or cpu), writable, area is not None,
                        disk_mb, max_files, base)
        start = time.monotonic()
        preexec = rlimits(memory_mb, cpu, max_procs if isolate else 0, file_mb, tuple(cgroups))
        with _uid_for(isolate) as uid:
            launch = _Launch([str(a) for a in argv], workdir, writable, tuple(readable),
                             sandbox_env(workdir, env), isolate, uid)
            try:
                proc, outcome = _start_and_wait(launch, preexec, cgroups, timeout,
                                                max_output_bytes, totals, preload)
            finally:
                remove_cgroups(cgroups)
            seconds = time.monotonic() - start
            reclaim(writable, *owner)  # links and special files out; ownership back to the caller
        if area is not None:  # the rest goes with the tmpfs
            copy_back(area, workdir, keep)
        elif keep is not None:
            keep_only(workdir, keep)
    finally:
        if area is not None:
            unmount_area(area)
    return SandboxResult(proc.returncode, outcome.stdout.decode("utf-8", "replace"),
                         outcome.stderr.decode("utf-8", "replace"), outcome.timed_out,
                         stop_reason(proc.returncode, outcome, isolate, timeout,
                                     max_output_bytes), seconds)


def run_sandboxed(argv, *, workdir, timeout: float, memory_mb: int = 4096, max_procs: int = 512,
                  max_output_bytes: int = 8 * _MB, env: dict | None = None, isolate: bool = True,
                  readable=(), cpu_seconds: int | None = None,
                  cpu_total_seconds: float | None = None, file_mb: int = 256,
                  disk_mb: int = 512, max_files: int = 10_000, keep=None,
                  preload=None) -> SandboxResult:
    """Run ``argv`` with ``workdir`` as its only writable folder and return a SandboxResult.

    Parameters
    ----------
    argv : the command (``argv[0]`` must be visible inside: the environment's Python is).
    workdir : folder the command may read and write (created if missing); its cwd and $HOME.
    timeout : wall-clock seconds before every process of the command is killed.
    memory_mb : address-space limit of each process (RLIMIT_AS).
    max_procs : processes + threads the sandbox uid may have (RLIMIT_NPROC).
    max_output_bytes : stdout + stderr kept; past this the command is killed.
    env : variables added to a clean environment (nothing of the caller's leaks in).
    isolate : False runs without namespaces (only with the instructor's explicit consent).
    readable : extra paths made visible read-only at the same place.
    cpu_seconds : CPU-time limit per process (default: timeout + 10).
    cpu_total_seconds : CPU time of all processes together (default: as ``cpu_seconds``), where
        the grader may create a cgroup.
    file_mb : largest file a process may write (RLIMIT_FSIZE).
    disk_mb, max_files : what all processes together may add to ``workdir``.
    keep : paths (relative to ``workdir``) of the outputs the caller reads; after the run
        ``workdir`` holds only these. None keeps all the command left.
    preload : a ``preload.Preload`` whose fork runs ``argv`` (``python ... -m MODULE``,
        ``python ... -c CODE`` or ``python ... SCRIPT``) in the sandbox instead of a new
        interpreter; used where the caller is root and the preload answers, else ignored.

    Raises SandboxUnavailableError when ``isolate`` is True and isolation does not work here.
    """
    if isolate:
        ok, why = isolation_available()
        if not ok:
            raise SandboxUnavailableError(
                f"cannot isolate student code on this machine: {why}. Install bubblewrap, or "
                "grade with --no-isolation if you trust every submission.")
    return _run(argv, workdir=Path(workdir), timeout=timeout, memory_mb=memory_mb,
                max_procs=max_procs, max_output_bytes=max_output_bytes, cpu_seconds=cpu_seconds,
                cpu_total_seconds=cpu_total_seconds, file_mb=file_mb, disk_mb=disk_mb,
                max_files=max_files, keep=keep, env=env, isolate=isolate, readable=readable,
                preload=preload)
