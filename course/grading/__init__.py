"""Releasing the graded chapters and grading a class's submissions (nbgrader plus checks).

- ``course.grading.release``: source/ -> release/ with nbgrader (``course release``).
- ``course.grading.submissions``: find each student's notebook in a folder of submissions.
- ``course.grading.sandbox``: run student code isolated (namespaces, rlimits, timeouts).
- ``course.grading.trusted``: score each exercise outside the student's process.
- ``course.grading.grade``: grade a class in parallel, resumably (``course grade``).

Nothing is imported here, so ``import course.grading.release`` stays light.
"""
