"""Releasing the graded chapters and grading a class's submissions (nbgrader plus checks).

- ``release``: source/ -> release/ with nbgrader (``course release``).
- ``submissions``: find each student's notebook in a folder of submissions.
- ``exercises/``: one module per graded exercise (its probes and trusted checks), and the
  registry that checks them against the source notebooks' nbgrader cells.
- ``protocol``: the probes sent to the sandbox and strict readers of the answers.
- ``solution_cell``: take the exercise's solution cell out of a student's notebook.
- ``harness``: runs in the sandbox (``python -I``, never imports ``course``): the probes.
- ``trusted``: score one notebook outside the student's process.
- ``sandbox``: run student code isolated (namespaces, timeouts, output cap); ``limits``: its
  per-process rlimits and per-student totals (cgroups; a tmpfs for the work folder).
- ``nbgrader_step`` (+ ``nbgrader_worker``, its sandbox side): nbgrader's autograde and feedback.
- ``feedback``: the feedback pages, sanitised, with the recorded score.
- ``results``: results.jsonl and grades.csv.
- ``grade``: grade a class in parallel, resumably (``course grade``): calls the above in order.
- ``samples``: sample submissions (autograder/samples/) put into the released notebook.
- ``gradebook``: the class into nbgrader's gradebook (SQLite or PostgreSQL), manual scores kept.
- ``deadlines``: deadlines and late penalties (autograder/deadlines.yaml), submission times.
- ``export``: the gradebook for Canvas, a spreadsheet and Gradescope (``course export``).

Nothing is imported here, so ``import course.grading.release`` stays light.
"""
