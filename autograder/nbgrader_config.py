"""nbgrader configuration of the course (see autograder/README.md).

The course directory is the repository root, in nbgrader's default layout::

    source/<assignment>/<assignment>.ipynb     instructor notebooks (solutions, hidden tests)
    release/<assignment>/<assignment>.ipynb    what students get (`course release` writes it)
    submitted/<student>/<assignment>/          collected submissions (not committed)
    autograded/, feedback/, gradebook.db       nbgrader's outputs (not committed)

`course release` and `course grade` copy this file into the scratch course folders they run
nbgrader in. To run nbgrader by hand from the repository root, put this folder on Jupyter's
config path: ``JUPYTER_CONFIG_PATH=$PWD/autograder nbgrader autograde 05_regularization``.
"""

import os

c = get_config()  # noqa: F821 (injected by traitlets when it loads this file)

c.CourseDirectory.course_id = "dl-tuning"
# This file lives in autograder/ of the course directory; a copy placed at the root of a
# scratch course folder (what `course grade` does) points at that folder instead.
_here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = (os.path.dirname(_here) if os.path.basename(_here) == "autograder"
                          else _here)

# nbgrader's exchange on a JupyterHub, where release_assignment, the students' fetch and submit,
# collect and release_feedback meet (made once: `mkdir -p DIR && chmod 777 DIR`). Every account
# must use the same folder: give the students' side this setting too (the hub's
# /etc/jupyter/nbgrader_config.py). COURSE_EXCHANGE overrides it.
c.Exchange.root = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")

# Graded chapters are executed in their grading configuration (NBGRADER_EXECUTION is set, the
# notebooks shrink their experiments), so most cells finish in seconds; the heaviest test cell
# (chapter 4's trajectories against torch.optim.SGD) needs ~20 s of CPU, and `course grade`
# runs several students per core. 300 s per cell leaves room for that on a busy machine and
# still stops an infinite loop (`course grade --timeout` bounds a whole submission too).
c.Execute.timeout = 300
c.Execute.interrupt_on_timeout = True
# nbgrader raises when a cell's output has not arrived 4 s (nbclient's default) after the cell
# finished; on a loaded grading machine an honest cell's last output can take longer, and
# the cell would count as failed. Seen in the browser tests' Validate at load 15.
c.Execute.iopub_timeout = 30

# What a student fills in. The stub raises, so an untouched release scores 0 and
# `nbgrader validate` fails on it.
c.ClearSolutions.code_stub = {"python": "# your code here\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A test cell a student deleted (or whose metadata they stripped) is put back from the
# gradebook and run, so it counts as failed instead of silently disappearing.
c.OverwriteCells.add_missing_cells = True
