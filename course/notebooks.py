"""Execute the course notebooks headlessly with papermill and export them to HTML.

CI runs every notebook with the small parameters of ``tests/notebook_params.yaml``
(papermill's ``-f`` format: ``{notebook path: {name: value}}``); a plain run uses each
notebook's own defaults, the full lesson.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["RunResult", "find_root", "discover", "ci_parameters", "execute_once", "run_notebook",
           "run_notebooks", "stderr_outputs", "CI_CELL_LIMIT"]

CI_PARAMS = Path("tests/notebook_params.yaml")
# Seconds any one cell may take at the CI parameters (the slowest takes a few seconds; a loaded
# machine stretches that several times). The limit is also what ends a run that ipykernel 7
# leaves waiting: now and then a request lands on its shell socket unseen, the kernel stays
# idle and the client waits for a reply that never comes (ipython/ipykernel#1554; seen in our
# CI on the chapter-1 widget cell, 25 minutes and counting). run_notebook then runs it again.
CI_CELL_LIMIT = 300


@dataclass
class RunResult:
    notebook: str
    status: str  # "ok", "failed" or "stderr" (ran, but wrote to stderr)
    seconds: float
    detail: str = ""


def find_root(start: Path | None = None) -> Path:
    """The course repository root: the nearest folder upwards holding pyproject.toml and source/."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "source").is_dir():
            return folder
    raise FileNotFoundError(f"no course repository (pyproject.toml beside source/) at or above "
                            f"{here}; run from inside the repository or pass --root")


def discover(root: Path) -> list[Path]:
    """Every instructor notebook: source/<chapter>/<name>.ipynb, in chapter order."""
    return sorted(p for p in (root / "source").glob("*/*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def ci_parameters(root: Path) -> dict[str, dict]:
    """The CI parameters of every notebook, keyed by path relative to the root."""
    path = root / CI_PARAMS
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def stderr_outputs(nb) -> list[str]:
    """Text of every stderr stream output in an executed notebook."""
    return ["".join(out.get("text", "")) for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", [])
            if out.get("output_type") == "stream" and out.get("name") == "stderr"]


def run_notebook(path: Path, out_dir: Path, parameters: dict | None = None,
                 timeout: int | None = None, html: bool = True) -> RunResult:
    """Execute one notebook in its own folder; write the executed copy (and HTML) to out_dir.

    ``timeout``: seconds per cell (None: no limit). A run that reaches it is run once more
    from the start (see CI_CELL_LIMIT: a kernel that lost a request looks like a slow cell).
    """
    result = execute_once(path, out_dir, parameters, timeout, html)
    if timeout is not None and result.status == "failed" and "timed out" in result.detail:
        result = execute_once(path, out_dir, parameters, timeout, html)
    return result


def execute_once(path: Path, out_dir: Path, parameters: dict | None, timeout: int | None,
                 html: bool) -> RunResult:
    """One execution of ``path`` (``run_notebook`` retries a timed-out one)."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    os.environ["COURSE_PROGRESS"] = "0"  # the kernel inherits it: no progress bars in a batch run
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(output), parameters=parameters or {},
                            cwd=str(path.parent), progress_bar=False, log_output=False,
                            execution_timeout=timeout,
                            # the kernel's own log (e.g. ipykernel's warning about unencrypted
                            # local TCP) would land on our terminal; errors still show
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
        detail = getattr(err, "evalue", None) or str(err).strip().splitlines()[-1]
        return RunResult(path.name, "failed", time.perf_counter() - start, detail[:300])
    seconds = time.perf_counter() - start
    nb = nbformat.read(output, as_version=4)
    if html:
        body, _ = HTMLExporter().from_notebook_node(nb)
        output.with_suffix(".html").write_text(body, encoding="utf-8")
    errors = stderr_outputs(nb)
    if errors:
        return RunResult(path.name, "stderr", seconds, errors[0].strip()[:300])
    return RunResult(path.name, "ok", seconds)


def _run_one(args):
    return run_notebook(*args)


def run_notebooks(root: Path, notebooks: list[Path], *, ci: bool, out_dir: Path,
                  jobs: int = 1, timeout: int | None = None) -> list[RunResult]:
    """Execute ``notebooks`` (CI parameters when ``ci``), ``jobs`` at a time; ``timeout``
    seconds per cell (default: CI_CELL_LIMIT with ``ci``, else none)."""
    params = ci_parameters(root) if ci else {}
    if ci and timeout is None:
        timeout = CI_CELL_LIMIT
    tasks = []
    for nb in notebooks:
        rel = nb.resolve().relative_to(root).as_posix()
        if ci and rel not in params:
            raise KeyError(f"{rel} has no entry in {CI_PARAMS}; add its small CI parameters there")
        tasks.append((nb, out_dir / nb.parent.name, params.get(rel, {}), timeout))
    if jobs <= 1:
        return [_run_one(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_run_one, tasks))
