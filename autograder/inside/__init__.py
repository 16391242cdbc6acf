"""What runs inside the sandbox, beside a student's code: standard library, the packages the
sandbox provides (NumPy, torch, nbformat, nbclient, nbgrader, ``course``) and each other only.

Mounted read-only in every sandbox with ``autograder/__init__.py``; nothing else of
``autograder`` is there (``isolation/sandbox.py``). A CI contract (pyproject.toml's
``[tool.importlinter]``, run by tests/test_layout.py) keeps these modules from importing it.
"""
