"""What the sandbox actually enforces (autograder.isolation.sandbox).

Each test runs a small Python program inside ``run_sandboxed`` and checks from outside what it
could or could not do. ``scripts/setup-system.sh`` installs bubblewrap; without it these tests
fail on Linux with the reason, and are skipped with it elsewhere.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from autograder.isolation import preload, sandbox
from autograder.isolation.sandbox import (
    SandboxUnavailableError,
    isolation_available,
    run_sandboxed,
)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

pytestmark = pytest.mark.sandbox  # tests/conftest.py: fails on Linux without it, skips elsewhere
_started = {"by": None}  # who starts the Python of run_py: bubblewrap, or a preload's fork


@pytest.fixture(autouse=True, params=["bubblewrap", "preload"])
def started_by(request):
    """Every test twice: the command started by bubblewrap, and forked from a preload
    (``autograder.isolation.preload``, what ``course grade`` uses as root) into the same sandbox."""
    if request.param == "preload":
        zygote = preload.shared("harness")
        if zygote is None:
            pytest.skip("a preload needs the grader to run as root on Linux")
        _started["by"] = zygote
    yield request.param
    _started["by"] = None


def run_py(code: str, workdir: Path, **kw):
    kw.setdefault("timeout", 60)
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], workdir=workdir,
                         preload=_started["by"], **kw)


def test_runs_a_command_and_captures_its_output(tmp_path):
    res = run_py("""
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        open("made.txt", "w").write("inside")
        raise SystemExit(3)
    """, tmp_path)
    assert res.returncode == 3 and not res.timed_out and res.reason == ""
    assert res.stdout == "to stdout\n" and res.stderr == "to stderr\n"
    assert (tmp_path / "made.txt").read_text() == "inside"
    assert res.seconds > 0


def test_isolation_available_describes_the_mechanism():
    ok, why = isolation_available()
    assert ok is True and "bubblewrap" in why


def test_runs_unprivileged_with_no_capabilities(tmp_path):
    res = run_py("""
        import os
        caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")]
        print(os.getuid(), os.geteuid(), ",".join(caps))
        print(len([p for p in os.listdir("/proc") if p.isdigit()]))
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    ids, nprocs = res.stdout.split("\n")[:2]
    uid, euid, caps = ids.split()
    assert set(caps.split(",")) == {"0000000000000000"}  # no capability at all
    if os.geteuid() == 0:
        assert int(uid) != 0 and int(euid) != 0
    assert int(nprocs) <= 3  # its own pid namespace: bwrap's init, the command (and ps)


def test_no_network_not_even_the_hosts_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        res = run_py(f"""
            import socket
            for address in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
                try:
                    socket.create_connection(address, timeout=3).close()
                    print("CONNECTED", address)
                except OSError as err:
                    print("refused", address, err.errno)
            try:
                socket.getaddrinfo("pypi.org", 443)
                print("RESOLVED")
            except OSError:
                print("no dns")
        """, tmp_path)
    finally:
        server.close()
    assert res.returncode == 0, res.stderr
    assert "CONNECTED" not in res.stdout and "RESOLVED" not in res.stdout
    assert res.stdout.count("refused") == 3


def test_cannot_see_the_repository_home_or_a_planted_file(tmp_path):
    secret_dir = tmp_path / "instructor"
    secret_dir.mkdir()
    secret = secret_dir / "gradebook.db"
    secret.write_text("SECRET-GRADES")
    secret.chmod(0o644)
    work = tmp_path / "work"
    grader = ROOT / "autograder"  # the trusted checks and steps: never in the sandbox
    targets = [str(secret), str(ROOT / "pyproject.toml"), str(ROOT / "source"),
               str(ROOT / "tests" / "test_sandbox.py"), str(grader / "exercises"),
               str(grader / "exercises" / "metrics.py"), str(grader / "steps"),
               str(grader / "protocol.py"), str(grader / "samples"), str(grader / "settings.py"),
               str(grader / "nbgrader_config.py"), "/root/.bashrc", "/etc/shadow",
               str(Path.home() / ".ssh")]
    res = run_py(f"""
        import os
        for path in {targets!r}:
            try:
                if os.path.isdir(path):
                    print("LISTED", path, os.listdir(path))
                else:
                    print("READ", path, open(path).read()[:20])
            except OSError as err:
                print("denied", path, err.errno)
        print("ROOT", sorted(os.listdir({str(ROOT)!r})))
        print("GRADER", sorted(os.listdir({str(grader)!r})))
    """, work)
    assert res.returncode == 0, res.stderr
    assert "GRADER ['__init__.py', 'inside']" in res.stdout, res.stdout  # what runs inside
    assert "READ" not in res.stdout and "LISTED" not in res.stdout and "SECRET" not in res.stdout
    assert res.stdout.count("denied") == len(targets)
    # of the repository only the course package, the virtual environment and the grader's
    # import-free __init__.py with inside/ are there
    visible = eval(res.stdout.split("ROOT ", 1)[1].splitlines()[0])
    assert set(visible) <= {"course", ".venv", "autograder"}


