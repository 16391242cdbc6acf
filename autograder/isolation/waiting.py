"""Waiting for a sandboxed command: its time, its output and its totals, then all of it killed.

``wait`` reads the command's stdout and stderr (up to a cap), stops it at its wall-clock
timeout or at a total of ``Totals`` (CPU time, disk), and returns once every process it started
is dead. Signals reach only the processes meant: the command's first process is signalled
while its pid is still its own (it is reaped last), and the processes of the sandbox uid
through process handles (``autograder.inside.linux.kill_uid``). Used by ``sandbox.py``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autograder.inside.linux import kill_uid, pidfd_open
from autograder.isolation.limits import cpu_seconds_used, folder_usage

__all__ = ["Outcome", "Totals", "stop_reason", "wait"]

_MB = 1024 * 1024


@dataclass
class Totals:
    """The totals for all the command's processes that the wait loop checks."""

    cpu_group: Path | None  # the cgroup counting their CPU time (None: not measurable here)
    cpu_seconds: float
    area: Path  # the folder they write in
    tmpfs: bool  # area is a tmpfs of the size and files below (else: measure it)
    disk_mb: int
    max_files: int
    base: tuple[int, int]  # bytes and files the caller put in area before the run
    next_walk: float = 0.0

    def over(self, final: bool = False) -> str:
        """Which total the command has gone past ("" if none); ``final``: it has ended."""
        killed = "" if final else " (killed)"
        if self.cpu_group is not None:
            used = cpu_seconds_used(self.cpu_group)
            if used is not None and used > self.cpu_seconds:
                return (f"CPU time limit: more than {self.cpu_seconds:g} s for all processes "
                        f"together{killed}")
        full = False
        if self.tmpfs:
            st = os.statvfs(self.area)
            full = st.f_bavail == 0 or st.f_favail == 0  # a write failed: no space, no inode
        elif final or time.monotonic() >= self.next_walk:  # a walk costs: once a second
            self.next_walk = time.monotonic() + 1.0
            size, files = folder_usage(self.area, self.base[1] + self.max_files)
            full = size > self.base[0] + self.disk_mb * _MB or files > self.base[1] + self.max_files
        if full:
            return (f"disk limit: more than {self.disk_mb} MB or {self.max_files} files written "
                    f"in the work folder by all processes together{killed}")
        return ""


@dataclass(frozen=True)
class Outcome:
    """What the wait saw: the output kept, and which limit (if any) ended the command."""

    stdout: bytes
    stderr: bytes
    timed_out: bool
    flooded: bool
    over: str  # the total gone past, or ""


class _Command:
    """The command's first process (bubblewrap, or the command itself) and its sandbox uid.

    Its process group is signalled only until it is reaped (its pid, and so the group's id,
    cannot be another process's before); it is reaped once, at the end."""

    def __init__(self, proc: subprocess.Popen, uid: int | None):
        self.proc, self.uid = proc, uid
        self.handle = pidfd_open(proc.pid)  # readable once it exited
        self.lock = threading.Lock()
        self.reaped = False

    def exited(self, timeout: float) -> bool:
        """Whether it has exited, waiting up to ``timeout`` s; it is not reaped."""
        if self.handle is not None:
            return bool(select.select([self.handle], [], [], timeout)[0])
        end = time.monotonic() + timeout
        while True:  # no process handles here: poll, leaving it to be reaped later
            if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)

    def kill(self, deadline: float = 0.5) -> None:
        """SIGKILL its process group and every process of the sandbox uid."""
        with self.lock:
            if not self.reaped:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.uid is not None:
            kill_uid(self.uid, deadline=deadline)

    def end(self) -> None:
        """Kill whatever is left of it, reap it, and wait until the sandbox uid has nothing
        left running."""
        self.kill(deadline=5.0)
        with self.lock:
            self.proc.wait()
            self.reaped = True
        if self.handle is not None:
            os.close(self.handle)


def _reader(stream, sink: bytearray, state: dict, cap: int, on_flood) -> None:
    try:
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                break
            with state["lock"]:
                room = cap - state["total"]
                state["total"] += len(chunk)
                if room > 0:
                    sink.extend(chunk[:room])
                flooded = state["total"] > cap
            if flooded:
                on_flood()
                # keep draining (discarding) so the writer never blocks on a full pipe
    except (OSError, ValueError):
        pass


def wait(proc: subprocess.Popen, uid: int | None, timeout: float, max_output_bytes: int,
         totals: Totals) -> Outcome:
    """Wait for ``proc`` within ``timeout``, the output cap and the totals; kill all it left
    behind (its process group, and with ``uid`` every process of that uid)."""
    command = _Command(proc, uid)
    stdout, stderr = bytearray(), bytearray()
    state = {"lock": threading.Lock(), "total": 0, "flooded": False}

    def on_flood() -> None:
        if not state["flooded"]:
            state["flooded"] = True
            command.kill()

    threads = [threading.Thread(target=_reader, args=(s, b, state, max_output_bytes, on_flood),
                                daemon=True)
               for s, b in ((proc.stdout, stdout), (proc.stderr, stderr))]
    for t in threads:
        t.start()
    timed_out, over = False, ""
    deadline = time.monotonic() + timeout
    while not command.exited(max(0.0, min(0.1, deadline - time.monotonic()))):
        timed_out = time.monotonic() >= deadline
        over = "" if timed_out else totals.over()
        if timed_out or over:
            command.kill()
            break
    command.end()
    if not (timed_out or over or state["flooded"]):  # it may have ended on hitting one
        over = totals.over(final=True)
    for t in threads:
        t.join(timeout=5)
    for s in (proc.stdout, proc.stderr):
        try:
            s.close()
        except OSError:
            pass
    return Outcome(bytes(stdout), bytes(stderr), timed_out, state["flooded"], over)


_SIGNAL_HINTS = {"SIGKILL": " (killed: memory exhausted?)", "SIGXCPU": " (CPU time limit)",
                 "SIGXFSZ": " (file size limit)", "SIGSEGV": " (crashed)"}


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def stop_reason(rc: int | None, outcome: Outcome, isolate: bool, timeout: float,
                max_output_bytes: int) -> str:
    """Why the command stopped ("" for a normal exit)."""
    if outcome.over:  # a total of the Totals (CPU time, disk)
        return outcome.over
    if outcome.timed_out:
        return f"timeout: still running after {timeout:g} s (killed)"
    if outcome.flooded:
        return f"output limit: more than {max_output_bytes} bytes on stdout/stderr (killed)"
    signum = None
    if rc is not None and rc < 0:
        signum = -rc
    elif isolate and rc is not None and 128 + 1 <= rc <= 128 + 64:
        signum = rc - 128  # bubblewrap reports a child killed by signal N as exit status 128 + N
    if signum is None:
        return ""
    name = _signal_name(signum)
    return f"killed by {name}{_SIGNAL_HINTS.get(name, '')}"
