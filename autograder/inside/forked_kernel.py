"""nbgrader's kernel as a fork of the nbgrader step, which has torch & co. imported already.

In a ``Preload`` fork (preload.py) the nbgrader step starts with every module the chapters'
notebooks import in memory; a kernel that jupyter_client starts as a new interpreter would
import them all again (2-4 s of CPU per student). ``prefork`` forks the kernel-to-be as the
step's very first act, before nbgrader has read anything (so it holds no hidden test and no
gradebook: only imported modules); it waits on a pipe. ``ForkedKernelManager`` (nbclient's
``kernel_manager_class`` in the step) hands it the command, environment and folder that
jupyter_client would have started ``python -m ipykernel_launcher`` with, and the fork becomes
that kernel: same connection file, same environment, same working folder and ``sys.path``,
a session of its own (interrupts go to its process group, as for a launched kernel). A second
kernel (a restart) is launched the usual way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

__all__ = ["prefork", "ForkedKernelManager"]

_waiting: tuple[int, int] | None = None  # (pid, write end of its pipe)


def prefork() -> None:
    """Fork the kernel-to-be now; it ends when this process closes the pipe unused."""
    global _waiting
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.setsid()
        _become_kernel(read)  # never returns
    os.close(read)
    _waiting = (pid, write)


def _become_kernel(read: int) -> None:
    from autograder.inside.zygote import exit_now, exit_status

    code = 0
    try:
        with os.fdopen(read, "rb") as fh:
            data = fh.read()
        if not data:
            os._exit(0)  # the step never started a kernel
        launch = json.loads(data)
        os.environ.clear()
        os.environ.update(launch["env"])
        os.chdir(launch["cwd"])
        import random

        import numpy as np

        random.seed()  # a fresh interpreter's seeds, not the zygote's
        np.random.seed()
        cmd = launch["cmd"]
        if cmd[1:3] != ["-m", "ipykernel_launcher"]:
            raise ValueError(f"not an IPython kernel command: {cmd[:3]}")
        sys.path.insert(0, os.getcwd())  # what `python -m` puts first
        sys.argv = [cmd[2], *cmd[3:]]
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
    except SystemExit as exc:
        code = exit_status(exc)
    except BaseException:  # noqa: BLE001 - as an interpreter would: traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    exit_now(code)


class _Forked:
    """What jupyter_client's LocalProvisioner needs of a Popen, for a child forked earlier."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            if timeout is not None:
                import time

                end = time.monotonic() + timeout
                while self.poll() is None:
                    if time.monotonic() > end:
                        raise subprocess.TimeoutExpired(str(self.pid), timeout)
                    time.sleep(0.01)
                return self.returncode
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self.returncode = -signal.SIGKILL
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class _ForkedProvisioner(LocalProvisioner):
    async def launch_kernel(self, cmd: list[str], **kwargs):
        global _waiting
        if _waiting is None:
            return await super().launch_kernel(cmd, **kwargs)
        pid, write = _waiting
        _waiting = None
        env = kwargs.get("env") or dict(os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        with os.fdopen(write, "wb") as fh:
            fh.write(json.dumps({"cmd": list(cmd), "env": dict(env), "cwd": cwd}).encode())
        self.process = _Forked(pid)
        self.pid = self.pgid = pid  # it called setsid: its own process group
        self.cwd = cwd
        return self.connection_info


class ForkedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose first kernel is the fork ``prefork`` left waiting."""

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None and _waiting is not None:
            import uuid

            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = _ForkedProvisioner(kernel_id=self.kernel_id,
                                                  kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)
