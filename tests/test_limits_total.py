"""Limits hold for all of a student's processes together (issue 16, classes 8 and 9).

Class 8: CPU time, counted for the whole sandboxed command (cgroup v1 cpuacct, or v2 cpu.stat),
however the work is split into processes. Class 9: the work folder, a total of bytes and files
for the whole command (a tmpfs of that size as root, measured elsewhere), and nothing but the
grader's own outputs left on disk after a student is graded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.exercises import registry
from autograder.inside.linux import mount_tmpfs
from autograder.isolation import limits
from autograder.isolation.sandbox import run_sandboxed
from autograder.store.samples import solution_code

ROOT = Path(__file__).resolve().parents[1]
ISOLATE = sys.platform.startswith("linux")

# --------------------------------------------------------------------------- class 8: CPU time

SPIN = r'''
import os, sys, time

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

n, each, how = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if how == "single":
    spin(n * each)
    print("done", flush=True)
    sys.exit()
children = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        spin(each)
        os._exit(0)
    if how == "chain":  # one short process after the other
        os.waitpid(pid, 0)
        print("done", flush=True)
    else:
        children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
    print("done", flush=True)
'''

# (processes, CPU seconds each, how): 6 s of CPU in all, never more than 6 s in one process
SHAPES = {"parallel": (4, 1.5, "parallel"), "chain": (12, 0.5, "chain"),
          "single": (1, 6.0, "single")}


def _cpu_accounting(flavour: str) -> str:
    """'' when this grader can count a command's CPU time with ``flavour``, else why not."""
    saved = limits.CPU_ACCOUNTING
    limits.CPU_ACCOUNTING = (flavour,)
    try:
        folder = limits.cpu_cgroup()
    finally:
        limits.CPU_ACCOUNTING = saved
    if folder is None:
        return (f"the grader may not create a cgroup {flavour} here: only the per-process CPU "
                "limit and the wall-clock timeout hold")
    counter = "cpuacct.usage" if flavour == "v1" else "cpu.stat"
    found = (folder / counter).exists()
    limits.remove_cgroups([folder])
    assert found, f"{folder} has no {counter}"
    return ""


def _spin(tmp_path: Path, shape: str, total: float):
    n, each, how = SHAPES[shape]
    return run_sandboxed([sys.executable, "-c", SPIN, str(n), str(each), how], workdir=tmp_path,
                         timeout=120, cpu_seconds=30, cpu_total_seconds=total)


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("flavour", ["v1", "v2"])
@pytest.mark.parametrize("shape", ["parallel", "chain", "single"])
def test_class_8_cpu_time_is_limited_for_all_processes_together(tmp_path, monkeypatch, shape,
                                                                 flavour):
    """6 s of CPU, 2 s allowed for the command: no process reaches its own 30 s limit."""
    why_not = _cpu_accounting(flavour)
    if why_not:
        pytest.skip(why_not)
    monkeypatch.setattr(limits, "CPU_ACCOUNTING", (flavour,))
    result = _spin(tmp_path, shape, total=2)
    assert result.reason == "CPU time limit: more than 2 s for all processes together (killed)"
    assert result.stdout.count("done") < SHAPES[shape][0], result.stdout
    assert not result.timed_out


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_8_the_same_work_under_the_total_runs_to_the_end(tmp_path):
    if _cpu_accounting("v1") and _cpu_accounting("v2"):
        pytest.skip("no cgroup here: the CPU total is not measured")
    result = _spin(tmp_path, "parallel", total=60)
    assert (result.returncode, result.reason, result.stdout.count("done")) == (0, "", 4)


# --------------------------------------------------------------------------- class 9: disk

FILL = r'''
import os, sys, time
how = sys.argv[1]
with open("out.txt", "w") as fh:
    fh.write("the output the caller keeps")
written = 0
try:
    if how == "files":  # many small files
        for i in range(100_000):
            with open(f"f{i}", "w") as fh:
                fh.write("x")
            written += 1
    elif how == "big":  # one file, under the per-file limit
        with open("big", "wb") as fh:
            for _ in range(48):
                fh.write(b"x" * 2**20)
                fh.flush()
                written += 1
    else:  # 4 processes, 8 files of 2 MB each: 16 MB per process
        for p in range(4):
            if os.fork() == 0:
                for i in range(8):
                    with open(f"p{p}-{i}", "wb") as fh:
                        fh.write(b"x" * 2 * 2**20)
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
except OSError as err:
    print("stopped", written, err.strerror, flush=True)
time.sleep(60)  # only the disk limit ends this command
'''


def _fill(tmp_path: Path, how: str, isolate: bool = ISOLATE):
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text("from the caller")
    result = run_sandboxed([sys.executable, "-c", FILL, how], workdir=work, timeout=60,
                           file_mb=64, disk_mb=32, max_files=500, keep=["out.txt"],
                           isolate=isolate)
    return result, work


DISK_LIMIT = ("disk limit: more than 32 MB or 500 files written in the work folder by all "
              "processes together (killed)")


