"""The zygote: a Python that imports the grading modules once, then forks each sandboxed command.

Started by ``isolation/preload.py`` as ``python -I -B -m autograder.inside.zygote FD ROOM_MB N
MODULE... ALSO...`` (N modules it must import, then names it imports where they exist), with
the sandbox's environment; it serves fork requests on the socket ``FD``. Each fork enters the
sandbox that bubblewrap built around the stub (``stub.py``), takes its rlimits and cgroups,
drops to the sandbox uid and runs the command. Its forks run student code, so it lives in
``inside/``: standard library only, and it imports only what it is told (never the trusted
side of the grader).

Before each fork it checks that it is still single-threaded (a thread at fork time can hold a
lock the child then waits on forever); where it is not, it answers that request "failed" and
the grader lets bubblewrap start the command instead.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path

from autograder.inside.linux import (
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    check,
    libc,
    set_dumpable,
    setns,
)

__all__ = ["IN_FORK", "exit_now", "exit_status", "threads_running"]

_NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")  # mnt last: the others are opened by path
_RLIMITS = ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_NPROC",
            "RLIMIT_CPU")
IN_FORK = False  # True in a command this module started (nbgrader_worker forks its kernel)
_room_mb = 512  # address space a fork must leave the command, under its limit (from argv)


def threads_running() -> int:
    """The threads of this process, counted by the kernel (a C library's threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _serve(fd: int, modules: tuple[str, ...], also: tuple[str, ...]) -> None:
    control = socket.socket(fileno=fd)
    try:
        from course.lean_imports import skip_unused_format_checkers

        skip_unused_format_checkers()
        import importlib

        for name in modules:
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
        threads = threads_running()
        if threads != 1:  # a fork now could deadlock on a lock another thread holds:
            _refuse(*fds, f"the zygote is not single-threaded ({threads} threads)")
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


def _refuse(request_fd: int, stub_fd: int, why: str) -> None:
    """Answer a request "failed" without forking: the grader lets bubblewrap start it."""
    grader, stub = socket.socket(fileno=request_fd), socket.socket(fileno=stub_fd)
    for sock in (grader, stub):  # read what is queued: closing a socket that holds unread
        sock.setblocking(False)  # data resets the other end, which would lose the answer
        try:
            sock.recv(1 << 20)
        except OSError:
            pass
    _say(grader, f"failed: {why}")
    _say(stub, "125")
    grader.close()
    stub.close()


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
            setns(fd)
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
    if limit != resource.RLIM_INFINITY and limit - size < _room_mb * 1024 * 1024:
        raise OSError(f"the preloaded modules take {size >> 20} MB of the command's "
                      f"{limit >> 20} MB of address space")


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
        if c.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # past the last capability this kernel knows
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to another uid: no capabilities left
    check(c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
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

    import autograder.inside.zygote as this  # (the zygote runs as __main__)

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
    _room_mb, _count = int(sys.argv[2]), int(sys.argv[3])
    _serve(int(sys.argv[1]), tuple(sys.argv[4:4 + _count]), tuple(sys.argv[4 + _count:]))
