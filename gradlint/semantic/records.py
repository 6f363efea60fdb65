"""Facts the analyzer records about one file; rules read them, never the raw tree."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import libcst as cst


@dataclass(eq=False)
class LoopInfo:
    """An enclosing ``for``/``while`` loop."""

    node: cst.For | cst.While = field(repr=False)
    target_names: frozenset[str]
    over_variables: bool  # iterates over gradients/variables (not batches or epochs)
    _assigned: Optional[frozenset[str]] = None

    @property
    def assigned_names(self) -> frozenset[str]:
        """Names bound anywhere in the loop body (computed on first use only)."""
        if self._assigned is None:
            from gradlint.semantic.syntax import assigned_names

            self._assigned = assigned_names(self.node.body)
        return self._assigned

    @property
    def varying_names(self) -> frozenset[str]:
        return self.target_names | self.assigned_names


@dataclass(eq=False)
class TapeInfo:
    """A ``tf.GradientTape`` object."""

    node: cst.CSTNode = field(repr=False)
    name: Optional[str]
    persistent: bool
    with_node: Optional[cst.With] = None
    implicit: bool = False  # a name used as a tape whose construction is not in this file
    watched: set = field(default_factory=set)  # keys of expressions passed to `tape.watch`


@dataclass(eq=False)
class GradientSource:
    """A call that produces gradients: ``tape.gradient``, ``tf.gradients``, ``opt.compute_gradients``."""

    node: cst.Call = field(repr=False)
    api: str
    may_be_none: bool
    tape: Optional[TapeInfo] = None
    target: Optional[cst.BaseExpression] = None
    sources: Optional[cst.BaseExpression] = None
    inside_own_tape: bool = False
    loops: tuple[LoopInfo, ...] = ()


@dataclass(eq=False)
class ElementUse:
    """An operation applied to one gradient that may be ``None``."""

    node: cst.CSTNode = field(repr=False)
    operation: str
    source: GradientSource
    guarded: bool
    expects_error: bool = False  # inside `with pytest.raises(...)` / `self.assertRaises(...)`


@dataclass(eq=False)
class OptimizerInfo:
    """One optimizer object: constructed here, or a name used as an optimizer."""

    node: cst.CSTNode = field(repr=False)
    class_name: Optional[str]
    kind: Optional[str]
    stateless: bool = False
    implicit: bool = False
    loops: tuple[LoopInfo, ...] = ()
    keys: set = field(default_factory=set)


@dataclass(eq=False)
class OptimizerCall:
    """``opt.apply_gradients(...)``, ``opt.apply(...)``, ``opt.minimize(...)``, ``opt.build(...)``."""

    node: cst.Call = field(repr=False)
    method: str
    optimizer: OptimizerInfo
    vars_text: Optional[str]
    single_pair: Optional[tuple[cst.BaseExpression, cst.BaseExpression]]
    loops: tuple[LoopInfo, ...]
    scope: object
    expects_error: bool = False


@dataclass(eq=False)
class CompileCall:
    """``model.compile(optimizer=opt)`` with an optimizer object (not a string)."""

    node: cst.Call = field(repr=False)
    model_text: str
    receiver: cst.BaseExpression
    optimizer: OptimizerInfo
    loops: tuple[LoopInfo, ...]
    expects_error: bool = False


@dataclass(eq=False)
class AttributeAssignment:
    """``receiver.attr = value`` where the receiver may be an optimizer."""

    node: cst.Attribute = field(repr=False)
    attr: str
    receiver_key: Optional[tuple]
    receiver_info: Optional[OptimizerInfo]
    expects_error: bool = False
