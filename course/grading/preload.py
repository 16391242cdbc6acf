"""Start each student's sandboxed Python already warm: forked from one that has imported it all.

Every student costs ``course grade`` two sandboxed Pythons (the trusted harness, the nbgrader
step) and the step's kernel, and each of them used to import torch, NumPy, nbgrader, pandas,
matplotlib and scikit-learn afresh: about half of what a chapter-1 student costs. A ``Preload``
is a process (a "zygote", as Android and Chromium call theirs) that imports those modules once
per ``course grade`` run; each sandboxed command is then a fork of it that enters the sandbox,
instead of a new interpreter that bubblewrap starts there.

How a fork enters the sandbox (only when the grader runs as root; elsewhere the sandbox runs
the command itself, as before): bubblewrap builds the sandbox as always (namespaces, mounts,
rlimits, cgroups) but runs ``preload_stub.py`` in it, a standard-library-only script that
hands its stdin, stdout and stderr to the zygote over a socket and waits. The zygote forks a
child for the request; the child enters the stub's namespaces (``setns``, as ``nsenter``
does) and its root, and forks the process that runs the command: that one joins the stub's
cgroups, takes its rlimits, drops to the sandbox uid with no capabilities and
``no_new_privs`` (what ``setpriv`` does on the other path), and runs the module or script
with the environment and working folder the sandbox would have given it. Its exit status goes
back to the stub, which exits with it, so bubblewrap and ``run_sandboxed`` see what they
would have seen. Killing bubblewrap ends the sandbox's pid namespace and the command with it.

What the fork holds: the zygote is started by exec with a clean environment (nothing of the
grader's memory: no submission, no hidden test) and imports modules only; it reads no request
(a request's socket is handed to a fresh child before anything is read from it), so a fork
holds nothing of another student's.

``COURSE_PRELOAD=0`` turns this off (every sandboxed command is started by bubblewrap).
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["Preload", "PRELOADS", "preload_wanted", "shared", "warm", "STUB"]

STUB = Path(__file__).with_name("preload_stub.py")
READY_SECONDS = 180  # the zygote's imports (8 s idle; far more on a loaded machine)
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
        "course.grading.release", "course.grading.nbgrader_worker",
        "course.grading.forked_kernel"),
}
MIN_ROOM_MB = 512  # address space a fork must leave the command, under its limit
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 4, 38, 24
_NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")  # mnt last: the others are opened by path
_RLIMITS = ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_NPROC",
            "RLIMIT_CPU")
IN_FORK = False  # True in a command this module started (nbgrader_worker forks its kernel)


def preload_wanted() -> bool:
    """Whether ``course grade`` should preload here: as root (the fork drops to the sandbox
    uid as setpriv would), on Linux, unless ``COURSE_PRELOAD=0``."""
    return (sys.platform.startswith("linux") and os.geteuid() == 0
            and os.environ.get("COURSE_PRELOAD", "1").strip() not in ("0", "no", "off", ""))


def _zygote_env() -> dict[str, str]:
    """What a sandboxed command's environment holds that modules read as they are imported."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "COURSE_PROGRESS": "0", "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}


class Preload:
    """A zygote of one kind (a key of PRELOADS) that also imports the modules ``also`` names,
    started now; its imports run in the background. ``handoff`` returns None whenever it cannot
    serve (the caller then lets bubblewrap start the command); ``close`` ends it."""

    def __init__(self, kind: str, also: tuple[str, ...] = ()):
        self.kind, self.also = kind, tuple(also)
        self.problem = ""
        self._lock = threading.Lock()
        self._ready = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-m", "course.grading.preload", kind,
                 str(theirs.fileno()), *self.also],
                pass_fds=[theirs.fileno()], env=_zygote_env(), cwd="/",
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


# --------------------------------------------------------------------------- the zygote


def _serve(kind: str, fd: int, also: tuple[str, ...] = ()) -> None:
    control = socket.socket(fileno=fd)
    try:
        from course.lean_imports import skip_unused_format_checkers

        skip_unused_format_checkers()
        import importlib

        for name in PRELOADS[kind]:
            importlib.import_module(name)
        for name in also:  # a module, or a name in one (as the harness resolves forbidden names)
            try:
                importlib.import_module(name)
            except ImportError:
                try:
                    importlib.import_module(name.rpartition(".")[0])
                except (ImportError, ValueError):  # ValueError: no parent ("")
                    pass  # the harness finds it missing too
    except BaseException as exc:  # noqa: BLE001 - said to the grader, which falls back
        control.send(f"importing failed: {type(exc).__name__}: {exc}"[:4000].encode())
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    control.send(b"ready")
    size = socket.CMSG_SPACE(2 * struct.calcsize("i"))
    while True:
        try:
            data, ancillary, _, _ = control.recvmsg(16, size)
        except InterruptedError:
            continue
        if not data:
            return  # the grader is done
        fds = _fds(ancillary)
        if len(fds) != 2:
            for extra in fds:
                os.close(extra)
            continue
        if os.fork() == 0:
            control.close()
            code = 1
            try:
                code = _enter(*fds)
            finally:
                os._exit(code)
        for extra in fds:
            os.close(extra)


def _fds(ancillary) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)


def _stub_hello(sock: socket.socket) -> tuple[int, list[int]]:
    """The stub's pid (as this process sees it, from the kernel) and its stdio."""
    data, ancillary, _, _ = sock.recvmsg(
        16, socket.CMSG_SPACE(3 * struct.calcsize("i")) + socket.CMSG_SPACE(12))
    pid = uid = None
    fds = _fds(ancillary)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, uid, _ = struct.unpack("3i", payload[:12])
    if data != b"hello" or pid is None or uid != 0 or len(fds) != 3:
        for extra in fds:
            os.close(extra)
        raise OSError("the stub did not say hello as expected")
    return pid, fds


