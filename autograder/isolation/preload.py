"""Start each student's sandboxed Python already warm: forked from one that has imported it all.

Every student costs ``course grade`` two sandboxed Pythons (the trusted harness, the nbgrader
step) and the step's kernel, and each of them used to import torch, NumPy, nbgrader, pandas,
matplotlib and scikit-learn afresh: about half of what a chapter-1 student costs. A ``Preload``
is a process (a "zygote", as Android and Chromium call theirs) that imports those modules once
per ``course grade`` run; each sandboxed command is then a fork of it that enters the sandbox,
instead of a new interpreter that bubblewrap starts there.

How a fork enters the sandbox (only when the grader runs as root; elsewhere the sandbox runs
the command itself, as before): bubblewrap builds the sandbox as always (namespaces, mounts,
rlimits, cgroups) but runs ``inside/stub.py`` in it, a standard-library-only script that
hands its stdin, stdout and stderr to the zygote over a socket and waits. The zygote forks a
child for the request; the child enters the stub's namespaces (``setns``, as ``nsenter``
does) and its root, and forks the process that runs the command: that one joins the stub's
cgroups, takes its rlimits, drops to the sandbox uid with no capabilities and
``no_new_privs`` (what ``setpriv`` does on the other path), and runs the module or script
with the environment and working folder the sandbox would have given it. Its exit status goes
back to the stub, which exits with it, so bubblewrap and ``run_sandboxed`` see what they
would have seen. Killing bubblewrap ends the sandbox's pid namespace and the command with it.

What the fork holds: the zygote is started by exec with the sandbox's environment
(``environment.sandbox_env``: what modules read as they are imported is what a command that
bubblewrap starts would read) and nothing of the grader's memory (no submission, no hidden
test), and imports modules only; it reads no request
(a request's socket is handed to a fresh child before anything is read from it), so a fork
holds nothing of another student's.

``COURSE_PRELOAD=0`` turns this off (every sandboxed command is started by bubblewrap).
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from autograder.isolation.environment import sandbox_env
from autograder.settings import ZYGOTE_READY_SECONDS as READY_SECONDS
from autograder.settings import ZYGOTE_ROOM_MB as MIN_ROOM_MB

__all__ = ["Preload", "PRELOADS", "preload_wanted", "shared", "warm", "STUB"]

STUB = Path(__file__).resolve().parents[1] / "inside" / "stub.py"
# What each kind of zygote imports: the harness needs NumPy and torch only (its memory limit
# is 4 GB of address space, and every module counts); the nbgrader step and its kernel need
# nbgrader and Jupyter, and what the chapters' notebooks import.
PRELOADS = {
    "harness": ("numpy", "torch"),
    "notebook": (
        "numpy", "torch", "torch.nn", "torch.nn.functional", "torch.utils.data",
        # torch.optim imports torch._dynamo as it builds its first optimizer (2-3 s); every
        # chapter's notebook trains something
        "torch.testing", "torch._dynamo", "pandas", "matplotlib", "matplotlib.pyplot", "seaborn",
        "sklearn.datasets", "sklearn.metrics", "sklearn.model_selection",
        "sklearn.preprocessing", "IPython", "IPython.display", "ipykernel.kernelapp",
        "ipykernel.ipkernel", "matplotlib_inline.backend_inline", "nbformat", "nbclient",
        "nbconvert", "jupyter_client", "nbgrader.apps", "nbgrader.api", "nbgrader.converters",
        "course.device", "course.data", "course.metrics", "course.plots", "course.training",
        "course.claims", "course.practice", "course.callbacks", "course.optim",
        "autograder.store.release", "autograder.inside.nbgrader_worker",
        "autograder.inside.forked_kernel"),
}


def preload_wanted() -> bool:
    """Whether ``course grade`` should preload here: as root (the fork drops to the sandbox
    uid as setpriv would), on Linux, unless ``COURSE_PRELOAD=0``."""
    return (sys.platform.startswith("linux") and os.geteuid() == 0
            and os.environ.get("COURSE_PRELOAD", "1").strip() not in ("0", "no", "off", ""))


class Preload:
    """A zygote of one kind (a key of PRELOADS) that also imports the modules ``also`` names,
    started now; its imports run in the background. ``handoff`` returns None whenever it cannot
    serve (the caller then lets bubblewrap start the command); ``close`` ends it."""

    def __init__(self, kind: str, also: tuple[str, ...] = ()):
        self.kind, self.also = kind, tuple(also)
        self.problem = ""
        self._lock = threading.Lock()
        self._ready = False
        modules = PRELOADS.get(kind, (kind,))  # an unknown kind: a module that fails to import
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-m", "autograder.inside.zygote",
                 str(theirs.fileno()), str(MIN_ROOM_MB), str(len(modules)), *modules,
                 *self.also],
                pass_fds=[theirs.fileno()], env=sandbox_env("/tmp"), cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._proc, self.problem = None, f"could not start: {exc}"
        finally:
            theirs.close()

    def _wait_ready(self) -> bool:
        if self._ready or self.problem:
            return self._ready
        self._control.settimeout(READY_SECONDS)
        try:
            word = self._control.recv(4096).decode("utf-8", "replace")
        except OSError as exc:
            word = f"no answer ({exc})"
        self._control.settimeout(None)
        if word == "ready":
            self._ready = True
        else:
            self.problem = word or "it exited while importing"
        return self._ready

    def handoff(self, request: dict) -> Handoff | None:
        """Ask for a fork that will run ``request`` (argv, env, cwd, uid) once the stub in
        the sandbox says hello on the returned handoff's ``stub_fd``."""
        with self._lock:
            if not self._wait_ready():
                return None
            ours, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            stub, fork_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            fork_side.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the stub's pid
            try:
                ours.send(json.dumps(request).encode())
                self._control.sendmsg([b"fork"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [child.fileno(),
                                                                     fork_side.fileno()]))])
            except OSError as exc:
                self.problem = f"it stopped answering ({exc})"
                for s in (ours, stub):
                    s.close()
                return None
            finally:
                child.close()
                fork_side.close()
            return Handoff(ours, stub)

    def close(self) -> None:
        self._control.close()  # the zygote exits when its socket closes
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class Handoff:
    """One request in flight: ``stub_fd`` goes to the sandbox's stub; ``started`` says, after
    the sandbox ended, whether the fork ran the command (else: why not)."""

    def __init__(self, ours: socket.socket, stub: socket.socket):
        self._ours, self._stub = ours, stub
        self.stub_fd = stub.fileno()

    def release_stub(self) -> None:
        """The sandbox has its copy (or never will): close ours."""
        self._stub.close()

    def started(self, wait: float = 5.0) -> tuple[bool, str]:
        self._ours.settimeout(wait)
        try:
            word = self._ours.recv(4096).decode("utf-8", "replace")
        except OSError:
            word = ""
        finally:
            self._ours.close()
        if word == "started":
            return True, ""
        return False, word.removeprefix("failed: ") or "the sandbox never reached the fork"


_shared: dict[tuple[str, tuple[str, ...]], Preload] = {}
_shared_lock = threading.Lock()


def shared(kind: str, also: tuple[str, ...] = ()) -> Preload | None:
    """This process's zygote of ``kind`` that has also imported ``also`` (started on first use,
    ended at exit), or None where ``preload_wanted`` says no."""
    if not preload_wanted():
        return None
    key = (kind, tuple(also))
    with _shared_lock:
        if key not in _shared:
            if not _shared:
                import atexit

                atexit.register(_close_shared)
            _shared[key] = Preload(kind, also)
        return _shared[key]


def warm(harness_also: tuple[str, ...] = ()) -> None:
    """Start every kind of zygote now, so their imports overlap the grader's own set-up; the
    harness's with the modules its exercise names (``Exercise.harness_preload``)."""
    for kind in PRELOADS:
        shared(kind, harness_also if kind == "harness" else ())


def _close_shared() -> None:
    with _shared_lock:
        for zygote in _shared.values():
            zygote.close()
        _shared.clear()
