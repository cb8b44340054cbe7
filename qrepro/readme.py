"""The documents' result tables, spliced from the tables the study wrote.

A table in the README or a document of ``docs/`` sits between two markers, each at the start of a line::

    <!-- table: claims -->
    ...the text of results/tables/claims.md...
    <!-- /table -->

A marker may name columns (``<!-- table: claims columns: model, verdict -->``): the block then shows those
columns of the table, in that order, without the table's note, so a narrow page can show a wide table.

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

DOCUMENTS = ("README.md", "docs/results.md", "docs/study-v2.md")  # the source tree's documents with table blocks

# markers start a line (a marker quoted inside a sentence is text, not a block); a name is a path under tables/ of
# letters, digits, _ and - (no dots: it cannot leave the tables folder); columns: a table's column names, by commas
BLOCK = re.compile(r"^(<!-- table: (?P<spec>(?P<name>[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*)"
                   r"(?: columns: (?P<columns>[^,<>\n]+(?:, [^,<>\n]+)*))?) -->\n)"
                   r"(?P<body>.*?)^(?P<end><!-- /table -->)", re.S | re.M)
OPEN = re.compile(r"^<!-- table:", re.M)


def table_blocks(text: str) -> dict[str, str]:
    """``{marker (the table's name and any columns): text between its markers}`` of every block in ``text``."""
    blocks = {}
    for m in BLOCK.finditer(text):
        if m["spec"] in blocks:
            raise BadInput(f"the document marks table {m['spec']!r} twice; keep one <!-- table: {m['spec']} --> block")
        blocks[m["spec"]] = m["body"]
    unclosed = len(OPEN.findall(text)) - len(blocks)
    if unclosed:
        raise BadInput(f"the document has {unclosed} '<!-- table: NAME -->' marker(s) without a matching "
                       "'<!-- /table -->' on a later line (or with a name other than letters, digits, _, - and /, or "
                       "columns not as 'columns: a, b'); close each block")
    return blocks


def _table_text(block: re.Match, root) -> str:
    """The text a block shows: ``tables/<name>.md``, or the named columns of its table."""
    name, columns = block["name"], block["columns"]
    path = tables_dir(root) / f"{name}.md"
    if not path.is_file():
        raise BadInput(f"the document shows table {name!r} but {path} does not exist; build it with "
                       f"python -m qrepro study --stages tables --results {tables_dir(root).parent}, "
                       "or remove the block")
    text = path.read_text()
    return text if columns is None else _columns(text, columns.split(", "), name)


def _columns(text: str, names: list[str], table: str) -> str:
    """The Markdown table in ``text`` cut to the columns ``names``, in that order (the note before it dropped)."""
    rows = [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in text.splitlines()
            if line.startswith("|")]
    header = rows[0]
    missing = [n for n in names if n not in header]
    if missing:
        raise BadInput(f"table {table!r} has no column {missing[0]!r} (its columns: {', '.join(header)}); "
                       "fix the block's columns")
    keep = [header.index(n) for n in names]
    picked = [[row[i] for i in keep] for row in rows]
    return _row(picked[0]) + "|" + "---|" * len(keep) + "\n" + "".join(_row(row) for row in picked[2:])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |\n"


def sync_readme(root, readme: str | Path, check: bool = False) -> list[str]:
    """The names of ``readme``'s table blocks that differ from ``tables/<name>.md`` under ``root``; unless
    ``check``, those blocks are rewritten (atomically; the rest of the file is kept)."""
    readme = Path(readme)
    if not readme.is_file():
        raise BadInput(f"{readme} does not exist; pass the document to update with --readme")
    text = readme.read_text()
    blocks = table_blocks(text)
    current = {m["spec"]: _table_text(m, root) for m in BLOCK.finditer(text)}
    changed = [spec for spec, body in blocks.items() if body != current[spec]]
    if changed and not check:
        write_text_atomic(readme, BLOCK.sub(lambda m: m.group(1) + current[m["spec"]] + m.group("end"), text))
    return changed


def sync_documents(root=None, check: bool = False) -> dict[str, list[str]]:
    """``{document: its blocks that differ}`` for every document of ``DOCUMENTS`` (see :func:`sync_readme`)."""
    require_source_tree("the README and docs/ (or pass --readme FILE)")
    return {doc: sync_readme(root, REPO_ROOT / doc, check) for doc in DOCUMENTS}
