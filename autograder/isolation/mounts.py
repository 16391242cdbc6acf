"""The sandbox's file system and users: what bubblewrap mounts, and its command line.

``isolated_command`` builds the bubblewrap command line of one sandboxed command (see
``sandbox.py`` for what the sandbox is): the system's ``/usr`` and libraries, a few files of
``/etc``, the Python installation and virtual environment, the ``course`` package and the
grader's ``inside/``, all read-only; a private ``/tmp``, ``/dev/shm``, ``/proc`` and ``/dev``;
the work folder read-write; an ``/etc/passwd`` and ``/etc/group`` naming only root and the
student. ``visible_in_sandbox`` says whether a path is among what every sandbox mounts.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from autograder.inside.tree import entries
from autograder.isolation.preload import STUB

__all__ = ["chown_tree", "isolated_command", "visible_in_sandbox"]

_MB = 1024 * 1024
# Files of /etc a Python process and a Jupyter kernel may look at; nothing secret.
_ETC_FILES = ("localtime", "ld.so.cache", "nsswitch.conf", "hosts", "host.conf", "mime.types")


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


def chown_tree(folder: Path, uid: int, gid: int) -> None:
    """Give ``folder`` and all it holds to ``uid``:``gid`` (links themselves, never followed)."""
    for rel, _ in entries(folder):
        try:
            os.lchown(folder / rel, uid, gid)
        except OSError:
            pass
    os.lchown(folder, uid, gid)


def isolated_command(argv, workdir: Path, area: Path, readable, uid: int | None,
                     stub_fd: int | None = None) -> tuple[list[str], list[int]]:
    """The bubblewrap command line for ``argv`` (``area`` is seen as ``workdir``) and the fds it
    reads /etc/passwd and /etc/group from; ``area`` is given to the sandbox ``uid`` (None: not
    root, a user namespace maps the caller's own uid). With ``stub_fd`` the sandbox runs
    ``inside/stub.py`` instead (as root in it, with no capability but the two the fork needs to
    drop to ``uid``)."""
    if uid is not None:
        chown_tree(area, uid, uid)
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
        return cmd + [sys.executable, "-I", "-S", str(STUB), str(stub_fd)], fds
    if uid is not None:
        cmd += [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    return cmd + [str(a) for a in argv], fds
