"""Summaries of the functions and classes defined in a file, computed on first use and cached.

- what a function reads (names and attribute chains, in its own terms: ``self.W``, ``w1``), following
  calls of other methods of its class, of functions of the file, and of sub-objects whose class is
  defined here (``self.encoder(x)``);
- whether a function is a zip wrapper (``def zipsame(*seqs): return zip(*seqs)``);
- which layers a Keras class creates in ``__init__`` and never mentions anywhere else.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import libcst as cst

from gradlint.semantic.syntax import dotted_name, parameter_names, terminal_name
from gradlint.semantic.tfapi import keras_object_class
from gradlint.semantic.values import ClassValue, FunctionValue, InstanceValue, KerasObject

_MAX_DEPTH = 4
# attributes through which a method reaches every layer of its model at once
_WORD = re.compile(r"\w+")
_REACHES_EVERY_LAYER = re.compile(
    r"self\.(?:layers|_layers|submodules|_self_tracked_trackables|__dict__|_flatten_layers|get_layer)\b"
    r"|\b(?:getattr|setattr|vars)\s*\(")


@dataclass(frozen=True)
class ZipShape:
    """A function that returns ``zip`` / ``list(zip)`` of its parameters: which arguments it zips."""

    positions: tuple[int, ...]  # positional parameters zipped, in order
    star: bool                  # `zip(*args)`: every positional argument


def call_method_name(cls: ClassValue) -> str:
    """The method that runs when an instance is called: ``call`` for Keras layers and models."""
    return "call" if cls.keras_class else "__call__"


def method_of(cls: Optional[ClassValue], name: str) -> Optional[FunctionValue]:
    env = cls.env if cls is not None else None
    value = env.names.get(name) if env is not None else None
    return value if isinstance(value, FunctionValue) else None


def class_of(value) -> Optional[ClassValue]:
    if isinstance(value, InstanceValue):
        return value.cls
    if isinstance(value, KerasObject):
        return value.cls
    return None


class Summaries:
    """Per-file cache of function and class summaries (keyed by node)."""

    def __init__(self, module: cst.Module, imports, module_env, source: Optional[str] = None) -> None:
        self.module = module
        self._source = source  # the file's text (generated from the module when not given)
        self.imports = imports
        self.module_env = module_env
        self._reads: dict[int, frozenset[str]] = {}
        self._zip: dict[int, Optional[ZipShape]] = {}
        self._unused: dict[int, tuple[str, ...]] = {}
        self._passed: dict[str, bool] = {}
        self._reaches_every_layer: Optional[bool] = None
        self._word_counts: Optional[Counter] = None

    # ---------------------------------------------------------------- reads
    def reads(self, function: FunctionValue, depth: int = 0) -> frozenset[str]:
        """Names and attribute chains ``function`` reads, directly or through the calls it makes."""
        key = id(function.node)
        cached = self._reads.get(key)
        if cached is not None:
            return cached
        self._reads[key] = frozenset()  # a recursive call reads nothing more
        found = set(_chains_read(function.node.body))
        if depth < _MAX_DEPTH:
            found |= self._reads_of_callees(function, found, depth)
        result = frozenset(found)
        self._reads[key] = result
        return result

    def _reads_of_callees(self, function: FunctionValue, chains: set[str], depth: int) -> set[str]:
        params = parameter_names(function.node.params)
        self_name = params[0] if function.class_env is not None and params else None
        extra: set[str] = set()
        for callee_text in _callees(function.node.body):
            head, _, rest = callee_text.partition(".")
            if self_name is not None and head == self_name and rest:
                first, _, more = rest.partition(".")
                class_env = function.class_env
                method = class_env.names.get(first) if class_env is not None and not more else None
                if isinstance(method, FunctionValue):
                    extra |= self.reads(method, depth + 1)
                    continue
                holder = class_env.names.get(f"self.{first}") if class_env is not None else None
                cls = class_of(holder)
                target = method_of(cls, more or call_method_name(cls)) if cls is not None else None
                if target is not None:
                    prefix = f"{self_name}.{first}"
                    extra |= {_rebase(r, _self_of(target), prefix) for r in self.reads(target, depth + 1)}
            elif not rest and function.env is not None:
                value = function.env.lookup(head)  # a function of the file (module or enclosing scope)
                if isinstance(value, FunctionValue):
                    extra |= self.reads(value, depth + 1)
        return extra

    def reads_of_call(self, function: FunctionValue, receiver: Optional[str]) -> frozenset[str]:
        """What calling ``function`` reads, in the caller's terms: ``self.W`` of a method called on
        ``model`` is ``model.W``."""
        reads = self.reads(function)
        if receiver is None or function.class_env is None:
            return reads
        self_name = _self_of(function)
        if self_name is None:
            return reads
        return frozenset(_rebase(r, self_name, receiver) for r in reads)

    # ------------------------------------------------------------------ zip
    def zip_shape(self, function: FunctionValue) -> Optional[ZipShape]:
        """How ``function`` zips its arguments when every ``return`` is ``zip(...)`` / ``list(zip(...))``
        of its own parameters; None otherwise."""
        key = id(function.node)
        if key in self._zip:
            return self._zip[key]
        shape = _zip_shape(function.node)
        self._zip[key] = shape
        return shape

    # --------------------------------------------------------------- layers
    def unused_layers(self, cls: ClassValue) -> tuple[str, ...]:
        """Attributes a Keras class sets to a new layer in ``__init__`` and never mentions again, in any
        method or anywhere in the file (``model.head(x)``): their variables never get a gradient."""
        key = id(cls.node)
        if key not in self._unused:
            self._unused[key] = self._find_unused_layers(cls)
        return self._unused[key]

    def _find_unused_layers(self, cls: ClassValue) -> tuple[str, ...]:
        init = method_of(cls, "__init__")
        if init is None or cls.env is None:
            return ()
        created = self._layers_created(init.node, _self_of(init))
        if not created:
            return ()
        if self._reaches_every_layer is None:
            self._reaches_every_layer = _REACHES_EVERY_LAYER.search(self.source) is not None
        if self._reaches_every_layer:
            return ()  # some code walks every layer of a model (`self.layers`, `getattr`, `get_layer`...)
        # a layer is used when its name appears anywhere but in its creation (in a method, in `model.head(x)`
        # elsewhere in the file, even in a comment: the check errs towards "used")
        if self._word_counts is None:
            self._word_counts = Counter(_WORD.findall(self.source))
        return tuple(sorted(a for a in created if self._word_counts[a] == 1))

    def passed_as_argument(self, name: str) -> bool:
        """Is ``name`` (``model``, ``self.net``) itself an argument of some call in the file?"""
        if name not in self._passed:
            pattern = rf"[(,]\s*(?:\w+\s*=\s*)?{re.escape(name)}\s*[,)]"
            self._passed[name] = re.search(pattern, self.source) is not None
        return self._passed[name]

    def _layers_created(self, init: cst.FunctionDef, self_name: Optional[str]) -> tuple[str, ...]:
        """``self.<attr> = <layer>(...)`` statements of ``__init__``: a Keras layer or model class, imported or
        defined in this file."""
        if self_name is None:
            return ()
        created = []
        for statement in init.body.body:
            if not isinstance(statement, cst.SimpleStatementLine):
                continue
            for small in statement.body:
                if not isinstance(small, cst.Assign) or len(small.targets) != 1:
                    continue
                target = small.targets[0].target
                if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) \
                        and target.value.value == self_name and isinstance(small.value, cst.Call) \
                        and self._builds_layer(small.value) and not _is_frozen(small.value):
                    created.append(target.attr.value)
        return tuple(created)

    def _builds_layer(self, call: cst.Call) -> bool:
        qualified = self.imports.resolve(call.func)
        if qualified is not None:
            return keras_object_class(qualified) is not None
        if isinstance(call.func, cst.Name):
            value = self.module_env.lookup(call.func.value)
            return isinstance(value, ClassValue) and bool(value.keras_class)
        return False

    @property
    def source(self) -> str:
        if self._source is None:
            self._source = self.module.code
        return self._source


def _self_of(function: FunctionValue) -> Optional[str]:
    params = parameter_names(function.node.params)
    return params[0] if function.class_env is not None and params else None


def _rebase(chain: str, self_name: Optional[str], prefix: str) -> str:
    if self_name is None:
        return chain
    if chain == self_name:
        return prefix
    if chain.startswith(self_name + "."):
        return prefix + chain[len(self_name):]
    return chain


def _chains_read(body: cst.CSTNode) -> list[str]:
    """Maximal name / attribute chains in ``body`` (``self.W``, ``x``), plain assignment targets excluded."""
    found: list[str] = []
    stack: list[cst.CSTNode] = [body]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.AssignTarget) and isinstance(current.target, (cst.Name, cst.Attribute)) \
                and dotted_name(current.target):
            continue
        if isinstance(current, (cst.Name, cst.Attribute)):
            chain = dotted_name(current)
            if chain is not None:
                found.append(chain)
                continue
            if isinstance(current, cst.Attribute):
                stack.append(current.value)
                continue
        if isinstance(current, cst.Arg):
            stack.append(current.value)  # not the keyword's name
            continue
        stack.extend(current.children)
    return found


def _callees(body: cst.CSTNode) -> list[str]:
    found: list[str] = []
    stack: list[cst.CSTNode] = [body]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Call):
            text = dotted_name(current.func)
            if text is not None:
                found.append(text)
        stack.extend(current.children)
    return found


def _zip_shape(node: cst.FunctionDef) -> Optional[ZipShape]:
    params = node.params
    positional = [p.name.value for p in (*params.posonly_params, *params.params)]
    star = params.star_arg.name.value if isinstance(params.star_arg, cst.Param) else None
    returns: list[cst.Return] = []
    stack: list[cst.CSTNode] = [node.body]
    while stack:
        current = stack.pop()
        if isinstance(current, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        if isinstance(current, cst.Return):
            returns.append(current)
        stack.extend(current.children)
    shape: Optional[ZipShape] = None
    for ret in returns:
        value = ret.value
        if isinstance(value, cst.Call) and terminal_name(value.func) in ("list", "tuple") and len(value.args) == 1:
            value = value.args[0].value
        if not (isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and value.func.value == "zip"):
            return None
        args = value.args
        if star is not None and len(args) == 1 and args[0].star == "*" and isinstance(args[0].value, cst.Name) \
                and args[0].value.value == star:
            this = ZipShape((), True)
        elif all(not a.star and a.keyword is None and isinstance(a.value, cst.Name) and a.value.value in positional
                 for a in args) and args:
            this = ZipShape(tuple(positional.index(a.value.value) for a in args), False)
        else:
            return None
        if shape is not None and shape != this:
            return None
        shape = this
    return shape


def _is_frozen(call: cst.Call) -> bool:
    """``Dense(4, trainable=False)``: the layer has no trainable variables."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "trainable" and not (
                isinstance(arg.value, cst.Name) and arg.value.value == "True"):
            return True
    return False
