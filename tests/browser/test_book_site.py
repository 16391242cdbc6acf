"""The course as a website (`course book`): built once per test run, every page opened in
Chromium.

The build runs every chapter at the CI parameters (tests/notebook_params.yaml) through the same
code path as `course book`, whose default is full size; its jupyter-cache lives in
build/book-ci/, so a second run on the same checkout takes the executions from the cache.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import nbformat
import pytest
from filelock import FileLock

from autograder.book import Launch, build_book
from autograder.book.launch import COLAB_FOLDER
from autograder.book.pages import STUB_NOTE_CLASS
from autograder.book.site import chapter_runs, execute_chapters, graded_solutions
from autograder.store.release import assignments
from tests.browser.conftest import ROOT
from tests.pages import elements

CACHE = ROOT / "build" / "book-ci"
CHAPTERS = assignments(ROOT)


@pytest.fixture(scope="session")
def book_site(shared_dir):
    """The site, built once per run (first worker builds, the other waits): its html folder."""
    out = shared_dir / "book"
    with FileLock(shared_dir / "book.lock"):
        if not (out / "html" / "index.html").exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            with FileLock(CACHE / "lock"):  # another test run of this checkout
                if (CACHE / "jupyter_cache").exists():  # the executions of an earlier run
                    shutil.copytree(CACHE / "jupyter_cache", out / "jupyter_cache")
            result = build_book(ROOT, out, ci=True, jobs=1, gpu=False)
            assert not result.warnings, result.warnings
            with FileLock(CACHE / "lock"):
                shutil.rmtree(CACHE / "jupyter_cache", ignore_errors=True)
                shutil.copytree(out / "jupyter_cache", CACHE / "jupyter_cache")
    return out


@pytest.fixture(scope="session")
def served(book_site):
    """The site over HTTP on localhost, as a web server would serve it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book_site / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _solution_lines(chapter: str) -> set[str]:
    """Lines of the chapter's solutions and hidden tests that its release does not have."""
    def read(folder):
        return nbformat.read(ROOT / folder / chapter / f"{chapter}.ipynb", as_version=4)

    released = "\n".join(c.source for name in CHAPTERS  # any chapter's: not a secret
                         for c in nbformat.read(ROOT / "release" / name / f"{name}.ipynb",
                                                as_version=4).cells)
    secret, inside = set(), False
    for cell in read("source").cells:
        info = cell.metadata.get("nbgrader", {})
        for line in cell.source.splitlines():
            if re.search(r"### (BEGIN|END) (SOLUTION|HIDDEN TESTS)", line):
                inside = "BEGIN" in line
            elif inside or (info.get("solution") and cell.cell_type == "markdown"):
                secret.add(line.strip())
    return {s for s in secret if len(s) >= 20 and s not in released}


def _open(page, url: str) -> list[str]:
    """Load ``url``; what it asked for outside localhost (refused: the site is self-contained)."""
    outside = []

    def route(r):
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()

    page.page.route("**/*", route)
    page.page.goto(url, wait_until="networkidle")
    return outside


PAGE_FACTS = f"""() => ({{
  text: document.body.innerText,
  images: [...document.querySelectorAll('img')].map(i => [i.src, i.complete && i.naturalWidth > 0]),
  outputImages: document.querySelectorAll('.cell_output img').length,
  errors: document.querySelectorAll('.output.error, .output.traceback, .output.stderr').length,
  math: document.querySelectorAll('.math').length,
  mathjax: document.querySelectorAll('mjx-container').length,
  stubs: [...document.querySelectorAll('div.cell')]
    .filter(c => (c.querySelector('.cell_input') || {{}}).innerText
                 ?.includes('raise NotImplementedError'))
    .map(c => {{ let n = c.nextElementSibling;
                return !!n && n.classList.contains('{STUB_NOTE_CLASS}'); }}),
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
}})"""


