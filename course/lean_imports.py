"""Leave out an import that costs about a second in every process that reads a notebook.

``nbformat`` imports ``jsonschema``, whose ``_format`` module imports ``rfc3987_syntax`` when it
is installed (``jsonschema[format-nongpl]``, which jupyter-events asks for); that module builds
some 35 Lark parsers as it is imported, 1.2 s on one of our cores, to check the ``iri`` and
``iri-reference`` formats. Nothing here validates with a format checker (nbformat, nbconvert and
nbgrader never pass one), so the processes ``course`` starts for every student (the sandboxed
nbgrader step) and the ``course`` command itself mark that module as missing; jsonschema then
leaves those two checkers out (its import is optional). Upstream:
python-jsonschema/jsonschema#1428 (lazy import) and #1392 (the checkers' speed).
"""

from __future__ import annotations

import sys

__all__ = ["skip_unused_format_checkers"]


def skip_unused_format_checkers() -> None:
    """Before nbformat is first imported: ``import rfc3987_syntax`` raises ImportError here."""
    sys.modules.setdefault("rfc3987_syntax", None)
