"""The `course` command."""

import subprocess
import sys


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "course.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "run" in out


def test_run_rejects_missing_notebook(tmp_path):
    from course.cli import main

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "source").mkdir()
    assert main(["run", "--root", str(tmp_path), str(tmp_path / "nope.ipynb")]) == 2
