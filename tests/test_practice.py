"""course.practice.attempt: an unanswered exercise prints a note; anything else goes through."""

import doctest

import pytest

import course.practice
from course.practice import attempt


def test_an_answer_runs_and_its_result_comes_back():
    assert attempt(lambda: 42) == 42


def test_an_unanswered_exercise_prints_a_note_and_returns_none(capsys):
    def exercise_2_3():
        raise NotImplementedError()

    assert attempt(exercise_2_3) is None
    assert capsys.readouterr().out.startswith("exercise_2_3: not answered yet")


def test_a_wrong_answer_still_raises():
    def exercise_1_1():
        return 1 / 0

    with pytest.raises(ZeroDivisionError):
        attempt(exercise_1_1)


def test_doctests():
    assert doctest.testmod(course.practice).failed == 0
