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
  is killed and waited for.

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
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autograder.isolation.limits import (
    cpu_cgroup,
    cpu_seconds_used,
    folder_usage,
    make_cgroups,
    mount_area,
    remove_cgroups,
    rlimits,
    unmount_area,
)
from autograder.isolation.preload import STUB

__all__ = [
    "visible_in_sandbox",
    "SandboxResult",
    "SandboxUnavailableError",
    "isolation_available",
    "run_sandboxed",
]

_MB = 1024 * 1024
# Files of /etc a Python process and a Jupyter kernel may look at; nothing secret.
_ETC_FILES = ("localtime", "ld.so.cache", "nsswitch.conf", "hosts", "host.conf", "mime.types")
_UID_BASE = 400_000  # sandbox uids: _UID_BASE + a number unique to the call
_uid_lock = threading.Lock()
_uid_counter = 0


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


def _next_uid() -> int:
    global _uid_counter
    with _uid_lock:
        _uid_counter += 1
        return _UID_BASE + (os.getpid() % 32768) * 64 + _uid_counter % 64


def _python_roots() -> list[Path]:
    """The directories a Python process of this environment needs (read-only)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sys.base_exec_prefix)}
    exe = Path(sys.executable)
    roots.add(exe.parent)
    roots.add(exe.resolve().parent.parent)
    import course

    roots.add(Path(course.__file__).resolve().parent)  # the course package only, not the repo
    return sorted({r.resolve() for r in roots if r.exists()}, key=lambda p: len(p.parts))


def _grader_package() -> Path:
    """The autograder package's folder (in the checkout, or in site-packages)."""
    return Path(__file__).resolve().parents[1]


def _grader_mounts(ensure_parents, mounted: list[Path]) -> list[str]:
    """Of the autograder package, only what runs inside: ``__init__.py`` (import-free) and
    ``inside/``. Where the package sits in a mounted folder (site-packages), a tmpfs hides the
    rest of it first; the trusted checks and steps are never in the sandbox."""
    package = _grader_package()
    args = []
    if _under(package, mounted):
        args += ["--perms", "0755", "--tmpfs", str(package)]
    else:
        ensure_parents(package)
        args += ["--perms", "0755", "--dir", str(package)]
    for part in (package / "__init__.py", package / "inside"):
        args += ["--ro-bind", str(part), str(part)]
    if _under(package, mounted):
        args += ["--remount-ro", str(package)]
    return args


def _under(path: Path, roots) -> bool:
    return any(path == r or r in path.parents for r in roots)


def visible_in_sandbox(path) -> bool:
    """Whether ``path`` is inside what every sandbox mounts (system, Python, ``course``, the
    grader's ``inside/``)."""
    system = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")]
    path = Path(path).resolve()
    package = _grader_package()
    if _under(path, [package]):
        return _under(path, [package / "__init__.py", package / "inside"])
    return _under(path, [*system, *_python_roots()])


def _bwrap_args(workdir: Path, area: Path, readable, setuid: int | None,
                passwd_fd: int | None, group_fd: int | None) -> list[str]:
    bwrap = shutil.which("bwrap")
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if setuid is None:
        args += ["--unshare-user"]
    else:  # root: keep only what setpriv needs to drop to the sandbox uid, then drop all
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    mounted: list[Path] = []
    made: set[Path] = {Path("/")}

    def ensure_parents(target: Path) -> None:
        for parent in reversed(target.parents):
            if parent in made or _under(parent, mounted):
                continue
            args.extend(["--perms", "0755", "--dir", str(parent)])
            made.add(parent)

    args += ["--ro-bind", "/usr", "/usr"]
    mounted.append(Path("/usr"))
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
            mounted.append(p)
    args += ["--perms", "0755", "--dir", "/etc"]
    made.add(Path("/etc"))
    for name in _ETC_FILES:
        p = Path("/etc") / name
        if p.exists():
            args += ["--ro-bind", str(p.resolve()), str(p)]
    if passwd_fd is not None:
        args += ["--ro-bind-data", str(passwd_fd), "/etc/passwd"]
    if group_fd is not None:
        args += ["--ro-bind-data", str(group_fd), "/etc/group"]
    args += ["--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", "--size", str(256 * _MB), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(64 * _MB), "--tmpfs", "/dev/shm"]
    made.update({Path("/dev"), Path("/proc"), Path("/tmp")})
    for root in [*_python_roots(), *(Path(r).resolve() for r in readable)]:
        if not root.exists() or _under(root, mounted):
            continue
        ensure_parents(root)
        args += ["--ro-bind", str(root), str(root)]
        mounted.append(root)
    args += _grader_mounts(ensure_parents, mounted)
    ensure_parents(workdir)
    args += ["--bind", str(area), str(workdir), "--chdir", str(workdir)]
    return args


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


def _clean_env(workdir: Path, env: dict | None) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    base = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
        "JUPYTER_PLATFORM_DIRS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "COURSE_PROGRESS": "0",
    }
    if env:
        base.update({str(k): str(v) for k, v in env.items()})
    return base


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


