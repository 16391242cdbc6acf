"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

from course.cifar import write_fake_cifar10


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
