"""The grading engine of the course: what instructors run (``course release``, ``course grade``,
``course export``, ``course all``). Students never need it; see autograder/README.md.

Where the trust boundary runs, by folder:

- ``inside/``: what runs inside the sandbox, beside the student's code (the harness, the
  nbgrader worker and its kernel, the zygote, the sanitiser). Standard library plus what the
  sandbox provides; it never imports the rest of this package, which the sandbox cannot see.
- ``exercises/``, ``steps/``, ``protocol.py``: what decides a grade, outside the student's
  process: the trusted checks and the steps that run them.
- ``isolation/``: the sandbox (bubblewrap, rlimits, cgroups, the preloaded starts).
- ``store/``: what the grader reads and writes (submissions, results, nbgrader's gradebook,
  exports, deadlines, releases, the sample mistakes).
- ``grade.py`` (a class), ``student.py`` (one student), ``cluster.py`` (the Dask path),
  ``settings.py`` (every limit), ``cli.py`` (the ``course`` command).

This file imports nothing: the sandbox mounts it, with ``inside/``, so that ``autograder.inside``
can be imported there.
"""