def _uid_pids(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return pids


def _kill_uid(uid: int, deadline: float = 5.0) -> None:
    """Kill every process still running as the sandbox uid and wait until none is left."""
    end = time.monotonic() + deadline
    while True:
        pids = _uid_pids(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > end:
            return
        time.sleep(0.02)


def _entries(folder: Path):
    """(relative path, lstat) of everything under ``folder``, parents first (no recursion: a
    student's tree may be thousands of levels deep)."""
    stack = [Path()]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(folder / rel) as found:
                names = [e.name for e in found]
        except OSError:
            continue
        for name in names:
            try:
                st = os.lstat(folder / rel / name)
            except OSError:
                continue
            yield rel / name, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel / name)


def _keep_only(folder: Path, keep) -> None:
    """Remove everything in ``folder`` but the paths ``keep`` (relative to it)."""
    wanted = {Path(k) for k in keep}
    above = {parent for k in wanted for parent in k.parents}
    stack = [Path()]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(folder / rel)
        except OSError:
            continue
        for name in names:
            path = folder / rel / name
            if rel / name in wanted:
                continue
            if rel / name in above and path.is_dir() and not path.is_symlink():
                stack.append(rel / name)
            elif path.is_dir() and not path.is_symlink():
                _remove_tree(path)
            else:
                path.unlink(missing_ok=True)


def _remove_tree(folder: Path) -> None:
    """``shutil.rmtree`` without recursion: deepest folders first."""
    folders = [folder]
    for rel, st in _entries(folder):
        if stat.S_ISDIR(st.st_mode):
            folders.append(folder / rel)
        else:
            (folder / rel).unlink(missing_ok=True)
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            pass


def _copy_back(area: Path, workdir: Path, keep=None) -> None:
    """Replace what ``workdir`` holds with the folders and regular files of ``area`` (only the
    paths ``keep``, relative to it, when given)."""
    _keep_only(workdir, ())
    for top in [""] if keep is None else keep:
        try:
            found = [(Path(top), os.lstat(area / top))] if top else []
        except OSError:  # an output the command did not write
            continue
        if not found or stat.S_ISDIR(found[0][1].st_mode):
            found += [(Path(top) / rel, st) for rel, st in _entries(area / top)]
        for rel, st in found:
            try:
                if stat.S_ISDIR(st.st_mode):
                    (workdir / rel).mkdir(parents=True, exist_ok=True)
                elif stat.S_ISREG(st.st_mode):
                    (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(area / rel, workdir / rel, follow_symlinks=False)
            except OSError:  # a name too long for a path of the disk: that output is lost
                pass


def _reclaim(workdir: Path, uid: int, gid: int) -> None:
    """Give workdir back: drop links/special files the command left, restore ownership."""
    for rel, st in _entries(workdir):  # parents first: a folder is opened up before it is read
        path = workdir / rel
        try:
            if stat.S_ISLNK(st.st_mode) or not (stat.S_ISREG(st.st_mode)
                                                or stat.S_ISDIR(st.st_mode)):
                os.unlink(path)
                continue
            os.lchown(path, uid, gid)
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
                     | stat.S_IRUSR | stat.S_IWUSR | (stat.S_IXUSR if stat.S_ISDIR(st.st_mode)
                                                       else 0))
        except OSError:
            pass
    try:
        os.lchown(workdir, uid, gid)
    except OSError:
        pass


def _chown_tree(workdir: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(workdir, followlinks=False):
        for name in dirnames + filenames:
            try:
                os.lchown(os.path.join(dirpath, name), uid, gid)
            except OSError:
                pass
    os.lchown(workdir, uid, gid)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _isolated_command(argv, workdir: Path, area: Path, readable,
                      uid: int | None = None,
                      stub_fd: int | None = None) -> tuple[list[str], list[int], int | None]:
    """The bubblewrap command line for ``argv`` (``area`` is seen as ``workdir``), the fds it
    reads /etc/passwd and /etc/group from, and the sandbox uid (None: a user namespace maps the
    caller's own uid). With ``stub_fd`` the sandbox runs preload_stub.py instead (as root in
    it, with no capability but the two the fork needs to drop to ``uid``)."""
    if os.geteuid() == 0:
        uid = uid or _next_uid()
        _chown_tree(area, uid, uid)
        passwd = f"root:x:0:0:root:/root:/bin/sh\nstudent:x:{uid}:{uid}::{workdir}:/bin/sh\n"
        group = f"root:x:0:\nstudent:x:{uid}:\n"
    else:
        passwd = f"student:x:{os.getuid()}:{os.getgid()}::{workdir}:/bin/sh\n"
        group = f"student:x:{os.getgid()}:\n"
    fds = []
    for text in (passwd, group):
        fd = os.memfd_create("course-sbx")
        os.write(fd, text.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
    cmd = _bwrap_args(workdir, area, readable, uid, fds[0], fds[1])
    if stub_fd is not None:
        return cmd + [sys.executable, "-I", "-S", str(STUB), str(stub_fd)], fds, uid
    if uid is not None:
        cmd += [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    return cmd + [str(a) for a in argv], fds, uid


_SIGNAL_HINTS = {"SIGKILL": " (killed: memory exhausted?)", "SIGXCPU": " (CPU time limit)",
                 "SIGXFSZ": " (file size limit)", "SIGSEGV": " (crashed)"}


def _stop_reason(rc: int | None, timed_out: bool, flooded: bool, isolate: bool,
                 timeout: float, max_output_bytes: int, over: str = "") -> str:
    """Why the command stopped ("" for a normal exit)."""
    if over:  # a total of the Totals (CPU time, disk)
        return over
    if timed_out:
        return f"timeout: still running after {timeout:g} s (killed)"
    if flooded:
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


@dataclass
class _Totals:
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


def _wait(proc, uid: int | None, timeout: float, max_output_bytes: int, totals: _Totals):
    """Wait for ``proc`` within ``timeout``, the output cap and the totals; kill all it left
    behind.

    Returns (stdout, stderr, timed out, flooded, the total gone past or "").
    """
    stdout, stderr = bytearray(), bytearray()
    state = {"lock": threading.Lock(), "total": 0, "flooded": False}

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if uid is not None:
            _kill_uid(uid, deadline=0.5)

    def on_flood() -> None:
        if not state["flooded"]:
            state["flooded"] = True
            kill()

    threads = [threading.Thread(target=_reader, args=(s, b, state, max_output_bytes, on_flood),
                                daemon=True)
               for s, b in ((proc.stdout, stdout), (proc.stderr, stderr))]
    for t in threads:
        t.start()
    timed_out, over = False, ""
    deadline = time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            pass
        timed_out = time.monotonic() >= deadline
        over = "" if timed_out else totals.over()
        if timed_out or over:
            kill()
            proc.wait()
            break
    if uid is not None:
        _kill_uid(uid)
    else:
        try:  # whatever is left in the process group
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    if not (timed_out or over or state["flooded"]):  # it may have ended on hitting one
        over = totals.over(final=True)
    for t in threads:
        t.join(timeout=5)
    for s in (proc.stdout, proc.stderr):
        try:
            s.close()
        except OSError:
            pass
    return stdout, stderr, timed_out, state["flooded"], over


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
            _copy_back(workdir, area)
        writable = area or workdir
        cpu_group = cpu_cgroup() if isolate else None
        cgroups = (make_cgroups(memory_mb, max_procs) if isolate else []) + (
            [cpu_group] if cpu_group else [])
        totals = _Totals(cpu_group, float(cpu_total_seconds or cpu), writable, area is not None,
                         disk_mb, max_files, base)
        start = time.monotonic()
        preexec = rlimits(memory_mb, cpu, max_procs if isolate else 0, file_mb, tuple(cgroups))
        try:
            handoff, uid = None, None
            if isolate and preload is not None and os.geteuid() == 0:
                uid = _next_uid()
                handoff = preload.handoff({"argv": [str(a) for a in argv], "uid": uid,
                                           "env": _clean_env(workdir, env), "cwd": str(workdir),
                                           "cgroups": [str(g) for g in cgroups]})
            while True:  # the preload's fork, or bubblewrap's own start where none can serve
                stub_fd = handoff.stub_fd if handoff is not None else None
                cmd, pass_fds = [str(a) for a in argv], []
                if isolate:
                    cmd, pass_fds, uid = _isolated_command(argv, workdir, writable, readable,
                                                           uid, stub_fd)
                try:
                    proc = _start(cmd, workdir, env,
                                  pass_fds + ([stub_fd] if stub_fd is not None else []), preexec)
                finally:
                    if handoff is not None:
                        handoff.release_stub()
                stdout, stderr, timed_out, flooded, over = _wait(proc, uid, timeout,
                                                                 max_output_bytes, totals)
                forked, why = handoff.started() if handoff is not None else (True, "")
                if forked:
                    break
                print(f"course grade: a preloaded start failed ({why}); starting the command "
                      "afresh", file=sys.stderr)  # nothing of the command ran
                handoff, uid = None, None
        finally:
            remove_cgroups(cgroups)
        seconds = time.monotonic() - start
        _reclaim(writable, *owner)  # links and special files out; ownership back to the caller
        if area is not None:  # the rest goes with the tmpfs
            _copy_back(area, workdir, keep)
        elif keep is not None:
            _keep_only(workdir, keep)
    finally:
        if area is not None:
            unmount_area(area)
    reason = _stop_reason(proc.returncode, timed_out, flooded, isolate, timeout,
                          max_output_bytes, over)
    return SandboxResult(proc.returncode, stdout.decode("utf-8", "replace"),
                         stderr.decode("utf-8", "replace"), timed_out, reason, seconds)


def _start(cmd: list[str], workdir: Path, env: dict | None, pass_fds: list[int], preexec):
    try:
        return subprocess.Popen(
            cmd, cwd=workdir, env=_clean_env(workdir, env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=pass_fds, preexec_fn=preexec)
    finally:
        for fd in pass_fds[:2]:  # the /etc/passwd and /etc/group data (not the stub's socket)
            os.close(fd)


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