def _enter(request_fd: int, stub_fd: int) -> int:
    """In the fork for one request: enter the stub's sandbox, run the command, report."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    grader, stub = socket.socket(fileno=request_fd), socket.socket(fileno=stub_fd)
    try:
        request = json.loads(grader.recv(1 << 20))
        stub.settimeout(60)
        pid, stdio = _stub_hello(stub)
        stub.settimeout(None)
        limits = {name: _prlimit(pid, name) for name in _RLIMITS}
        _check_room(limits["RLIMIT_AS"][0])
        procs = [os.open(Path(g) / "cgroup.procs", os.O_WRONLY) for g in request["cgroups"]]
        spaces = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY) for ns in _NAMESPACES]
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        for fd in spaces:
            _setns(fd)
            os.close(fd)
        os.fchdir(root)
        os.chroot(".")
        os.close(root)
        os.chdir(request["cwd"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _say(grader, f"failed: {type(exc).__name__}: {exc}")
        _say(stub, "125")
        return 0
    ready, set_ready = os.pipe()
    child = os.fork()  # the first process of the sandbox's pid namespace that is ours
    if child == 0:
        grader.close()
        stub.close()
        os.close(ready)
        _run(request, stdio, procs, limits, set_ready)  # never returns
    for fd in [*stdio, *procs, set_ready]:
        os.close(fd)
    with os.fdopen(ready, "rb") as fh:
        entered = fh.read(1) == b"1"  # else it failed before the command: nothing ran
    if not entered:
        os.waitpid(child, 0)
        _say(grader, "failed: entering the sandbox failed")
        _say(stub, "125")
        return 0
    _say(grader, "started")
    grader.close()
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    _say(stub, str(code if code >= 0 else 128 - code))  # as bubblewrap reports a signal
    return 0


def _check_room(limit: int) -> None:
    """Refuse a command whose address-space limit the preloaded modules would mostly fill (a
    fresh interpreter that imports less would have that room)."""
    import resource

    with open("/proc/self/status") as fh:
        size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    if limit != resource.RLIM_INFINITY and limit - size < MIN_ROOM_MB * 1024 * 1024:
        raise OSError(f"the preloaded modules take {size >> 20} MB of the command's "
                      f"{limit >> 20} MB of address space")


def libc():
    """The C library through ctypes, keeping errno (for what ``os`` lacks: setns, prctl)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    import ctypes

    if result != 0:
        raise OSError(ctypes.get_errno(), what)


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): whether processes of this uid may read this one's memory and
    /proc files."""
    _check(libc().prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def exit_status(exc: SystemExit) -> int:
    """The status the interpreter exits with for ``exc`` (printing a message it carries)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def exit_now(code: int):
    """Flush what Python buffered of stdout and stderr, then end this process (a fork: no
    interpreter teardown, whose atexit handlers and finalizers belong to its parent)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)


def _setns(fd: int) -> None:
    _check(libc().setns(fd, 0), "setns")  # os.setns is Python 3.12's


def _say(sock: socket.socket, word: str) -> None:
    try:
        sock.send(word.encode())
    except OSError:
        pass


def _prlimit(pid: int, name: str):
    import resource

    return resource.prlimit(pid, getattr(resource, name))


def _drop_privileges(uid: int) -> None:
    import ctypes

    c = libc()
    for cap in range(64):  # as setpriv --bounding-set=-all
        if c.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # past the last capability this kernel knows
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to another uid: no capabilities left
    _check(c.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    # the uid change made this process non-dumpable; an exec would have made it dumpable
    # again (its /proc files its own, as for any process the sandbox uid starts)
    set_dumpable(True)
    with open("/proc/self/status") as fh:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in fh if ":" in line)}
    if any(int(caps.get(k, "0"), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")):
        raise OSError("capabilities left after dropping to the sandbox uid")


def _run(request: dict, stdio: list[int], procs: list[int], limits: dict, ready: int) -> None:
    """The command itself, in the sandbox (its pid namespace, as the sandbox uid); ``ready``
    hears b"1" once it is set up, just before the command runs."""
    import resource

    try:
        os.setsid()
        for fd in procs:  # "0": the writing process, in any pid namespace
            os.write(fd, b"0")
            os.close(fd)
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), value)
        _drop_privileges(int(request["uid"]))
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        os.write(ready, b"1")
        os.closerange(3, 1 << 16)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    except BaseException as exc:  # noqa: BLE001 - before the command: the grader's fault
        os.write(2, f"course grade: entering the sandbox failed: {exc}\n".encode())
        os._exit(125)
    exit_now(_command(request["argv"]))


def _command(argv: list[str]) -> int:
    """Run ``python [flags] -m MODULE args``, ``python [flags] -c CODE args`` or
    ``python [flags] SCRIPT args`` here."""
    import atexit
    import runpy
    import traceback

    import course.grading.preload as this  # (the zygote runs as __main__)

    this.IN_FORK = True
    args = list(argv[1:])
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args.pop(0)  # -I, -B, -P: this process was started so (-I -B)
    try:
        try:
            if args[0] == "-m":
                sys.argv = [args[1], *args[2:]]
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            elif args[0] == "-c":
                sys.argv = ["-c", *args[2:]]
                main = type(sys)("__main__")
                sys.modules["__main__"] = main
                exec(compile(args[1], "<string>", "exec"), main.__dict__)  # noqa: S102
            else:
                sys.argv = list(args)
                runpy.run_path(args[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exit_status(exc)
        except BaseException:  # noqa: BLE001 - as the interpreter does: traceback, status 1
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        code = 1
    return code


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:]))
