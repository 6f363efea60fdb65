"""Abstract values: what the analyzer knows an expression evaluates to.

Only what gradient rules need is modelled; everything else evaluates to ``None`` (unknown).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional

import libcst as cst

if TYPE_CHECKING:
    from gradlint.semantic.records import GradientSource, OptimizerInfo, TapeInfo


class Value:
    """Base of all abstract values."""


_lineages = itertools.count(1)


def new_lineage() -> int:
    """A fresh identity for a list of gradients (raw, clipped, scaled... are different lineages)."""
    return next(_lineages)


@dataclass(eq=False)
class GradElem(Value):
    """One gradient (possibly ``None``) that came from ``source``."""

    source: "GradientSource"
    may_be_none: bool
    derived: bool = False  # the result of an operation on a gradient, not the raw gradient
    lineage: int = field(default_factory=new_lineage)
    clipped: bool = False  # produced by a clipping op
    scaled: bool = False   # gradients of a loss-scaled target, not unscaled yet

    def checked(self) -> "GradElem":
        return replace(self, may_be_none=False)


@dataclass(eq=False)
class Seq(Value):
    """A sequence (list, tuple, zip, generator) whose elements are ``element``."""

    element: Optional[Value]
    is_iterator: bool = False       # zip/map/generator: consumed by the first iteration
    vars_text: Optional[str] = None  # the variable expression paired with gradients, where known
    single_pair: Optional[tuple[cst.BaseExpression, cst.BaseExpression]] = None  # `[(g, v)]`
    created_by: Optional[cst.Call] = None     # the zip/map call that made an iterator
    assigned_in: Optional[cst.Assign] = None  # the assignment that bound the iterator to a name
    consumed_by: Optional[cst.CSTNode] = None  # the first thing that iterated it

    @property
    def gradient(self) -> Optional[GradElem]:
        """The gradient carried by each element: the element itself, or its first tuple item."""
        if isinstance(self.element, GradElem):
            return self.element
        if isinstance(self.element, TupleValue):
            for item in self.element.items:
                if isinstance(item, GradElem):
                    return item
        return None


@dataclass(eq=False)
class TupleValue(Value):
    """A fixed-length tuple of values (``(g, v)``, the result of ``clip_by_global_norm``)."""

    items: tuple[Optional[Value], ...]
    global_clip: Optional[cst.Call] = None     # the `tf.clip_by_global_norm` call that returned it
    assigned_in: Optional[cst.Assign] = None   # `grads = tf.clip_by_global_norm(...)` (not unpacked)


@dataclass(eq=False)
class VarList(Value):
    """A collection of variables, e.g. ``model.trainable_variables``; ``text`` is its canonical spelling."""

    text: str


@dataclass(eq=False)
class VarElem(Value):
    """One variable out of a variable collection."""

    collection: str


@dataclass(eq=False)
class KerasObject(Value):
    """A Keras model or layer (constructed here, or ``self`` in a Keras subclass)."""

    class_name: str


@dataclass(eq=False)
class StrategyValue(Value):
    """A ``tf.distribute`` strategy; ``multi_replica`` is False for one device, None when unknown."""

    class_name: str
    multi_replica: Optional[bool]


_CODEGEN = cst.Module(body=[])


@dataclass(eq=False)
class ListDisplay(Value):
    """A literal list of non-gradient items, e.g. ``[w1, b1]``; its text is generated on first use."""

    node: cst.List = field(repr=False)

    @property
    def items(self) -> tuple[cst.BaseExpression, ...]:
        return tuple(e.value for e in self.node.elements)

    @property
    def text(self) -> str:
        return _CODEGEN.code_for_node(self.node)


@dataclass(eq=False)
class NoneValue(Value):
    """The literal ``None``."""


@dataclass(eq=False)
class TapeValue(Value):
    tape: "TapeInfo"


@dataclass(eq=False)
class OptimizerValue(Value):
    info: "OptimizerInfo"


@dataclass(eq=False)
class FunctionValue(Value):
    """A function defined in this file (calls to it seed its parameters)."""

    node: cst.FunctionDef
    env: object
    class_env: object = None


@dataclass(eq=False)
class LambdaValue(Value):
    node: cst.Lambda
    env: object = field(default=None)


NONE = NoneValue()


def iterate(value: Optional[Value]) -> Optional[Value]:
    """What one iteration over ``value`` yields."""
    if isinstance(value, Seq):
        return value.element
    if isinstance(value, VarList):
        return VarElem(value.text)
    return None


def materialize(value: Optional[Value]) -> Optional[Value]:
    """``list(value)`` / ``tuple(value)``: same elements, no longer a one-shot iterator."""
    if isinstance(value, Seq):
        return replace(value, is_iterator=False)
    return value
