"""The README's table blocks, spliced from the study's tables (``python -m qrepro readme``)."""
import re

import pytest

from qrepro.cli import main
from qrepro.paths import REPO_ROOT
from qrepro.readme import DOCUMENTS, sync_documents, sync_readme, table_blocks

TABLE_A = "A note.\n\n| x | y |\n|---|---|\n| 1 | 2.00 |\n"
TABLE_B = "| z |\n|---|\n| 3 |\n"


def write_case(tmp_path, readme_text: str):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.md").write_text(TABLE_A)
    (tmp_path / "tables" / "b.md").write_text(TABLE_B)
    readme = tmp_path / "README.md"
    readme.write_text(readme_text)
    return readme


def test_the_committed_documents_show_the_committed_tables():
    for doc in DOCUMENTS:
        assert table_blocks((REPO_ROOT / doc).read_text()), f"{doc} marks no table: drop it from readme.DOCUMENTS"
    assert sync_documents(check=True) == dict.fromkeys(DOCUMENTS, []), "run: python -m qrepro readme (make readme)"


def test_sync_rewrites_the_blocks_and_keeps_the_prose(tmp_path):
    stale = ("# Title\n\nProse before.\n\n<!-- table: a -->\nold a\n<!-- /table -->\n\nBetween.\n\n"
             "<!-- table: b -->\n" + TABLE_B + "<!-- /table -->\nAfter.\n")
    readme = write_case(tmp_path, stale)
    assert sync_readme(tmp_path, readme, check=True) == ["a"]
    assert readme.read_text() == stale  # --check writes nothing
    assert sync_readme(tmp_path, readme) == ["a"]
    assert readme.read_text() == ("# Title\n\nProse before.\n\n<!-- table: a -->\n" + TABLE_A + "<!-- /table -->\n\n"
                                  "Between.\n\n<!-- table: b -->\n" + TABLE_B + "<!-- /table -->\nAfter.\n")
    assert sync_readme(tmp_path, readme) == []


def test_a_block_names_a_table_in_a_folder_under_tables(tmp_path):
    """Study v2 writes its tables to tables/fmnist-resnet18/ (StudyConfig.tables); the README shows them by path."""
    readme = write_case(tmp_path, "Intro.\n<!-- table: v2-study/claims_b -->\nold\n<!-- /table -->\nEnd.\n")
    (tmp_path / "tables" / "v2-study").mkdir()
    (tmp_path / "tables" / "v2-study" / "claims_b.md").write_text(TABLE_B)
    assert sync_readme(tmp_path, readme) == ["v2-study/claims_b"]
    assert readme.read_text() == "Intro.\n<!-- table: v2-study/claims_b -->\n" + TABLE_B + "<!-- /table -->\nEnd.\n"


def test_a_block_with_columns_shows_those_columns_in_that_order(tmp_path):
    """A wide table in a narrow page: the named columns, in the marker's order, without the table's note."""
    readme = write_case(tmp_path, "<!-- table: a columns: y, x -->\nold\n<!-- /table -->\n")
    assert sync_readme(tmp_path, readme) == ["a columns: y, x"]
    assert readme.read_text() == "<!-- table: a columns: y, x -->\n| y | x |\n|---|---|\n| 2.00 | 1 |\n<!-- /table -->\n"
    assert sync_readme(tmp_path, readme, check=True) == []


@pytest.mark.parametrize("text, match", [
    ("<!-- table: missing -->\nx\n<!-- /table -->\n", r"table 'missing' but .*missing\.md does not exist; build it"),
    ("<!-- table: a -->\nx\n", r"1 '<!-- table: NAME -->' marker\(s\) without a matching '<!-- /table -->'"),
    ("<!-- table: a -->\nx\n<!-- /table -->\n<!-- table: a -->\ny\n<!-- /table -->\n", "marks table 'a' twice"),
    ("<!-- table: ../a -->\nx\n<!-- /table -->\n", r"1 '<!-- table: NAME -->' marker\(s\) without a matching"),
    ("<!-- table: a columns: x, w -->\nx\n<!-- /table -->\n", r"table 'a' has no column 'w' \(its columns: x, y\)"),
    ("<!-- table: a columns: x,y -->\nx\n<!-- /table -->\n", r"columns not as 'columns: a, b'\); close each block"),
])
def test_bad_readme_blocks_are_one_line_and_leave_the_file(tmp_path, capsys, text, match):
    readme = write_case(tmp_path, text)
    assert main(["readme", "--results", str(tmp_path), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(match, err), err
    assert readme.read_text() == text


def test_check_exits_1_when_a_block_differs(tmp_path, capsys):
    readme = write_case(tmp_path, "<!-- table: b -->\nold\n<!-- /table -->\n")
    assert main(["readme", "--check", "--results", str(tmp_path), "--readme", str(readme)]) == 1
    assert "b differ from the study's tables" in capsys.readouterr().out
