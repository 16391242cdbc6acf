"""Build the site: execute (or take from the cache) every chapter, write the pages, run Sphinx.

Layout of ``out`` (default build/book/, ignored by git with the rest of build/)::

    jupyter_cache/   executed notebooks (jupyter-cache), keyed on their code and parameters
    src/             the Sphinx project: index.md, glossary.md, <chapter>.ipynb (pages)
    extra/_colab/    Colab's copies of the student notebooks (copied verbatim into the site)
    doctrees/        Sphinx's environment: a rebuild re-reads only the pages that changed
    html/            the site; open html/index.html
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.book.launch import COLAB_FOLDER, Launch, colab_notebook
from autograder.book.pages import (
    ChapterRun,
    dumps,
    execute,
    execution_notebook,
    page_notebook,
    relink,
)

__all__ = ["BookResult", "ChapterFailed", "ChapterResult", "build_book", "chapter_runs",
           "execute_chapters", "graded_solutions", "sphinx_config"]

TITLE = "Tuning deep-learning classifiers"
FULL = "at its full-size defaults, every claim enforced"
CI = ("at the small CI parameters of tests/notebook_params.yaml (the cell after the parameters "
      "shows them): too small to show the effects the text states, so its claims are reported "
      "here, not enforced")
CPU_SIZE = ("at its CPU size, as no GPU was found where this book was built: the small "
            "parameters of tests/notebook_params.yaml (the cell after the parameters shows "
            "them), ResNet18 on random CIFAR-format images, so its numbers say nothing about "
            "CIFAR-10; built on a GPU with the CIFAR-10 files in data/, the page runs at full size")
GPU_CHAPTER = "07_cifar10_project"


@dataclass
class ChapterResult:
    chapter: str
    status: str  # "executed" or "cached"
    seconds: float
    size: str
    label: str


@dataclass
class BookResult:
    html: Path
    chapters: list[ChapterResult] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def chapter_runs(root: Path, chapters: list[str], *, ci: bool, gpu: bool) -> list[ChapterRun]:
    """How each chapter runs: its defaults, or the CI parameters (``ci``, or chapter 7 without
    a GPU: its CPU size)."""
    from course.notebooks import CI_CELL_LIMIT, ci_parameters

    params = ci_parameters(root)
    runs = []
    for chapter in chapters:
        small = params.get(f"source/{chapter}/{chapter}.ipynb")
        if ci or (chapter == GPU_CHAPTER and not gpu):
            if small is None:
                raise KeyError(f"source/{chapter}/{chapter}.ipynb has no CI parameters")
            size, label = ("CI parameters", CI) if ci else ("CPU size", CPU_SIZE)
            runs.append(ChapterRun(chapter, small, size, label, CI_CELL_LIMIT))
        else:
            runs.append(ChapterRun(chapter, {}, "full size", FULL))
    return runs


class ChapterFailed(RuntimeError):
    """A chapter stopped with an error (a claim that does not hold at full size, a bug)."""


def _run(args) -> tuple[str, float]:
    """Execute one prepared notebook (in a worker process); its JSON and the seconds it took."""
    text, cwd, timeout = args
    start = time.perf_counter()
    try:
        nb = execute(nbformat.reads(text, as_version=4), Path(cwd), {}, timeout)
    except Exception as err:  # papermill's PapermillExecutionError names the cell
        detail = getattr(err, "evalue", None) or str(err).strip().splitlines()[-1]
        raise ChapterFailed(f"{Path(cwd).name} failed: {detail[:300]}") from None
    return nbformat.writes(nb), time.perf_counter() - start


def _prepared(root: Path, run: ChapterRun, keep: set[str]):
    """What runs for ``run``'s page, its parameters injected by papermill (not yet run)."""
    import papermill as pm

    nb = execution_notebook(*(nbformat.read(root / folder / run.chapter / f"{run.chapter}.ipynb",
                                            as_version=4) for folder in ("source", "release")),
                            keep)
    return pm.execute_notebook(nb, None, parameters=run.parameters, prepare_only=True,
                               progress_bar=False, log_output=False)


def execute_chapters(root: Path, runs: list[ChapterRun], keep: dict[str, set[str]],
                     cache_dir: Path, jobs: int) -> tuple[dict, list[ChapterResult]]:
    """{chapter: executed notebook}, from the cache where it has the same code, else run."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_dir)
    executed, missing, results = {}, [], {}
    for run in runs:
        nb = _prepared(root, run, keep.get(run.chapter, set()))
        try:
            _, executed[run.chapter] = cache.merge_match_into_notebook(nb)
            results[run.chapter] = ChapterResult(run.chapter, "cached", 0.0, run.size, run.label)
        except KeyError:
            missing.append((run, nb))
    tasks = [(nbformat.writes(nb), str(root / "source" / run.chapter), run.timeout)
             for run, nb in missing]
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(_run, tasks))
    else:
        done = [_run(t) for t in tasks]
    for (run, prepared), (text, seconds) in zip(missing, done, strict=True):
        nb = nbformat.reads(text, as_version=4)
        # jupyter-cache keys on the code and the metadata of every cell; papermill adds
        # timings to the metadata, so the executed cells get back what they were run from
        for cell, before in zip(nb.cells, prepared.cells, strict=True):
            cell.metadata = before.metadata
        cache.cache_notebook_bundle(CacheBundleIn(nb, f"source/{run.chapter}/{run.chapter}.ipynb"),
                                    check_validity=False, overwrite=True)
        executed[run.chapter] = nb
        results[run.chapter] = ChapterResult(run.chapter, "executed", seconds, run.size,
                                              run.label)
    return executed, [results[r.chapter] for r in runs]


def _write_if_changed(path: Path, text: str) -> None:
    """Sphinx re-reads a page whose file changed: leave unchanged pages untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _index(chapters: list[ChapterResult], titles: dict[str, str]) -> str:
    rows = "\n".join(f"| [{titles[c.chapter]}]({c.chapter}.ipynb) | executed {c.label} |"
                     for c in chapters)
    toc = "\n".join(f"{c.chapter}.ipynb" for c in chapters)
    return (f"# {TITLE}\n\nA seven-chapter course on *tuning* deep-learning classifiers. Each "
            "page is a chapter's notebook as students get it, executed: read it here, then "
            "open it in JupyterLab from the links at its top. Every key term in both "
            "languages: the [glossary (용어집)](glossary.md).\n\n| chapter | this page |\n"
            f"|---|---|\n{rows}\n\n```{{toctree}}\n:maxdepth: 1\n:caption: Chapters\n\n{toc}\n"
            "glossary.md\n```\n")


