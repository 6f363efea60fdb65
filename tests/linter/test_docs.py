"""docs/rules/*.md and the index of every code (docs/rules/README.md) are generated from the rule classes
and must be current."""
from __future__ import annotations

from gradlint.docs import expected_files, render
from gradlint.rules import ALL_RULES
from gradlint.runtime_checks import RUNTIME_CHECKS

from conftest import REPO


def test_generated_docs_are_current() -> None:
    stale = [str(path.relative_to(REPO)) for path, content in expected_files(REPO).items()
             if not path.exists() or path.read_text(encoding="utf-8") != content]
    assert not stale, f"run `python -m gradlint.docs`; stale: {stale}"


def test_one_page_per_code_and_table_lists_all() -> None:
    pages = {p.stem for p in (REPO / "docs" / "rules").glob("GRD*.md")}
    codes = {r.CODE for r in ALL_RULES} | {c.code for c in RUNTIME_CHECKS}
    assert pages == codes
    index = (REPO / "docs" / "rules" / "README.md").read_text(encoding="utf-8")
    for code in codes:
        assert f"| [{code}]({code}.md) |" in index
    assert "(docs/rules/README.md)" in (REPO / "README.md").read_text(encoding="utf-8")


def test_explain_text_is_the_page() -> None:
    for rule in ALL_RULES:
        assert render(rule.CODE) == (REPO / "docs" / "rules" / f"{rule.CODE}.md").read_text(encoding="utf-8")