def _figures(book_site: Path, chapter: str) -> int:
    nb = nbformat.read(book_site / "src" / f"{chapter}.ipynb", as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_a_chapter_page_in_chromium(book_site, served, page, chapter):
    outside = _open(page, f"{served}{chapter}.html")
    facts = page.page.evaluate(PAGE_FACTS)
    errors = [m for m in page.console if m.startswith(("[error]", "[pageerror]"))]
    assert not outside and not errors, (outside, errors)
    assert all(ok for _, ok in facts["images"]), [s for s, ok in facts["images"] if not ok]
    assert facts["outputImages"] == _figures(book_site, chapter) > 0
    assert facts["errors"] == 0 and "Traceback" not in facts["text"]
    assert "Loading widget" not in facts["text"] and "Error displaying widget" not in facts["text"]
    assert facts["stubs"] == [True] * len(facts["stubs"])  # every stub explained by its note
    assert "NotImplementedError" not in _outputs_text(book_site, chapter)
    secret = _solution_lines(chapter)
    source = nbformat.read(ROOT / "source" / chapter / f"{chapter}.ipynb", as_version=4)
    if any(c.metadata.get("nbgrader", {}).get("solution") for c in source.cells):
        assert secret and facts["stubs"]  # something to look for, and stubs to explain
    leaked = [s for s in secret if s in facts["text"] or s in _outputs_text(book_site, chapter)]
    assert not leaked, leaked[:5]
    claims = _claim_lines(book_site, chapter)  # the claim checks, shown
    assert claims and all(line in facts["text"] for line in claims) \
        or not any("claim." in c.source for c in source.cells if "nbgrader" not in c.metadata)
    if facts["math"]:
        assert facts["mathjax"] >= facts["math"]  # MathJax, from the site, typeset every formula
    _check_launch_links(book_site, chapter, facts["links"])


def _claim_lines(book_site: Path, chapter: str) -> list[str]:
    """The lines of the page's outputs that report a claim (course.claims: ✓ or ✗)."""
    return [line.strip() for line in "".join(_strings(json.loads(_outputs_text(
        book_site, chapter)))).splitlines() if line.startswith(("✓ ", "✗ "))]


def _outputs_text(book_site: Path, chapter: str) -> str:
    nb = nbformat.read(book_site / "src" / f"{chapter}.ipynb", as_version=4)
    return json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])


def _check_launch_links(book_site: Path, chapter: str, hrefs: list[str]) -> None:
    """The three launch links open release/<chapter>/<chapter>.ipynb, as the settings say."""
    launch, notebook = Launch.from_settings(), f"release/{chapter}/{chapter}.ipynb"
    assert (ROOT / notebook).is_file()
    hosts = {urlsplit(h).netloc: urlsplit(h) for h in hrefs if h.startswith("https://")}
    hub, binder = hosts[urlsplit(launch.hub).netloc], hosts[urlsplit(launch.binder).netloc]
    colab = hosts["colab.research.google.com"]
    repo = launch.owner_and_name
    assert hub.path == "/hub/user-redirect/git-pull"
    assert parse_qs(hub.query) == {"repo": [launch.repository], "branch": [launch.branch],
                                   "urlpath": [f"lab/tree/{repo.split('/')[1]}/{notebook}"]}
    assert binder.path == f"/v2/gh/{repo}/{launch.branch}"
    assert parse_qs(binder.query) == {"urlpath": [f"lab/tree/{notebook}"]}
    assert colab.path == f"/github/{repo}/blob/{launch.pages_branch}/{COLAB_FOLDER}/{chapter}.ipynb"
    copy = nbformat.read(book_site / "html" / COLAB_FOLDER / f"{chapter}.ipynb", as_version=4)
    assert copy.cells[0].source.splitlines()[-1].startswith("%pip install")
    assert not any(c.get("outputs") for c in copy.cells)


