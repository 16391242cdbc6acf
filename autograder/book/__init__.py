"""``course book``: the course as a static website, every chapter executed, for students to read.

The tool: **Sphinx with MyST-NB** (the ``sphinx-book-theme`` look), driven through Sphinx's
Python API, with executions kept by **jupyter-cache**. Compared for this course:

- *Jupyter Book 1* is this same stack (Sphinx + MyST-NB + sphinx-book-theme) behind a
  ``_config.yml``; it is in maintenance (the project moved to v2) and pins older Sphinx and
  MyST-NB releases. Plain Sphinx + MyST-NB gives the same pages, search and math with current
  releases and one configuration dict in Python, without a second configuration language.
- *Jupyter Book 2* (``mystmd``) is a Node.js program: its pip package needs Node (and offers
  to download it), and its HTML export renders with a site template that it downloads from
  the network on the first build; it does not build offline on a clean machine, and its
  execution cache and widget support are younger than MyST-NB's.
- What this course needs, in Sphinx + MyST-NB: an offline build (everything comes from pip);
  an execution cache (jupyter-cache, which MyST-NB itself uses for ``nb_execution_mode =
  "cache"``); math (MyST ``dollarmath``/``amsmath``, typeset by MathJax 3 served from the site
  itself, the files of ``sphinx-mathjax-offline``: no CDN, neither at build nor at view time);
  search (Sphinx's own, a JavaScript index in the site); widgets (in their static state, see
  :mod:`autograder.book.pages`). The browser test refuses every request that leaves the site.

MyST-NB executes notebooks itself in cache mode, but what it executes is what it shows: the
student's version cannot run (its stubs raise NotImplementedError) and the instructor's shows
solutions. So :mod:`autograder.book.pages` executes first, caching each executed notebook in
jupyter-cache, and hands MyST-NB finished pages (``nb_execution_mode = "off"``);
:mod:`autograder.book.site` writes the Sphinx project and builds it. The launch links are
written into each page by :mod:`autograder.book.launch` (sphinx-book-theme's own launch buttons
would open the page's notebook, not the student's version with Colab's install cell).
"""

from autograder.book.launch import Launch
from autograder.book.site import BookResult, build_book

__all__ = ["BookResult", "Launch", "build_book"]