def test_cannot_write_outside_workdir(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    work = tmp_path / "work"
    targets = [str(outside / "x"), str(ROOT / "course" / "x.py"), str(Path(PY).parent / "x"),
               "/usr/x", "/etc/x", str(tmp_path / "x")]
    res = run_py(f"""
        for path in {targets!r}:
            try:
                open(path, "w").write("pwned")
                print("WROTE", path)
            except OSError as err:
                print("denied", path, err.errno)
        open("/tmp/scratch", "w").write("private /tmp is fine")
        open("inside.txt", "w").write("ok")
    """, work)
    assert res.returncode == 0, res.stderr
    assert "WROTE" not in res.stdout
    assert not (outside / "x").exists() and not (ROOT / "course" / "x.py").exists()
    assert (work / "inside.txt").read_text() == "ok"
    assert not Path("/tmp/scratch").exists() or Path("/tmp/scratch").read_text() != (
        "private /tmp is fine")


def test_wall_clock_timeout_kills(tmp_path):
    start = time.monotonic()
    res = run_py("import time\nwhile True:\n    time.sleep(1)", tmp_path, timeout=2)
    assert res.timed_out and "timeout" in res.reason
    assert time.monotonic() - start < 15


def test_cpu_time_limit(tmp_path):
    res = run_py("while True:\n    pass", tmp_path, timeout=60, cpu_seconds=1)
    assert not res.timed_out
    assert res.returncode != 0 and "CPU" in res.reason, res


def test_memory_limit(tmp_path):
    res = run_py("""
        try:
            block = bytearray(3 * 1024**3)
            print("ALLOCATED")
        except MemoryError:
            print("memory error")
    """, tmp_path, memory_mb=1024)
    assert "ALLOCATED" not in res.stdout and "memory error" in res.stdout


def test_process_limit_stops_a_fork_bomb_and_nothing_survives(tmp_path, processes_with):
    marker = "forkbomb-" + uuid.uuid4().hex  # tmp_path.name repeats across xdist workers
    res = run_py(f"""
        import os, time
        children = 0
        for _ in range(10_000):
            try:
                if os.fork() == 0:
                    os.setsid()
                    time.sleep(300)  # {marker}
                    os._exit(0)
                children += 1
            except OSError:
                break
        print(children)
    """, tmp_path, max_procs=40, timeout=60)
    assert res.returncode == 0, res.stderr
    assert 0 < int(res.stdout) < 40
    assert not processes_with(marker)


def test_output_limit(tmp_path):
    res = run_py("while True:\n    print('x' * 1000, end='')", tmp_path, max_output_bytes=50_000,
                 timeout=60)
    assert "output limit" in res.reason and not res.timed_out
    assert len(res.stdout) <= 50_000


def test_file_size_limit(tmp_path):
    res = run_py("""
        with open("big", "wb") as f:
            for _ in range(100):
                f.write(b"x" * 1024 * 1024)
    """, tmp_path, file_mb=8)
    assert res.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 8 * 1024 * 1024


@pytest.mark.slow
def test_detached_processes_die_with_the_call(tmp_path, processes_with):
    marker = "detached-" + uuid.uuid4().hex  # tmp_path.name repeats across xdist workers
    res = run_py(f"""
        import os, subprocess, time
        # a double fork + setsid, and a nohup'd shell: both wait, then write
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(2)
                open("late-python.txt", "w").write("{marker}")
                os._exit(0)
            os._exit(0)
        subprocess.Popen(["/bin/sh", "-c", "sleep 2; echo {marker} > late-shell.txt"],
                         start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("parent done")
    """, tmp_path)
    assert res.returncode == 0 and "parent done" in res.stdout
    assert not processes_with(marker)
    time.sleep(3)
    assert not (tmp_path / "late-python.txt").exists()
    assert not (tmp_path / "late-shell.txt").exists()


def test_workdir_is_given_back_without_links_or_setuid_bits(tmp_path):
    res = run_py("""
        import os, stat
        os.symlink("/etc/passwd", "link-to-passwd")
        os.symlink("/work", "link-to-dir")
        os.mkfifo("fifo")
        open("tool", "w").write("#!/bin/sh\\n")
        os.chmod("tool", 0o6755)
        os.makedirs("sub/deeper")
        os.symlink("../../tool", "sub/deeper/link")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["sub", "sub/deeper", "tool"]
    st = (tmp_path / "tool").stat()
    assert st.st_uid == os.getuid() and not st.st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_the_environment_is_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_TOKEN", "s3cret")
    res = run_py("import os; print(sorted(os.environ))", tmp_path, env={"EXTRA": "1"})
    names = eval(res.stdout)
    assert "INSTRUCTOR_TOKEN" not in names and "EXTRA" in names


def test_unavailable_isolation_raises_unless_isolate_false(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_available",
                        lambda: (False, "no bubblewrap in this test"))
    with pytest.raises(SandboxUnavailableError, match="no bubblewrap in this test"):
        run_py("print(1)", tmp_path)
    res = run_py("print(1)", tmp_path, isolate=False)
    assert res.returncode == 0 and res.stdout == "1\n"


def test_isolate_false_still_has_timeout_and_output_cap(tmp_path):
    res = run_py("while True:\n    print('y' * 100)", tmp_path, isolate=False, timeout=20,
                 max_output_bytes=10_000)
    assert "output limit" in res.reason
    res = run_py("import time; time.sleep(30)", tmp_path, isolate=False, timeout=1)
    assert res.timed_out
