"""Deadlines, late penalties and when a submission was handed in (autograder/deadlines.yaml)."""

from __future__ import annotations

import os
import zipfile
from datetime import datetime, timezone

import pytest

from autograder.store.deadlines import (
    DeadlineError,
    LatePolicy,
    load_policies,
    submission_time,
    time_source,
)
from course.notebooks import find_root

ROOT = find_root()
DAY = 86400


def test_the_course_configuration_loads_with_a_policy_for_every_graded_assignment():
    from autograder.exercises import registry

    policies = load_policies(ROOT)
    assert set(registry(ROOT)) <= set(policies)
    assert all(p.per_day == 0.1 and p.max_fraction == 0.5 for p in policies.values())


@pytest.mark.parametrize(("seconds_late", "score", "expected"), [
    (0, 6.0, 0.0),
    (10 * 60, 6.0, 0.0),            # inside the 15 minutes' grace
    (15 * 60 + DAY / 2, 6.0, 0.6),  # a started day after the grace: 10% of 6 points
    (15 * 60 + 1.5 * DAY, 6.0, 1.2),  # two started days
    (30 * DAY, 6.0, 3.0),           # at most 50%
    (30 * DAY, 1.0, 1.0),           # never more than the score
])
def test_the_penalty_follows_the_policy(seconds_late, score, expected):
    policy = LatePolicy(per_day=0.1, max_fraction=0.5, grace_minutes=15)
    assert policy.penalty(seconds_late, score, 6.0) == pytest.approx(expected)


def _write(tmp_path, text):
    path = tmp_path / "deadlines.yaml"
    path.write_text(text)
    return path


def test_deadlines_are_read_in_utc(tmp_path):
    path = _write(tmp_path, "default_late_penalty: {per_day: 0.25}\nassignments:\n"
                            "  01_metrics: {deadline: 2026-10-05T23:59:00+02:00}\n"
                            "  04_learning_rate: {deadline: '2026-10-12T12:00:00Z', "
                            "late_penalty: {per_day: 1, max: 1}}\n")
    policies = load_policies(ROOT, path)
    assert policies["01_metrics"].deadline == datetime(2026, 10, 5, 21, 59, tzinfo=timezone.utc)
    assert policies["01_metrics"].per_day == 0.25
    assert policies["04_learning_rate"].per_day == 1.0


@pytest.mark.parametrize(("text", "message"), [
    ("assignments:\n  01_metrics: {deadline: 2026-10-05}\n", "needs a date, a time and a UTC"),
    ("assignments:\n  01_metrics: {deadline: '2026-10-05T10:00'}\n", "UTC offset"),
    ("assignments:\n  01_metrics: {deadline: null, late_penalty: {per_day: 2}}\n",
     "per_day must be a number from 0 to 1"),
    ("assignments:\n  01_metrics: {deadline: null, late_penalty: {perday: 0.1}}\n",
     "unknown late_penalty keys"),
    ("assignments: [01_metrics]\n", "expected a mapping"),
    ("assignments: {01_metrics: [\n", "not valid YAML"),
])
def test_a_malformed_configuration_says_what_to_fix(tmp_path, text, message):
    with pytest.raises(DeadlineError, match=message):
        load_policies(ROOT, _write(tmp_path, text))


def test_a_missing_configuration_means_no_deadlines(tmp_path):
    assert load_policies(tmp_path) == {}


def test_the_submission_time_comes_from_the_channel_not_from_the_student(tmp_path):
    """A collected folder's timestamp.txt (nbgrader's), else file times; what a zip holds (a
    timestamp.txt the student wrote, its entries' times) never counts (issue 30)."""
    subs = tmp_path / "subs"
    (subs / "alice" / "01_metrics").mkdir(parents=True)
    (subs / "alice" / "01_metrics" / "01_metrics.ipynb").write_text("{}")
    (subs / "alice" / "01_metrics" / "timestamp.txt").write_text("2026-10-06 08:30:00.5 UTC")
    (subs / "bob").mkdir()
    notebook = subs / "bob" / "01_metrics.ipynb"
    notebook.write_text("{}")
    os.utime(notebook, (1_790_000_000, 1_790_000_000))
    with zipfile.ZipFile(subs / "carol.zip", "w") as zf:  # a forged time, three hours early
        zf.writestr(zipfile.ZipInfo("01_metrics.ipynb", (2026, 10, 1, 0, 0, 0)), "{}")
        zf.writestr("timestamp.txt", "2026-10-07T10:00:00+02:00")
    os.utime(subs / "carol.zip", (1_790_000_200, 1_790_000_200))
    with zipfile.ZipFile(subs / "dave.zip", "w") as zf:
        zf.writestr("01_metrics.ipynb", "{}")
    os.utime(subs / "dave.zip", (1_790_000_100, 1_790_000_100))
    assert submission_time(subs, "alice") == datetime(2026, 10, 6, 8, 30, 0, 500000,
                                                      tzinfo=timezone.utc)
    assert "student's own account" in time_source(subs, "alice")
    assert submission_time(subs, "bob") == datetime.fromtimestamp(1_790_000_000, timezone.utc)
    assert time_source(subs, "bob") == "the notebook's file time"
    assert submission_time(subs, "carol") == datetime.fromtimestamp(1_790_000_200, timezone.utc)
    assert time_source(subs, "carol") == "the zip's file time"
    assert submission_time(subs, "dave") == datetime.fromtimestamp(1_790_000_100, timezone.utc)
    assert submission_time(subs, "nobody") is None
