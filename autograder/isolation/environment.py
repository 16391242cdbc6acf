"""The environment of every sandboxed command, and of the zygotes that fork them (preload.py).

One builder, so that a command forked from a zygote sees what one that bubblewrap started
sees. Modules read some variables once, as they are imported (torch and OpenBLAS size their
thread pools from ``OMP_NUM_THREADS``, matplotlib picks its backend and caches its config
folder): a fork keeps what its zygote read, so those variables (``IMPORT_TIME``) are the same
for the zygote and every command, and a caller may not change them. The others are per
command (``HOME`` is the work folder) or added by the caller with ``extra``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["IMPORT_TIME", "packages_mismatch", "sandbox_env"]

# the same for every zygote and every command (nothing of the instructor's environment)
IMPORT_TIME = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "JUPYTER_PLATFORM_DIRS": "1",  # silences jupyter_core's deprecation warning
    "OMP_NUM_THREADS": "1",  # commands run side by side: one core each
    "MKL_NUM_THREADS": "1",
    "COURSE_PROGRESS": "0",
}
# read when they are used: a caller may put them elsewhere (the nbgrader step: in its folder)
_DEFAULTS = {
    "IPYTHONDIR": "/tmp/ipython",
    "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
    "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
}


def sandbox_env(workdir, extra: dict | None = None) -> dict[str, str]:
    """The environment of a command whose work folder (``HOME``, ``PWD``) is ``workdir``, with the
    variables ``extra`` adds. Raises ValueError where ``extra`` would change one of
    ``IMPORT_TIME`` (a preloaded command would not see the change)."""
    env = {**IMPORT_TIME, **_DEFAULTS, "HOME": str(workdir), "PWD": str(workdir)}
    for name, value in (extra or {}).items():
        name, value = str(name), str(value)
        if name in IMPORT_TIME and value != IMPORT_TIME[name]:
            raise ValueError(f"{name} is read as modules are imported: the same for every "
                             "sandboxed command (autograder/isolation/environment.py)")
        env[name] = value
    return env


def packages_mismatch() -> str:
    """Why the commands the grader starts would import another ``autograder`` or ``course``
    than this process ("" when they import the same).

    Every sandboxed command is a new ``python -I`` (or a fork of one), which imports the
    installed packages; ``python -m autograder.cli`` run in a folder that holds its own copy
    puts that copy first on this process's path. The two halves would then disagree, and the
    sandboxed half fails without a word the grader may trust (its output is the student's)."""
    import autograder
    import course

    ours = [str(Path(m.__file__).resolve().parent) for m in (autograder, course)]
    probe = subprocess.run(
        [sys.executable, "-I", "-c", "import autograder, course, pathlib; print("
         "pathlib.Path(autograder.__file__).resolve().parent); print(pathlib.Path("
         "course.__file__).resolve().parent)"],
        cwd="/", env=sandbox_env("/tmp"), capture_output=True, text=True, timeout=60,
        check=False)
    theirs = probe.stdout.split("\n")[:2]
    if probe.returncode == 0 and theirs == ours:
        return ""
    seen = (f"imports them from {', '.join(theirs)}" if probe.returncode == 0 else
            f"cannot import them ({(probe.stderr.strip().splitlines() or ['?'])[-1][:200]})")
    return (f"this command runs the grader from {', '.join(ours)}, but a new Python of this "
            f"environment (what grades in the sandbox) {seen}. Run the installed `course` "
            "command, or `python -m autograder.cli` from a folder without its own autograder/ "
            f"and course/, or install this copy: pip install -e {Path(ours[0]).parent}")
