"""MkDocs hooks for the documentation site (``hooks:`` in ``mkdocs.yml``).

The specification (``docs/spec/``) is published exactly as it was handed over, and a test
keeps its file byte-identical to the shared original. Its last section links three documents
of the project it came from, which this repository does not have; ``mkdocs build --strict``
would refuse those links. So, on specification pages only, a link to a page that is not part
of the site is rendered as its text and target in a code span. The file itself is not
changed; every other page keeps strict link checking.

Docstrings cross-reference in the Sphinx way (``:class:`~resumable.Progress```), which
Markdown leaves as text; the API page shows those as the plain name in code.

Two checks on every rendered page fail a strict build: a Returns or Yields table with a Name
column (a description that starts with ``word:`` is read as a value's name: ``checkpointed``
once rendered a return value named ``A``), and a cross-reference from a docstring or a
signature that lands anywhere but on an object of the package (a type such as ``list`` once
linked to the ``list`` command's heading).
"""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

_log = logging.getLogger("mkdocs.hooks.resumable")  # under "mkdocs": --strict counts it

_ROLE = re.compile(
    r":(?:class|func|meth|mod|data|attr|exc|obj):<code>(?P<tilde>~?)(?P<name>[\w.]+)</code>"
)
_NAMED = re.compile(
    r'doc-section-title">(?P<section>Returns|Yields):</span></p>\s*<table>\s*<thead>\s*<tr>\s*'
    r"<th>Name</th>"
)
_XREF = re.compile(r'<a class="autorefs autorefs-internal"[^>]*? href="(?P<href>[^"]*)"')
_LINK = re.compile(r"\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s#]+\.md)(?P<anchor>#[^)\s]*)?\)")


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Render the specification's links to documents this site lacks as plain text."""
    src = page.file.src_uri
    if not src.startswith("spec/"):
        return markdown

    def unlink(match: re.Match[str]) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(src), match["target"]))
        if files.get_file_from_path(target) is not None:
            return match[0]
        return f"{match['text']} (`{match['target']}`, not part of this repository)"

    return _LINK.sub(unlink, markdown)


def on_page_content(html: str, *, page: Any, config: Any, files: Any) -> str:
    """Show a docstring's Sphinx role as its target's name in code."""

    def name(match: re.Match[str]) -> str:
        target = match["name"].rsplit(".", 1)[-1] if match["tilde"] else match["name"]
        return f"<code>{target}</code>"

    return _ROLE.sub(name, html)


def on_post_page(output: str, *, page: Any, config: Any) -> str:
    """Warn of a Returns/Yields value given a name, and of a reference that left the package."""
    for match in _NAMED.finditer(output):
        _log.warning(
            "%s: a %s section names its value (a description starting with `word:`?)",
            page.file.src_uri, match["section"],
        )  # fmt: skip
    for match in _XREF.finditer(output):
        if "#resumable." not in match["href"]:
            _log.warning(
                "%s: a cross-reference leaves the package's objects: %s",
                page.file.src_uri, match["href"],
            )  # fmt: skip
    return output
