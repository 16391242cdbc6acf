"""Shared pytest fixtures."""

import pytest

from course.cifar import write_fake_cifar10


@pytest.fixture
def fake_cifar10(tmp_path):
    """A folder holding small CIFAR-format files (cifar-10-batches-py/: 100 train, 40 test)."""
    write_fake_cifar10(tmp_path, n_train=100, n_test=40, seed=0)
    return tmp_path