def sphinx_config(root: Path, extra: Path) -> dict:
    """Sphinx's configuration (there is no conf.py: Sphinx takes these as overrides)."""
    return {
        "project": TITLE, "author": "the course's authors", "root_doc": "index",
        "extensions": ["myst_nb", "sphinx-mathjax-offline"],
        "html_theme": "sphinx_book_theme", "html_title": TITLE,
        "html_theme_options": {"home_page_in_toc": True, "show_navbar_depth": 1},
        # without it, pydata-sphinx-theme logs a console error on a first visit ("invalid
        # theme mode")
        "html_context": {"default_mode": "light"},
        "html_extra_path": [str(extra)],
        "nb_execution_mode": "off",  # executed by autograder.book.pages, cached there
        "nb_merge_streams": True,
        "myst_enable_extensions": ["dollarmath", "amsmath"],
        "myst_heading_anchors": 3,
        "exclude_patterns": ["**/.ipynb_checkpoints"],
        "language": "en",
    }


def write_sources(root: Path, out: Path, executed: dict, results: list[ChapterResult],
                  keep: dict[str, set[str]], launch: Launch) -> None:
    """The Sphinx project in out/src and Colab's notebooks in out/extra/_colab."""
    titles = {}
    pages = {"GLOSSARY.md": "glossary.md"}
    pages.update({f"{folder}/{r.chapter}/{r.chapter}.ipynb": f"{r.chapter}.ipynb"
                  for r in results for folder in ("release", "source")})
    blob = f"{launch.repository}/blob/{launch.branch}"
    for result in results:
        chapter = result.chapter
        release_nb = nbformat.read(root / "release" / chapter / f"{chapter}.ipynb",
                                   as_version=4)
        page = page_notebook(executed[chapter], release_nb, keep.get(chapter, set()),
                             links=launch.links(chapter), label=result.label)
        page = relink(page, chapter, blob, pages)
        titles[chapter] = page.cells[0].source.splitlines()[0].lstrip("# ").strip()
        _write_if_changed(out / "src" / f"{chapter}.ipynb", dumps(page))
        _write_if_changed(out / "extra" / COLAB_FOLDER / f"{chapter}.ipynb",
                          dumps(colab_notebook(release_nb, launch)))
    glossary = (root / "GLOSSARY.md").read_text(encoding="utf-8")
    _write_if_changed(out / "src" / "glossary.md", glossary)
    _write_if_changed(out / "src" / "index.md", _index(results, titles))


def run_sphinx(root: Path, out: Path, jobs: int) -> list[str]:
    """Build out/src into out/html; Sphinx's warnings."""
    import io

    from sphinx.application import Sphinx

    status, warnings = io.StringIO(), io.StringIO()
    app = Sphinx(str(out / "src"), None, str(out / "html"), str(out / "doctrees"), "html",
                 confoverrides=sphinx_config(root, out / "extra"), status=status,
                 warning=warnings, parallel=max(1, jobs))
    app.build()
    if app.statuscode:
        raise RuntimeError(f"Sphinx failed:\n{warnings.getvalue()[-3000:]}")
    return [line for line in warnings.getvalue().splitlines() if line.strip()]


def graded_solutions(root: Path) -> dict[str, set[str]]:
    """{chapter: grade_ids of its graded exercises' solution cells} (autograder/exercises/)."""
    from autograder.exercises import registry

    keep: dict[str, set[str]] = {}
    for graded in registry(root).values():
        keep.setdefault(graded.assignment, set()).add(graded.solution_id)
    return keep


def build_book(root: Path, out: Path, *, ci: bool = False, jobs: int = 1,
               launch: Launch | None = None, gpu: bool | None = None) -> BookResult:
    """Build the site into ``out``/html: every chapter at full size (``ci``: CI parameters)."""
    from autograder.store.release import assignments

    start = time.perf_counter()
    logging.getLogger("papermill").setLevel(logging.WARNING)  # one INFO line per notebook
    root, out = Path(root).resolve(), Path(out).resolve()
    launch = launch or Launch.from_settings()
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    keep = graded_solutions(root)
    runs = chapter_runs(root, assignments(root), ci=ci, gpu=gpu)
    executed, results = execute_chapters(root, runs, keep, out / "jupyter_cache", jobs)
    write_sources(root, out, executed, results, keep, launch)
    from course.notebooks import stderr_outputs

    warnings = [f"{chapter} wrote to stderr: {text.strip()[:200]}"
                for chapter, nb in executed.items() for text in stderr_outputs(nb)]
    warnings += run_sphinx(root, out, jobs)
    return BookResult(out / "html", results, time.perf_counter() - start, warnings)
