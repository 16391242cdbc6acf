"""JupyterHub for the course's students, with nbgrader's Assignments tab (autograder/README.md,
"Channels"). As root, with the course's environment activated, in a folder of the hub's own
(its database and cookie secret go there)::

    jupyterhub -f /path/to/autograder/jupyterhub_config.py

Students log in with their unix account and password (PAM); members of the unix group
COURSE_HUB_GROUP (default ``students``) may. Each one's JupyterLab runs as them, in their home,
from the hub's environment: install that environment where every student can read it (e.g.
/opt/dl-tuning/.venv, not under /root). nbgrader's server extensions, which the environment's
etc/jupyter enables, give them the Assignments tab (Nbgrader > Assignments); their nbgrader
finds the exchange in /etc/jupyter/nbgrader_config.py, the same folder as the course's
autograder/nbgrader_config.py::

    c = get_config()
    c.Exchange.root = "/srv/nbgrader/exchange"

The hub listens on http://127.0.0.1:8000 (COURSE_HUB_URL overrides it): put a TLS reverse proxy
in front of it, as JupyterHub's documentation shows, or set COURSE_HUB_URL to an https:// address
and add c.JupyterHub.ssl_cert and c.JupyterHub.ssl_key. Its proxy, configurable-http-proxy,
comes from npm (scripts/setup-system.sh installs it).

tests/browser/test_jupyterhub.py runs this file; what only the test needs (free ports, the
interpreter a student account can reach, its own exchange) it sets in a second file that
loads this one.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 (injected by traitlets when it loads this file)

c.JupyterHub.bind_url = os.environ.get("COURSE_HUB_URL", "http://127.0.0.1:8000")

# JupyterHub's default authenticator, said aloud: the students' unix passwords. Without an
# allowed group nobody could log in (JupyterHub 5 allows no one by default).
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {os.environ.get("COURSE_HUB_GROUP", "students")}

# Each student's server is a process of their own account (the exchange's timestamp.txt, and
# the exchange's permissions, rely on it).
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.default_url = "/lab"
# A student's JupyterLab takes a while to start on a machine busy grading.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# What the environment's nbgrader enables for everyone, less the instructor's parts: students
# keep the Assignments tab and Validate; formgrader, the course list and the Create Assignment
# sidebar are turned off (nbgrader's docs, "Installation": disable them for students). A
# folder on JUPYTER_CONFIG_PATH outranks the environment's own etc/jupyter.
c.Spawner.environment = {"JUPYTER_CONFIG_PATH": str(Path(__file__).resolve().parent
                                                    / "hub_students")}
