"""Every command output shown in README.md and docs/ is what the tools print today (see doc_outputs.py)."""
from __future__ import annotations

from doc_outputs import Block, blocks, documents, differences, matches

from conftest import REPO


def test_docs_show_what_the_commands_print() -> None:
    found = differences()
    assert not found, "\n\n".join(map(str, found)) + (
        "\n\nrun `python tests/linter/doc_outputs.py --update` (or `make doc-outputs`) and review the diff")


def test_the_readme_and_the_linter_docs_have_checked_outputs() -> None:
    checked = {path.relative_to(REPO).as_posix(): len(blocks(path)) for path in documents()}
    assert checked["README.md"] >= 2 and checked["docs/linter.md"] >= 3 and checked["docs/fix.md"] >= 1
    for path in documents():
        for block in blocks(path):
            assert block.steps, f"{path}:{block.start}: a console block without a `$ command` line"


def test_elisions_match_what_they_stand_for_and_nothing_else() -> None:
    assert matches(["a", "b ..."], ["a", "b and more"])
    assert not matches(["a", "b ..."], ["a", "c and more"])
    assert matches(["...", "end"], ["x", "y", "end"]) and matches(["...", "end"], ["end"])
    assert not matches(["...", "end"], ["end", "extra"])
    assert not matches(["a"], ["a", "b"]) and not matches(["a", "b"], ["a"])
    assert isinstance(blocks(REPO / "README.md")[0], Block)
