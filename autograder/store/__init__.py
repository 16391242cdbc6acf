"""What the grader reads and writes: submissions, results.jsonl and grades.csv, nbgrader's
gradebook, exports for Canvas and Gradescope, deadlines, the release and the sample mistakes."""
