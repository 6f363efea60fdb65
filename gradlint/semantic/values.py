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
    certain_none: tuple[str, ...] = ()  # variables whose gradient is certainly None (never read by the target)

    def checked(self) -> "GradElem":
        return replace(self, may_be_none=False, certain_none=())


@dataclass(eq=False)
class Seq(Value):
    """A sequence (list, tuple, zip, generator) whose elements are ``element``.

    ``items`` holds each position's value when it is known (an explicit list of variables differentiated
    one by one); ``element`` then stands for any of them.
    """

    element: Optional[Value]
    is_iterator: bool = False       # zip/map/generator: consumed by the first iteration
    vars_text: Optional[str] = None  # the variable expression paired with gradients, where known
    single_pair: Optional[tuple[cst.BaseExpression, cst.BaseExpression]] = None  # `[(g, v)]`
    created_by: Optional[cst.Call] = None     # the zip/map call that made an iterator
    assigned_in: Optional[cst.Assign] = None  # the assignment that bound the iterator to a name
    items: Optional[tuple[Optional[Value], ...]] = None

    @property
    def gradient(self) -> Optional[GradElem]:
        """The gradient carried by each element: the element itself, or its first tuple item."""
        return gradient_of(self.element)


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
    owner: Optional[Value] = None  # the model or layer whose collection it is, where known


@dataclass(eq=False)
class VarElem(Value):
    """One variable out of a variable collection."""

    collection: str


@dataclass(eq=False)
class ClassValue(Value):
    """A class defined in this file; ``keras_class`` names its Keras base (``Model``, ``Layer``...), if any."""

    node: cst.ClassDef = field(repr=False)
    keras_class: Optional[str]
    bases: tuple[str, ...] = ()  # qualified names of its bases (imported ones), for test and optimizer classes
    env: object = None           # the class body's scope (methods, class attributes)
    optimizer_base: Optional[str] = None  # the Keras or TF1 optimizer class it derives from, if any


@dataclass(eq=False)
class KerasObject(Value):
    """A Keras model or layer (constructed here, or ``self`` in a Keras subclass)."""

    class_name: str
    cls: Optional[ClassValue] = None  # the class, when it is defined in this file


@dataclass(eq=False)
class InstanceValue(Value):
    """An instance of a (non-Keras) class defined in this file."""

    cls: ClassValue


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
class StringsValue(Value):
    """String constants: a literal, or a tuple / list / set of literals (``FROZEN = ("a:0", "b:0")``)."""

    node: cst.BaseExpression = field(repr=False)

    @property
    def strings(self) -> list[str]:
        from gradlint.semantic.syntax import string_literals

        return string_literals(self.node)


@dataclass(eq=False)
class RegexValue(Value):
    """A compiled regular expression (``re.compile(pattern)``); ``pattern`` holds the pattern's strings."""

    pattern: StringsValue


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


def gradient_of(value: Optional[Value]) -> Optional[GradElem]:
    """The gradient a value carries: itself, or the first gradient item of a ``(gradient, variable)`` pair."""
    if isinstance(value, GradElem):
        return value
    if isinstance(value, TupleValue):
        for item in value.items:
            if isinstance(item, GradElem):
                return item
    return None


def carries_gradient(value: Optional[Value]) -> bool:
    """A gradient, a pair holding one, or a sequence of those."""
    if isinstance(value, Seq):
        return gradient_of(value.element) is not None or isinstance(value.element, Seq)
    return gradient_of(value) is not None


def derived(values, clipped: bool = False) -> Optional[GradElem]:
    """The result of an operation on a gradient: a new, non-None gradient of the same source."""
    for value in values:
        if isinstance(value, GradElem):
            return GradElem(value.source, may_be_none=False, derived=True, clipped=clipped, scaled=value.scaled)
    return None


def iterate(value: Optional[Value]) -> Optional[Value]:
    """What one iteration over ``value`` yields."""
    if isinstance(value, Seq):
        return value.element
    if isinstance(value, VarList):
        return VarElem(value.text)
    if isinstance(value, StringsValue):
        return value
    return None


def materialize(value: Optional[Value]) -> Optional[Value]:
    """``list(value)`` / ``tuple(value)``: same elements, no longer a one-shot iterator."""
    if isinstance(value, Seq):
        return replace(value, is_iterator=False, created_by=None, assigned_in=None)
    return value


def written(old: Optional[Value], new: Optional[Value]) -> Optional[Value]:
    """The element of a list after ``new`` was written into it (by index, append, extend or ``+=``).

    Positions not written keep their old values: a gradient written over a gradient that may be None
    may still be None at another position.
    """
    old_gradient, new_gradient = gradient_of(old), gradient_of(new)
    if new_gradient is None or old_gradient is None or not old_gradient.may_be_none or new_gradient.may_be_none:
        return new if new is not None else old
    merged = replace(new_gradient, may_be_none=True, certain_none=old_gradient.certain_none)
    if isinstance(new, TupleValue):
        return replace(new, items=tuple(merged if item is new_gradient else item for item in new.items))
    return merged
