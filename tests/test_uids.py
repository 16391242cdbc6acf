"""Sandbox uids and process handles (autograder.isolation.uids, autograder.inside.linux).

The sandbox kills every process of a command's uid when the command ends, so two commands
running at once, of one grader or of two on the same machine, must never share a uid: these
tests run real graders side by side and check that none can end another's student.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autograder.inside.linux import kill_uid, processes
from autograder.inside.tree import entries, remove
from autograder.isolation.sandbox import run_sandboxed
from autograder.isolation.uids import sandbox_uid

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _root_only():
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("sandbox uids are only used where the grader runs as root on Linux")


# A grader: one sandboxed command that says its uid and stays a few seconds, so that two
# graders started together run theirs at the same time.
GRADER = """
import json, sys, time
from autograder.isolation.sandbox import run_sandboxed
start = time.monotonic()
res = run_sandboxed([sys.executable, "-c", "import os, time; print(os.getuid()); time.sleep(4)"],
                    workdir=sys.argv[1], timeout=60)
print(json.dumps({"uid": res.stdout.strip(), "ok": res.ok, "err": res.stderr[-500:],
                  "start": start, "end": time.monotonic()}))
"""


@pytest.mark.slow
@pytest.mark.sandbox
def test_graders_with_the_same_pid_run_their_students_as_different_uids(tmp_path):
    """Two graders in pid namespaces of their own (two containers on one machine): both are
    pid 1, so a uid made from the pid would be the same for both; their commands, running at
    the same time, get different ones."""
    _root_only()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to give each grader a pid namespace")
    graders = []
    for name in ("a", "b"):
        tmp = tmp_path / name / "tmp"  # its own sandbox areas (their names hold the pid: 1)
        tmp.mkdir(parents=True)
        env = {**os.environ, "TMPDIR": str(tmp)}
        graders.append(subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", PY, "-c", GRADER,
             str(tmp_path / name / "work")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=ROOT))
    seen = []
    for grader in graders:
        out, err = grader.communicate(timeout=180)
        assert grader.returncode == 0, err[-2000:]
        seen.append(json.loads(out.splitlines()[-1]))
    assert all(s["ok"] for s in seen), seen
    a, b = seen
    assert a["start"] < b["end"] and b["start"] < a["end"], "the graders did not overlap"
    assert a["uid"] != b["uid"], seen


# A grader that holds one sandbox uid with a process running as it, and waits for orders on
# stdin: "kill" ends its uid's processes (as the sandbox does when a command ends).
HOLDER = """
import os, subprocess, sys
from autograder.isolation.uids import sandbox_uid
from autograder.inside.linux import kill_uid
real = os.getpid
os.getpid = lambda: 4242  # what the uid's block could be derived from: the same in both
with sandbox_uid() as uid:
    os.getpid = real
    sleeper = subprocess.Popen(["sleep", "120"], user=uid, group=uid)
    print(uid, sleeper.pid, flush=True)
    for order in sys.stdin:
        if order.strip() == "kill":
            print(kill_uid(uid), flush=True)
        elif order.strip() == "alive?":
            print(sleeper.poll() is None, flush=True)
    sleeper.kill()
    sleeper.wait()
