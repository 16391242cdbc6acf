"""The steps that grade one student, outside the student's process: the trusted check (the
score), nbgrader in the sandbox, the feedback page, and the time budgets they run under."""
