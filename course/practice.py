"""The closing exercises of each chapter: run the student's answer, or say it is not there yet.

An exercise is a function whose body the student writes (the instructor's copy holds a worked
solution between nbgrader's solution markers; the released copy a stub that raises
``NotImplementedError``). ``attempt(exercise_4_1)`` runs it; an unanswered one prints a line
instead of stopping the rest of the notebook.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["attempt"]


def attempt(exercise: Callable[[], object]):
    """Run ``exercise()`` and return its result; None, with a note, while it is unanswered.

    >>> def exercise_0_1():
    ...     raise NotImplementedError()
    >>> attempt(exercise_0_1)
    exercise_0_1: not answered yet: write your code in the function above and run the cell again
    """
    try:
        return exercise()
    except NotImplementedError:
        print(f"{exercise.__name__}: not answered yet: write your code in the function above "
              "and run the cell again")
        return None
