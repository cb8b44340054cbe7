"""The documents' result tables, spliced from the tables the study wrote.

A table in a document of ``docs/`` sits between two markers, each at the start of a line::

    <!-- table: claims -->
    ...the text of results/tables/claims.md...
    <!-- /table -->

``python -m qrepro readme`` (``make readme``) replaces every such block of the documents in ``DOCUMENTS`` (or of
the one ``--readme`` names) with the current ``tables/<name>.md``, where a name may go through folders
(``fmnist-resnet18/trial_claims``: a study that writes its tables beside the others, ``StudyConfig.tables``);
``--check`` only says which blocks differ (exit 1), so a test can keep the documents and the committed cache from
drifting apart.  The prose around the tables is written by hand, from the same numbers.
"""
from __future__ import annotations

import re
from pathlib import Path

from .cache import write_text_atomic
from .errors import BadInput
from .paths import REPO_ROOT, require_source_tree, tables_dir

DOCUMENTS = ("docs/results.md", "docs/study-v2.md")  # the source tree's documents with table blocks

# markers start a line (a marker quoted inside a sentence is text, not a block); a name is a path under tables/ of
# letters, digits, _ and - (no dots: it cannot leave the tables folder)
BLOCK = re.compile(r"^(<!-- table: (?P<name>[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*) -->\n)(?P<body>.*?)^(<!-- /table -->)",
                   re.S | re.M)
OPEN = re.compile(r"^<!-- table:", re.M)


def table_blocks(text: str) -> dict[str, str]:
    """``{table name: text between its markers}`` of every marked block in ``text``."""
    blocks = {}
    for m in BLOCK.finditer(text):
        if m["name"] in blocks:
            raise BadInput(f"the document marks table {m['name']!r} twice; keep one <!-- table: {m['name']} --> block")
        blocks[m["name"]] = m["body"]
    unclosed = len(OPEN.findall(text)) - len(blocks)
    if unclosed:
        raise BadInput(f"the document has {unclosed} '<!-- table: NAME -->' marker(s) without a matching "
                       "'<!-- /table -->' on a later line (or with a name other than letters, digits, _, - and /); "
                       "close each block")
    return blocks


def _table_text(name: str, root) -> str:
    path = tables_dir(root) / f"{name}.md"
    if not path.is_file():
        raise BadInput(f"the document shows table {name!r} but {path} does not exist; build it with "
                       f"python -m qrepro study --stages tables --results {tables_dir(root).parent}, "
                       "or remove the block")
    return path.read_text()


def sync_readme(root, readme: str | Path, check: bool = False) -> list[str]:
    """The names of ``readme``'s table blocks that differ from ``tables/<name>.md`` under ``root``; unless
    ``check``, those blocks are rewritten (atomically; the rest of the file is kept)."""
    readme = Path(readme)
    if not readme.is_file():
        raise BadInput(f"{readme} does not exist; pass the document to update with --readme")
    text = readme.read_text()
    blocks = table_blocks(text)
    current = {name: _table_text(name, root) for name in blocks}
    changed = [name for name, body in blocks.items() if body != current[name]]
    if changed and not check:
        write_text_atomic(readme, BLOCK.sub(lambda m: m.group(1) + current[m["name"]] + m.group(4), text))
    return changed


def sync_documents(root=None, check: bool = False) -> dict[str, list[str]]:
    """``{document: its blocks that differ}`` for every document of ``DOCUMENTS`` (see :func:`sync_readme`)."""
    require_source_tree("docs/ (or pass --readme FILE)")
    return {doc: sync_readme(root, REPO_ROOT / doc, check) for doc in DOCUMENTS}
