"""Waiting on a condition instead of sleeping: what the tests of leftover processes use."""

from __future__ import annotations

import os
import time

import pytest

__all__ = ["sandbox_processes", "wait_until"]


def sandbox_processes() -> list[int]:
    """The pids of live processes that run as a sandbox uid (autograder.settings.UID_FIRST and
    up): what a student's code left behind, if anything."""
    from autograder.settings import UID_FIRST

    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid >= UID_FIRST:
                    found.append(int(pid))
            except OSError:
                pass
    return found


def wait_until(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:g} s: {what}")
        time.sleep(0.1)
