"""The rule interface: a code, a name, docs, examples, and a check against the semantic model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Iterator, Optional, Union

import libcst as cst

from gradlint.fixes.edits import Edit, Fix
from gradlint.semantic import SemanticModel
from gradlint.triggers import Alternatives

FixBuilder = Callable[[], Optional[Fix]]


@dataclass(frozen=True)
class Report:
    """What a rule reports: the node to point at and the message (positions come later).

    ``fix`` is a :class:`~gradlint.fixes.edits.Fix`, or a zero-argument callable that builds one (or
    returns None when no fix is clearly right). A callable is only called by `gradlint fix`, so
    `gradlint check` and flake8 never pay for building fixes.
    """

    node: cst.CSTNode
    message: str
    fix: Union[Fix, FixBuilder, None] = None

    def resolve_fix(self) -> Optional[Fix]:
        """The fix, building it if it is lazy (exceptions propagate: the fix engine reports them)."""
        if self.fix is None or isinstance(self.fix, Fix):
            return self.fix
        built = self.fix()
        if built is not None and not isinstance(built, Fix):
            raise TypeError(f"a fix builder returned {type(built).__name__}, not Fix")
        return built


class Rule:
    """Base class of a static rule.

    Subclasses set the class attributes and implement :meth:`check`. ``INVALID`` examples must
    trigger the rule, ``VALID`` examples must not; the test-suite runs both. ``TRIGGERS`` says what a file
    must contain for the rule to report anything (see ``gradlint/triggers.py``); the prefilter is built
    from it.
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
    TRIGGERS: ClassVar[Optional[Alternatives]] = None  # None: no prefilter, every file is parsed for it
    RUNTIME_TWINS: ClassVar[tuple[str, ...]] = ()
    VALID: ClassVar[tuple[str, ...]] = ()
    INVALID: ClassVar[tuple[str, ...]] = ()

    def check(self, model: SemanticModel) -> Iterator[Report]:
        raise NotImplementedError

    def report(self, node: cst.CSTNode, message: str, fix: Union[Fix, FixBuilder, None] = None) -> Report:
        return Report(node, message, fix)

    def fix(self, edits: Iterable[Edit], description: str, safety: Optional[str] = None) -> Fix:
        """A :class:`Fix` of this rule; ``safety`` defaults to the rule's ``FIX`` class."""
        chosen = safety or self.FIX
        if chosen is None:
            raise ValueError(f"{self.CODE} declares no FIX class; pass safety= explicitly")
        return Fix(tuple(edits), chosen, description)  # type: ignore[arg-type]
