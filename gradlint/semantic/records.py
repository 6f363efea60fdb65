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
    loops: tuple = ()  # loops enclosing the tape's construction


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
    statements_follow_in_tape_block: bool = False  # more code after this call inside the tape's block
    loops: tuple[LoopInfo, ...] = ()
    branches: tuple[tuple[int, int], ...] = ()   # (if-node id, branch) on the path to this call
    scope: object = None
    sources_text: Optional[str] = None            # canonical text of the differentiated variables
    sources_owner: Optional[str] = None           # `model` for `model.trainable_variables`
    sources_names: frozenset = frozenset()        # names listed explicitly as sources
    target_provenance: frozenset = frozenset()    # see analyzer.Provenance entries
    target_bound_tapes: Optional[frozenset] = None  # tapes recording when a Name target was bound
    target_is_computation: bool = False           # target is an op evaluated at the call itself
    tapes_active: frozenset = frozenset()         # tapes recording at the call
    in_replica_function: bool = False


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
    clip_arguments: tuple[str, ...] = ()        # clipnorm / global_clipnorm / clipvalue passed to it
    multi_replica_scope: Optional[cst.CSTNode] = None  # `with strategy.scope():` it was created in

    @property
    def legacy(self) -> bool:
        return bool(self.class_name) and ".legacy." in self.class_name


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
    gradient: object = None  # the GradElem applied (apply_gradients / apply), where known


@dataclass(eq=False)
class CompileCall:
    """``model.compile(optimizer=opt)`` with an optimizer object (not a string)."""

    node: cst.Call = field(repr=False)
    model_text: str
    receiver: cst.BaseExpression
    optimizer: OptimizerInfo
    loops: tuple[LoopInfo, ...]
    expects_error: bool = False
    multi_replica_scope: Optional[cst.CSTNode] = None


@dataclass(eq=False)
class AttributeAssignment:
    """``receiver.attr = value`` where the receiver may be an optimizer."""

    node: cst.Attribute = field(repr=False)
    attr: str
    receiver_key: Optional[tuple]
    receiver_info: Optional[OptimizerInfo]
    expects_error: bool = False
    receiver_keras: Optional[str] = None  # class of a Keras model/layer receiver (incl. `self` in a subclass)


@dataclass(eq=False)
class MethodCall:
    """Any other method called on an optimizer: ``opt.get_gradients(...)``, ``opt.variables()``."""

    node: cst.Call = field(repr=False)
    method: str
    optimizer: OptimizerInfo
    scope: object
    expects_error: bool = False


@dataclass(eq=False)
class ClipCall:
    """Gradients clipped: ``tf.clip_by_global_norm`` or a per-gradient ``clip_by_norm``/``clip_by_value``."""

    node: cst.Call = field(repr=False)
    input_lineage: Optional[int]
    input_scaled: bool
    result_named: bool  # the clipped list was bound to a name other than `_`
    scope: object
    # the plain name of the assignment that holds the clip (`clipped` in `clipped, norm = ...` and in
    # `clipped = [...]`); None for other targets. Whether it holds the whole clipped list, check the tree.
    result_name: Optional[str] = None


@dataclass(eq=False)
class GlobalClipMisuse:
    """``grads = tf.clip_by_global_norm(...)`` (not unpacked) later used as a gradient list."""

    node: cst.Assign = field(repr=False)
    use: cst.CSTNode = field(repr=False)


@dataclass(eq=False)
class PairingMismatch:
    """Gradients taken for one variable list paired with another."""

    node: cst.Call = field(repr=False)
    sources_text: str
    vars_text: str
    source: GradientSource


@dataclass(eq=False)
class IteratorReuse:
    """A zip/map iterator consumed before (or by an earlier) ``apply_gradients``."""

    node: cst.Call = field(repr=False)
    created_by: Optional[cst.Call] = field(repr=False)
    assigned_in: Optional[cst.Assign] = field(repr=False)
    consumed_by: cst.CSTNode = field(repr=False)


@dataclass(eq=False)
class VariableNameFilter:
    """``v.name == 'dense/kernel:0'`` and similar TF1-style name filters."""

    node: cst.CSTNode = field(repr=False)
    literal: str
    expects_error: bool = False


@dataclass(eq=False)
class LossScaleCall:
    """``opt.get_scaled_loss`` / ``opt.get_unscaled_gradients`` / ``opt.scale_loss``."""

    node: cst.Call = field(repr=False)
    method: str
    optimizer: Optional[OptimizerInfo]
    scope: object
