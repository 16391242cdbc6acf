"""course.lean_imports: nbformat without rfc3987_syntax still validates notebooks."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from course.lean_imports import skip_unused_format_checkers
skip_unused_format_checkers()
import nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
nbformat.validate(nb)
nb.cells[0]["cell_type"] = "not-a-cell-type"
try:
    nbformat.validate(nb)
except nbformat.ValidationError:
    print("invalid notebook refused")
print("rfc3987_syntax loaded:", sys.modules.get("rfc3987_syntax") is not None)
"""


def test_nbformat_validates_without_the_slow_optional_import():
    notebook = ROOT / "release" / "01_metrics" / "01_metrics.ipynb"
    out = subprocess.run([sys.executable, "-c", CHECK, str(notebook)], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines() == ["invalid notebook refused", "rfc3987_syntax loaded: False"]
