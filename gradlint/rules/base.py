"""The rule interface: a code, a name, docs, examples, and a check against the semantic model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Optional

import libcst as cst

from gradlint.semantic import SemanticModel


@dataclass(frozen=True)
class Report:
    """What a rule reports: the node to point at and the message (positions come later)."""

    node: cst.CSTNode
    message: str


class Rule:
    """Base class of a static rule.

    Subclasses set the class attributes and implement :meth:`check`. ``INVALID`` examples must
    trigger the rule, ``VALID`` examples must not; the test-suite runs both.
    """

    CODE: ClassVar[str]
    NAME: ClassVar[str]
    SUMMARY: ClassVar[str]            # one line, for `gradlint rules`
    WHAT: ClassVar[str]               # docs: What it does
    WHY: ClassVar[str]                # docs: Why is this bad
    EXAMPLE: ClassVar[str]            # docs: Example (code)
    USE_INSTEAD: ClassVar[str]        # docs: Use instead (code)
    FIX_SAFETY: ClassVar[str]         # docs: Fix safety
    FIX: ClassVar[Optional[str]] = None  # "safe" / "unsafe" / None (no autofix)
    OPT_IN: ClassVar[bool] = False
    RUNTIME_TWINS: ClassVar[tuple[str, ...]] = ()
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[str, ...]] = ()

    def check(self, model: SemanticModel) -> Iterator[Report]:
        raise NotImplementedError

    def report(self, node: cst.CSTNode, message: str) -> Report:
        return Report(node, message)
