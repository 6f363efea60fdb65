"""Trigger words: what a file must contain for a rule to be able to report anything.

Each rule declares ``TRIGGERS``, a tuple of alternatives; an alternative is a tuple of words that must all
be present. The prefilter (``prefilter.py``) is built from the selected rules' words, so a file that
contains none of a rule's alternatives is never parsed for it.

Words (``kind``, ``name``):

- ``call``: a call of a function or method named ``name`` (``tape.gradient(...)``, ``gradients(...)``);
- ``optimizer_call``: a method ``name`` called on something named like an optimizer (``opt.apply(...)``);
- ``bare_call``: a method ``name`` called without arguments (``opt.variables()``);
- ``discarded_call``: a call of ``name`` whose result is thrown away (an expression statement);
- ``keyword``: a keyword argument ``name=``; ``keyword_reference``: one whose value is a name or attribute;
- ``optimizer_keyword``: a keyword argument ``name=`` of a call of a Keras optimizer class (``Adam(lr=...)``);
- ``assigned_attribute``: ``x.name = ...``;
- ``optimizer_attribute``: ``opt.name`` read on something named like an optimizer;
- ``attribute``: ``x.name`` read anywhere;
- ``string``: a string literal containing ``name``; ``string_suffix``: one ending with ``name`` (or with
  ``name$``, the end of a regular expression);
- ``definition``: ``def name(...)``; ``optimizer_definition``: a method ``name`` of a class deriving from
  something named ``Optimizer``;
- ``name_test``: ``x.name`` tested for a literal (``'head' in v.name``) or compared with a scoped string
  (``v.name == 'dense/kernel'``, ``v.name.startswith('encoder/')``).
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = frozenset({
    "call", "optimizer_call", "bare_call", "discarded_call", "keyword", "keyword_reference", "optimizer_keyword",
    "assigned_attribute", "optimizer_attribute", "attribute", "string", "string_suffix", "definition",
    "optimizer_definition", "name_test",
})


@dataclass(frozen=True)
class Word:
    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown trigger kind {self.kind!r}")


Alternatives = tuple[tuple[Word, ...], ...]


def any_of(kind: str, *names: str) -> Alternatives:
    """One alternative per name: any of them is enough."""
    return tuple((Word(kind, name),) for name in names)


def all_of(*words: Word) -> Alternatives:
    """One alternative: every word must be present."""
    return (tuple(words),)


GRADIENT_SOURCES: Alternatives = any_of("call", "gradient", "jacobian", "batch_jacobian", "gradients",
                                        "compute_gradients")
TAPE_GRADIENTS: Alternatives = any_of("call", "gradient", "jacobian", "batch_jacobian")
OPTIMIZER_STEPS: Alternatives = any_of("call", "apply_gradients", "minimize") + any_of("optimizer_call", "apply")