"""


def _holder():
    proc = subprocess.Popen([PY, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    uid, pid = proc.stdout.readline().split()
    return proc, int(uid), int(pid)


def _ask(proc, order: str) -> str:
    proc.stdin.write(order + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_one_grader_ending_its_uid_leaves_another_graders_student_alive():
    _root_only()
    first, first_uid, _ = _holder()
    second, second_uid, second_pid = _holder()
    try:
        assert first_uid != second_uid
        assert _ask(first, "kill") == "True"  # nothing of the first's uid is left
        assert _ask(second, "alive?") == "True"
        assert any(p.pid == second_pid and p.uid == second_uid for p in processes())
    finally:
        for proc in (first, second):
            proc.stdin.close()
            proc.wait(timeout=30)


def test_a_grader_never_hands_one_uid_to_two_running_commands():
    """Within a process: every uid in use is different (more than one block's worth), and a
    uid comes back only once its command has ended."""
    _root_only()
    from autograder.settings import UID_BLOCK

    held, uids = [], []
    try:
        for _ in range(UID_BLOCK + 3):
            held.append(sandbox_uid())
            uids.append(held[-1].__enter__())
        assert len(set(uids)) == len(uids)
    finally:
        for claim in reversed(held):
            claim.__exit__(None, None, None)
    with sandbox_uid() as again, sandbox_uid() as other:
        assert again != other


def test_a_fork_of_a_grader_claims_uids_of_its_own():
    """A grader's fork (a worker process) shares its parent's lock: it must not hand out the
    parent's uids."""
    _root_only()
    code = textwrap.dedent("""
        import os
        from autograder.isolation.uids import sandbox_uid
        with sandbox_uid() as parent:
            read, write = os.pipe()
            if os.fork() == 0:
                with sandbox_uid() as child:
                    os.write(write, str(child).encode())
                os._exit(0)
            os.wait()
            print(parent, os.read(read, 64).decode())
    """)
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    parent, child = (int(u) for u in res.stdout.split())
    from autograder.settings import UID_BLOCK, UID_FIRST

    block = lambda uid: (uid - UID_FIRST) // UID_BLOCK  # noqa: E731
    assert block(parent) != block(child)  # another block altogether


# --------------------------------------------------------------------------- process handles


def test_kill_uid_kills_every_process_of_a_uid_and_only_those():
    _root_only()
    with sandbox_uid() as uid, sandbox_uid() as bystander_uid:
        victims = [subprocess.Popen(["sleep", "120"], user=uid, group=uid) for _ in range(3)]
        bystander = subprocess.Popen(["sleep", "120"], user=bystander_uid, group=bystander_uid)
        try:
            assert {p.pid for p in processes() if p.uid == uid} == {v.pid for v in victims}
            assert kill_uid(uid) is True
            assert [v.wait(timeout=10) for v in victims] == [-signal.SIGKILL] * 3
            assert bystander.poll() is None
        finally:
            bystander.kill()
            bystander.wait()


def test_without_process_handles_kills_and_waits_still_work(tmp_path, monkeypatch):
    """Where the kernel or Python has no pidfd_open, signals go by pid (checked just before)
    and the sandbox polls for its command's end."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    if os.geteuid() == 0:
        with sandbox_uid() as uid:
            victim = subprocess.Popen(["sleep", "120"], user=uid, group=uid)
            assert kill_uid(uid) is True
            assert victim.wait(timeout=10) == -signal.SIGKILL
    start = time.monotonic()
    res = run_sandboxed([PY, "-c", "print('done')"], workdir=tmp_path / "quick", timeout=60,
                        isolate=False)
    assert res.ok and res.stdout == "done\n"
    res = run_sandboxed([PY, "-c", "import time; time.sleep(60)"], workdir=tmp_path / "slow",
                        timeout=1, isolate=False)
    assert res.timed_out and time.monotonic() - start < 30


def test_processes_sees_this_process_and_its_cpu_time():
    me = next(p for p in processes(cpu=True) if p.pid == os.getpid())
    assert me.ppid == os.getppid() and me.uid == os.getuid() and me.ticks > 0


# --------------------------------------------------------------------------- trees


@pytest.mark.slow  # a path per entry: O(depth^2) lookups, seconds at this depth
def test_remove_takes_a_deep_tree_and_never_follows_a_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    tree = tmp_path / "tree"
    deep = tree
    tree.mkdir()
    for _ in range(1100):  # deeper than Python's recursion limit (shutil.rmtree recurses)
        deep = deep / "d"
        deep.mkdir()
    (deep / "f").write_text("x")
    (tree / "link").symlink_to(outside, target_is_directory=True)
    assert sum(1 for _ in entries(tree)) == 1100 + 1 + 1
    remove(tree)
    assert not tree.exists() and (outside / "precious").read_text() == "keep"
    remove(tmp_path / "never-there")  # nothing to do
    (tmp_path / "link").symlink_to(outside)
    remove(tmp_path / "link")
    assert outside.is_dir() and not (tmp_path / "link").exists()