def test_every_other_page_in_chromium(book_site, served, page):
    for html in sorted((book_site / "html").glob("*.html")):
        if html.stem in CHAPTERS:
            continue
        page.console.clear()
        outside = _open(page, f"{served}{html.name}")
        errors = [m for m in page.console if m.startswith(("[error]", "[pageerror]"))]
        assert not outside and not errors, (html.name, outside, errors)
    glossary = page.page.goto(f"{served}glossary.html")
    assert glossary.ok and "용어집" in page.page.inner_text("body")
    page.page.goto(f"{served}search.html?q=dropout", wait_until="networkidle")
    page.page.wait_for_selector("ul.search li a", timeout=30_000)  # the site's own index
    found = page.page.eval_on_selector_all("ul.search li a", "els => els.map(a => a.href)")
    assert any(url.endswith("05_regularization.html") for url in found), found


def test_every_internal_link_resolves(book_site):
    html_dir = book_site / "html"
    pages = sorted(html_dir.glob("*.html"))
    assert {p.stem for p in pages} >= {"index", "glossary", *CHAPTERS}
    ids = {p.name: {e.attrib["id"] for e in elements(p.read_text(encoding="utf-8"))
                    if "id" in e.attrib} for p in pages}
    broken = []
    for p in pages:
        for el in elements(p.read_text(encoding="utf-8")):
            href = el.attrib.get("href") if el.tag == "a" else None
            if not href or urlsplit(href).scheme or href.startswith("//"):
                continue
            target = urlsplit(urljoin(f"/{p.name}", href))
            path = html_dir / unquote(target.path).lstrip("/")
            if not path.is_file():
                broken.append((p.name, href))
            elif target.fragment and path.suffix == ".html" and path.name in ids \
                    and unquote(target.fragment) not in ids[path.name]:
                broken.append((p.name, href))
    assert not broken, broken[:10]
    for chapter in CHAPTERS:  # each chapter links to the glossary
        assert 'href="glossary.html"' in (html_dir / f"{chapter}.html").read_text("utf-8")


def test_a_one_chapter_change_runs_that_chapter_only(book_site, tmp_path):
    """The cache the site was built from, on a copy of the course where chapter 1 changed."""
    root = tmp_path / "course"
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "notebook_params.yaml", root / "tests")
    for folder in ("source", "release"):
        path = root / folder / "01_metrics" / "01_metrics.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code" and "nbgrader" not in c.metadata
                    and "parameters" not in c.metadata.get("tags", []))
        cell.source += "\nprint('a one-chapter change')"
        nbformat.write(nb, path)
    shutil.copytree(book_site / "jupyter_cache", tmp_path / "cache")
    keep = graded_solutions(ROOT)
    runs = chapter_runs(root, CHAPTERS, ci=True, gpu=False)
    executed, results = execute_chapters(root, runs, keep, tmp_path / "cache", jobs=1)
    assert {r.chapter: r.status for r in results} == {
        c: "executed" if c == "01_metrics" else "cached" for c in CHAPTERS}
    assert "a one-chapter change" in json.dumps(executed["01_metrics"])


def test_no_file_of_the_site_holds_a_solution(book_site):
    """Not the pages only: the search index, the page sources offered for download, Colab's
    copies."""
    secret = set().union(*(_solution_lines(c) for c in CHAPTERS))
    assert secret
    found = []
    for path in (book_site / "html").rglob("*"):
        if path.is_file() and path.suffix in {".html", ".js", ".txt", ".ipynb", ".json"} \
                and "_static" not in path.parts:
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix in {".ipynb", ".json"}:  # the strings, unescaped
                text = "\n".join(_strings(json.loads(text)))
            found += [(path.name, s) for s in secret if s in text]
    assert not found, found[:5]


def _strings(value) -> list[str]:
    """Every string in a JSON value (iteratively, lines of a list joined)."""
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            if all(isinstance(x, str) for x in item):
                out.append("".join(item))
            else:
                stack.extend(item)
    return out
