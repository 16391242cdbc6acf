"""Shared pytest fixtures, and what a test that needs the grading sandbox does without it."""

import os
import sys
from pathlib import Path

import pytest

from autograder.isolation.sandbox import isolation_available
from course.cifar import write_fake_cifar10
from course.lean_imports import skip_unused_format_checkers

# What the `course` command does (course/lean_imports.py): the tests that read notebooks or
# gradebooks in this process skip the format checkers' parsers (about 3 s per pytest worker).
skip_unused_format_checkers()

# The trusted inputs derive from the grading secret; tests use a fixed one (the value the
# grader used before secrets were per course), so their inputs never depend on the machine.
os.environ.setdefault("COURSE_GRADING_SECRET", "dl-tuning-course/trusted-grader/v1")

# Grading isolates student code with Linux namespaces (bubblewrap). On Linux the tests grade in
# the sandbox and fail, saying why, where it does not work; elsewhere it cannot exist, so they
# grade without it, and the tests of the sandbox itself are skipped with that reason.
SANDBOX_PLATFORM = sys.platform.startswith("linux")
# A grouped test whose group pytest-xdist did not get (see _check_groups_reach_xdist)
GROUP_LOST = pytest.StashKey[bool]()
GROUP_LOST_WHY = (
    "pytest-xdist ignored this test's xdist_group: this pytest and pytest-xdist cannot group "
    "tests (pytest-dev/pytest-xdist#1386), so every worker would grade the same batch; "
    "install the versions pyproject.toml names: pip install -e '.[dev]'")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.stash.get(GROUP_LOST, False):
        pytest.fail(GROUP_LOST_WHY, pytrace=False)
    if item.get_closest_marker("sandbox") is None:
        return
    ok, why = isolation_available()
    if ok:
        return
    if SANDBOX_PLATFORM:
        pytest.fail(f"the grading sandbox does not work here: {why} "
                    "(`bash scripts/setup-system.sh` installs it)", pytrace=False)
    pytest.skip(f"the grading sandbox needs Linux namespaces: {why}")


# Tests that read one expensive shared result (a graded batch, a server) run on one pytest-xdist
# worker: with `--dist loadgroup` (pyproject.toml) a group is one unit of work, so the other
# worker goes on with other tests instead of waiting on the same lock, and a module fixture
# (one per worker) is built once. The adversarial and the chapter batches share a group: each
# keeps both cores busy by itself, and run at the same time they would slow the honest
# students of the adversarial batch towards its limits. (test module, fixture) -> group.
SHARED_WORK = {
    ("test_adversarial", "graded"): "graded-batches",
    ("test_grade", "batch"): "graded-batches",
    ("test_gradebook", "graded_class"): "gradebook-class",
    ("test_gradebook", "postgres"): "gradebook-class",
    ("test_robust", "hostile_batch"): "robust-hostile-batch",
    ("test_hidden_tests", "graded"): "hidden-tests-batch",
    ("test_cluster_tls", "cluster"): "tls-cluster",
    ("test_book_site", "book_site"): "book-site",
}
# Then the longest single tests first and the quick ones last, so that neither worker is left
# with a long test while the other has nothing to do (longest processing time first). Each entry
# is the start of a test id; the tests no entry names keep their order, slow ones before quick.
LONGEST_FIRST = [
    "tests/test_budget.py::test_a_looping_submission",  # minutes, mostly waiting on its limits
    "tests/test_exchange.py",  # ~2.5 min: two unix users through nbgrader's exchange
    "tests/test_notebooks.py::test_notebook_claims_hold_at_full_size",
    "tests/test_notebooks.py::test_a_broken_experiment_fails_its_claim",
    "tests/browser/test_student_path.py::test_run_all_in_jupyterlab",
    "tests/browser/test_book_site.py",  # builds the site: every chapter at the CI parameters
    "tests/test_distributed.py::test_a_worker_killed_mid_batch",
    "tests/browser/",
    "tests/test_distributed.py",
    "tests/test_notebooks.py::test_notebook_runs_in_ci_mode",
]


@pytest.hookimpl(wrapper=True)  # around pytest-xdist's hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    grouped = []
    for item in items:
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        groups = {SHARED_WORK[module, name] for name in item.fixturenames
                  if (module, name) in SHARED_WORK}
        for group in sorted(groups)[:1]:
            item.add_marker(pytest.mark.xdist_group(group))
            grouped.append(item)

    def order(item):
        for rank, start in enumerate(LONGEST_FIRST):
            if item.nodeid.startswith(start):
                return rank
        return len(LONGEST_FIRST) + (item.get_closest_marker("slow") is None)

    items.sort(key=order)  # stable: the tests of one rank keep their order
    yield
    _check_groups_reach_xdist(config, grouped)


def _check_groups_reach_xdist(config, grouped) -> None:
    """pytest-xdist passes a test's group to its scheduler as a suffix of the test's id. When
    the id cannot be changed (pytest 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386)
    the groups are silently ignored: both workers then build the same batch, one of them
    waiting on its lock, and the suite takes minutes longer. Those tests fail instead, saying
    why (an error raised here would crash the worker, and its message would be lost)."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and config.getvalue("loadgroup")):
        return
    for item in grouped:
        if "@" not in item.nodeid.rpartition("]")[2]:
            item.stash[GROUP_LOST] = True


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session shares (the session's base temp).

    Work done once per session goes there, under a FileLock: the first worker that asks does
    it, the others wait and read the result.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture
def fake_cifar10(tmp_path):
    """A folder holding small CIFAR-format files (cifar-10-batches-py/: 100 train, 40 test)."""
    write_fake_cifar10(tmp_path, n_train=100, n_test=40, seed=0)
    return tmp_path


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:  # it ended while we looked
                pass
    return found


@pytest.fixture
def processes_with():
    """``processes_with(marker)``: the pids of live processes whose command line holds it."""
    return _processes_with
