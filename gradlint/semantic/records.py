"""Facts the analyzer records about one file; rules read them, never the raw tree.

The facts are general (tapes, gradient sources, uses of values, optimizers, iterations, pairings, string
tests); what makes one of them a finding is each rule's own decision.
"""
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


class FunctionContext:
    """The function a record was made in: its scope id, and what kind of function it is (worked out from the
    definition when a rule asks)."""

    __slots__ = ("scope", "node", "cls")

    def __init__(self, scope: int, node: Optional[cst.FunctionDef] = None, cls=None) -> None:
        self.scope = scope
        self.node = node  # None for the module
        self.cls = cls    # the ClassValue of a method's class

    @property
    def name(self) -> str:
        return self.node.name.value if self.node is not None else "<module>"

    @property
    def keras_class(self) -> Optional[str]:
        """The Keras base of the enclosing class, if any."""
        return self.cls.keras_class if self.cls is not None else None

    @property
    def in_test(self) -> bool:
        """A `test*` function, or a method of a test case class."""
        if self.node is None:
            return False
        if self.name.startswith("test"):
            return True
        cls = self.cls
        if cls is None:
            return False
        class_name = cls.node.name.value
        return class_name.startswith("Test") or class_name.endswith("Test") or any(
            base.rpartition(".")[2].endswith("TestCase") for base in cls.bases)

    @property
    def train_step(self) -> bool:
        """`train_step` of a Keras Model subclass."""
        return self.name == "train_step" and self.keras_class in ("Model", "Sequential", "Functional")

    @property
    def parameters(self) -> tuple[str, ...]:
        if self.node is None:
            return ()
        from gradlint.semantic.syntax import all_params

        return tuple(p.name.value for p in all_params(self.node.params))


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
    target_provenance: frozenset = frozenset()    # see env.Provenance entries
    target_bound_tapes: Optional[frozenset] = None  # tapes recording when a Name target was bound
    target_is_computation: bool = False           # target is an op evaluated at the call itself
    tapes_active: frozenset = frozenset()         # tapes recording at the call
    in_replica_function: bool = False
    # variables of an explicit list that the target certainly never reads: their gradients are None
    unconnected: tuple[str, ...] = ()
    # for `model.trainable_variables` of a Keras model defined in this file: `model.<layer>` for each layer its
    # `__init__` creates and nothing ever uses, whose variables certainly get no gradient (worked out when a
    # use of these gradients is recorded: None until then)
    unused_layers: Optional[tuple[str, ...]] = None
    collection: object = field(default=None, repr=False)  # the VarList differentiated, when it is one


@dataclass(eq=False)
class ElementUse:
    """An operation that fails on ``None`` applied to one gradient that may be ``None``."""

    node: cst.CSTNode = field(repr=False)
    operation: str
    source: GradientSource
    guarded: bool
    expects_error: bool = False  # inside `with pytest.raises(...)` / `self.assertRaises(...)`
    certain_none: tuple[str, ...] = ()  # variables whose gradient is certainly None at this use
    context: Optional[FunctionContext] = None
    inspection: bool = False  # reads `.shape`, `.dtype`, `.get_shape()` or asserts on the value
    statement_has_effect: bool = True  # False for an expression statement that computes and discards


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
    keywords: tuple[tuple[str, cst.Arg], ...] = ()  # keyword arguments of the constructor call
    model_owned: bool = False  # `self.optimizer` of a Keras model / `self.model.optimizer` of a callback

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
    pairs: object = None     # the value passed as the (gradient, variable) pairs, where known
    vars_parameter: Optional[str] = None  # the variables are this parameter of the enclosing function
    receiver_parameter: Optional[str] = None  # the optimizer is this parameter of the enclosing function
    context: Optional[FunctionContext] = None


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
    context: Optional[FunctionContext] = None


@dataclass(eq=False)
class OptimizerAttribute:
    """An attribute of an optimizer read (``opt.lr``), not called."""

    node: cst.Attribute = field(repr=False)
    attr: str
    optimizer: OptimizerInfo
    expects_error: bool = False


@dataclass(eq=False)
class MethodDefinition:
    """A method defined in a class that derives from a Keras / TF1 optimizer class."""

    node: cst.FunctionDef = field(repr=False)
    name: str
    optimizer_base: str  # the qualified name of the optimizer base class


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
    api: str = ""
    discarded: bool = False  # an expression statement: the result is thrown away


@dataclass(eq=False)
class Iteration:
    """A value iterated or used as a sequence: a ``for`` loop, a comprehension, unpacking, ``list(...)``,
    ``zip(...)``, or the pairs / gradients passed to ``apply_gradients`` / ``apply``.

    ``lazy`` marks uses that only wrap the value (``zip``, ``map``, ``enumerate``...): they consume an
    iterator later, when they are iterated themselves.
    """

    node: cst.CSTNode = field(repr=False)
    value: object
    lazy: bool = False
    apply: bool = False  # the iteration is an optimizer's `apply_gradients` / `apply`


@dataclass(eq=False)
class Pairing:
    """Gradients paired with a variable expression (``zip(grads, vars)``, ``opt.apply(grads, vars)``)."""

    node: cst.Call = field(repr=False)
    gradient: object  # the GradElem of the paired gradients
    vars_text: str


@dataclass(eq=False)
class StringTest:
    """An attribute of a value compared with string constants: ``v.name == 'a:0'``, ``'x' in v.name``,
    ``v.name.startswith(...)``, ``pattern.match(v.name)`` with a compiled regex, ``re.match(p, v.name)``.

    ``operation`` is ``==``, ``!=``, ``in`` (the attribute is a member of the strings), ``contains`` (a
    string is a substring of the attribute), ``startswith``, ``endswith`` or ``regex``.
    """

    node: cst.CSTNode = field(repr=False)
    attribute: str
    subject: cst.BaseExpression = field(repr=False)  # the object whose attribute is tested (`v`)
    subject_value: object
    strings: tuple[str, ...]
    operation: str
    literal_node: Optional[cst.CSTNode] = field(default=None, repr=False)  # where the strings are written
    expects_error: bool = False


@dataclass(eq=False)
class VariableCreation:
    """A variable created with a name written in the file (``tf.Variable(..., name='w')``,
    ``self.add_weight(name='head_w')``)."""

    node: cst.Call = field(repr=False)
    name: str


@dataclass(eq=False)
class LossScaleCall:
    """``opt.get_scaled_loss`` / ``opt.get_unscaled_gradients`` / ``opt.scale_loss``."""

    node: cst.Call = field(repr=False)
    method: str
    optimizer: Optional[OptimizerInfo]
    scope: object


@dataclass(eq=False)
class CallSite:
    """A call of a function defined in this file, with each argument by parameter name."""

    node: cst.Call = field(repr=False)
    function: cst.FunctionDef = field(repr=False)
    arguments: dict = field(default_factory=dict)  # parameter -> the argument's expression
