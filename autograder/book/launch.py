"""The launch links of a chapter page: a JupyterHub through nbgitpuller, Binder and Colab.

Every link opens the student's version, ``release/<chapter>/<chapter>.ipynb`` of the course's
public repository. The settings are in ``autograder/book.yaml`` (beside deadlines.yaml) and
can be overridden on the command line (``course book --help``):

- ``repository``: the public repository that holds release/ (an https git URL);
- ``branch``: its branch that JupyterHub and Binder check out;
- ``hub``: the JupyterHub's URL (nbgitpuller must be installed there);
- ``binder``: the BinderHub (mybinder.org; it builds ``environment.yml`` of the repository);
- ``pages_branch``: the branch the built site is published on (GitHub Pages). Colab opens
  notebooks from GitHub only, so the site carries ``_colab/<chapter>.ipynb``, the student's
  version with a first cell that installs the ``course`` package, and Colab opens that copy;
- ``install``: what that cell gives pip (default ``git+<repository>@<branch>``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import yaml

__all__ = ["Launch", "COLAB_FOLDER", "SETTINGS", "colab_notebook"]

COLAB_FOLDER = "_colab"
SETTINGS = Path(__file__).resolve().parent.parent / "book.yaml"


@dataclass(frozen=True)
class Launch:
    repository: str = "https://github.com/dl-tuning-course/dl-tuning-course"
    branch: str = "main"
    hub: str = "https://hub.example.edu"
    binder: str = "https://mybinder.org"
    pages_branch: str = "gh-pages"
    install: str = ""

    @classmethod
    def from_settings(cls, path: Path = SETTINGS, **overrides) -> Launch:
        """The settings of ``path`` (autograder/book.yaml), then ``overrides`` not None."""
        saved = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {} \
            if Path(path).exists() else {}
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path} has unknown settings: {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(cls(), **{**saved, **given})

    @property
    def owner_and_name(self) -> str:
        """``owner/name`` of a GitHub repository URL."""
        parts = urlsplit(self.repository)
        path = parts.path.strip("/").removesuffix(".git")
        if parts.scheme != "https" or parts.netloc != "github.com" or path.count("/") != 1:
            raise ValueError(f"repository {self.repository!r} is not https://github.com/OWNER/NAME"
                             " (Binder and Colab open GitHub repositories)")
        return path

    @property
    def pip_spec(self) -> str:
        return self.install or f"git+{self.repository}@{self.branch}"

    def links(self, chapter: str) -> dict[str, str]:
        """{label: URL} for ``release/<chapter>/<chapter>.ipynb``."""
        notebook = f"release/{chapter}/{chapter}.ipynb"
        repo_dir = self.owner_and_name.split("/")[1]
        hub = f"{self.hub.rstrip('/')}/hub/user-redirect/git-pull?" + urlencode(
            {"repo": self.repository, "branch": self.branch,
             "urlpath": f"lab/tree/{repo_dir}/{notebook}"})
        binder = (f"{self.binder.rstrip('/')}/v2/gh/{self.owner_and_name}/"
                  f"{quote(self.branch, safe='')}?"
                  + urlencode({"urlpath": f"lab/tree/{notebook}"}))
        colab = (f"https://colab.research.google.com/github/{self.owner_and_name}/blob/"
                 f"{self.pages_branch}/{COLAB_FOLDER}/{chapter}.ipynb")
        return {"JupyterHub": hub, "Binder": binder, "Colab": colab}


def colab_notebook(release_nb, launch: Launch):
    """A copy of the student's notebook whose first cell installs the ``course`` package."""
    import copy

    import nbformat

    nb = copy.deepcopy(release_nb)
    install = nbformat.v4.new_code_cell(
        "# Colab: install the course package (this repository) first, then run the chapter\n"
        f"%pip install --quiet \"{launch.pip_spec}\"")
    install.metadata["tags"] = ["colab-install"]
    nb.cells.insert(0, install)
    return nb