@pytest.fixture
def tmpfs_here():
    folder = limits.mount_area(1 << 20, 10)
    if folder is not None:
        limits.unmount_area(folder)
    return folder is not None


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.parametrize("how", ["files", "big", "processes"])
def test_class_9_the_work_folder_is_limited_for_all_processes_together(tmp_path, how,
                                                                       tmpfs_here):
    """500 small files, one 48 MB file (the per-file limit is 64 MB) or 4 processes of 16 MB:
    32 MB and 500 files for the command. Only the caller's output is left afterwards."""
    result, work = _fill(tmp_path, how)
    assert result.reason == DISK_LIMIT
    assert sorted(os.listdir(work)) == ["out.txt"]
    assert (work / "out.txt").read_text() == "the output the caller keeps"
    if not tmpfs_here:
        return
    lines = result.stdout.splitlines()  # a tmpfs of that size: the write past it failed
    if how == "processes":  # 64 MB wanted: at least two of the four could not write theirs
        assert 2 <= len(lines) <= 4 and set(lines) == {"stopped 0 No space left on device"}
    else:
        assert lines == [{"files": "stopped 499 No space left on device",  # 500 with out.txt
                          "big": "stopped 31 No space left on device"}[how]]  # out.txt: 4 kB


@pytest.mark.slow
def test_class_9_without_a_tmpfs_the_folder_is_measured(tmp_path):
    """No namespaces, no mount: the wait loop measures the folder and kills past the total."""
    result, work = _fill(tmp_path, "files", isolate=False)
    assert result.reason == DISK_LIMIT
    assert sorted(os.listdir(work)) == ["out.txt"]


@pytest.mark.sandbox
def test_class_9_the_callers_files_do_not_count_and_stay_without_keep(tmp_path):
    """40 MB put there by the caller, a command that adds 20 MB: within its 32 MB."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.bin").write_bytes(b"d" * 40 * 2**20)
    code = "open('new.bin', 'wb').write(open('data.bin', 'rb').read(20 * 2**20))"
    result = run_sandboxed([sys.executable, "-c", code], workdir=work, timeout=60, disk_mb=32)
    assert (result.returncode, result.reason) == (0, "")
    assert sorted(os.listdir(work)) == ["data.bin", "new.bin"]
    assert (work / "new.bin").stat().st_size == 20 * 2**20


# ------------------------------------------------------------ class 9: a student, graded


LITTER = '''
import os
os.makedirs("litter", exist_ok=True)
for i in range(1000):
    with open(f"litter/{i}", "wb") as fh:
        fh.write(b"x" * 100_000)
with open("litter/big", "wb") as fh:
    fh.write(b"x" * 100 * 2**20)
'''

FILLER = '''
import os
try:
    for i in range(100_000):
        open(f"f{i}", "w").close()
except OSError:
    pass
while True:
    pass
'''


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_9_nothing_large_is_left_after_grading(tmp_path):
    """A student leaving 200 MB in 1001 files gets full marks and leaves nothing behind; one
    filling the folder is stopped at its limit in both steps and scores 0 with the reason."""
    from autograder.grade import grade

    spec = registry(ROOT)["01_metrics"]
    for name, extra in (("litter", LITTER), ("filler", FILLER)):
        nb = nbformat.read(ROOT / "release" / "01_metrics" / spec.notebook_name, as_version=4)
        cell = next(c for c in nb.cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == spec.solution_id)
        cell.source = extra + solution_code(ROOT, "01_metrics")
        (tmp_path / "subs" / name).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "subs" / name / spec.notebook_name)
    rows = {r.student_id: r for r in grade("01_metrics", tmp_path / "subs", tmp_path / "out",
                                          root=ROOT, workers=2, isolate=ISOLATE, timeout=240,
                                          cell_timeout=60, budgets=False)}
    litter = rows["litter"]
    assert (litter.status, litter.score, litter.flagged) == ("graded", litter.max_score, False)
    left = sorted(str(p.relative_to(tmp_path / "out" / "work" / "litter"))
                  for p in (tmp_path / "out" / "work" / "litter").rglob("*") if p.is_file())
    assert left == [spec.notebook_name,
                    f"nbgrader/autograded/litter/01_metrics/{spec.notebook_name}",
                    "nbgrader/nbgrader_result.json"]  # nbgrader's raw page: removed (issue 29)
    filler = rows["filler"]
    assert (filler.status, filler.score, filler.flagged) == ("graded", 0.0, True)
    limit = ("disk limit: more than 512 MB or 10000 files written in the work folder by all "
             "processes together (killed)")
    assert f"nbgrader: {limit}" in filler.reason
    assert all(c["message"].endswith(f" is missing ({limit})") for c in filler.cells.values())
    assert not (tmp_path / "out" / "work" / "filler" / "nbgrader" / "f1").exists()


def test_class_9_an_area_left_mounted_by_a_killed_grader_is_removed(tmpfs_here):
    """A grader killed with -9 leaves its tmpfs mounted; the next one unmounts it."""
    if not tmpfs_here:
        pytest.skip("the grader may not mount a tmpfs here: the work folder is measured")
    stale = limits.AREA_ROOT / "course-sandbox-999999999-1"  # above any pid_max: a dead grader
    stale.mkdir()
    assert mount_tmpfs(b"course-sandbox", str(stale), b"size=1m")
    assert os.path.ismount(stale)
    fresh = limits.mount_area(1 << 20, 10)
    try:
        assert os.path.ismount(fresh) and not stale.exists()
    finally:
        limits.unmount_area(fresh)
    assert not fresh.exists()
