"""Scopes of the analysis: bindings, guards, and the provenance of each bound value.

Provenance is what a value was computed from, as a frozenset of entries:

- ``("call", callee_text, tapes)``: a call whose result flowed in; ``tapes`` are the ids of the
  gradient tapes recording when it ran;
- ``("name", dotted)``: a name or attribute chain that was read;
- ``("invoke", function, receiver, tapes)``: a function or method defined in this file was called
  (``receiver`` is the text ``self`` stands for in a method, else None); what it reads is in its summary;
- ``("attr", "losses")``: ``model.losses`` was read;
- ``("break", node_id, description, tapes)``: an op with no gradient (``.numpy()``, ``tf.argmax``,
  a comparison...); it replaces the provenance of its inputs, which no longer reach the result;
- ``("mean", node_id, tapes)``: ``tf.reduce_mean`` inside a ``strategy.run`` replica function;
- ``TRUNCATED``: entries were dropped to bound the set, so it is not the whole history.
"""
from __future__ import annotations

from typing import Optional

from gradlint.semantic.values import Value

Provenance = frozenset
EMPTY: Provenance = frozenset()
TRUNCATED = ("truncated",)
MAX_ENTRIES = 96  # bound the sets on very long functions; provenance is a heuristic, not a proof


def merge(*parts) -> Provenance:
    merged: set = set()
    for part in parts:
        merged.update(part)
        if len(merged) > MAX_ENTRIES:
            merged.add(TRUNCATED)
            break
    return frozenset(merged)


class Env:
    """A scope's bindings plus the guards that hold at the current point of the walk."""

    def __init__(self, kind: str, parent: Optional["Env"] = None, class_env: Optional["Env"] = None,
                 self_name: Optional[str] = None) -> None:
        self.kind = kind                  # "module" | "function" | "class" | "comprehension"
        self.parent = parent
        self.class_env = class_env
        self.self_name = self_name
        self.names: dict[str, Optional[Value]] = {}
        self.provenance: dict[str, Provenance] = {}
        self.bound_tapes: dict[str, frozenset] = {}
        self.guarded: frozenset[str] = frozenset()
        self.keras_class: Optional[str] = None  # for class scopes deriving from a Keras Model/Layer
        self.class_value = None  # the ClassValue of a class scope
        self.context = None      # the FunctionContext of a function scope

    def owner_of(self, name: str) -> Optional["Env"]:
        env: Optional[Env] = self
        while env is not None:
            if name in env.names:
                return env
            env = env.parent
        return None

    def lookup(self, name: str) -> Optional[Value]:
        owner = self.owner_of(name)
        return owner.names[name] if owner is not None else None

    def provenance_of(self, name: str) -> Provenance:
        owner = self.owner_of(name)
        return owner.provenance.get(name, EMPTY) if owner is not None else EMPTY

    def tapes_when_bound(self, name: str) -> Optional[frozenset]:
        owner = self.owner_of(name)
        return owner.bound_tapes.get(name) if owner is not None else None

    def is_guarded(self, key: str) -> bool:
        env: Optional[Env] = self
        while env is not None and env.kind == "comprehension":
            if key in env.guarded:
                return True
            env = env.parent
        return env is not None and key in env.guarded

    def function_env(self) -> "Env":
        env = self
        while env.kind == "comprehension" and env.parent is not None:
            env = env.parent
        return env


class Shadowing:
    """``name in Shadowing(env)``: is ``name`` bound in a function/class scope (hiding an import)?"""

    __slots__ = ("env",)

    def __init__(self, env: Env) -> None:
        self.env = env

    def __contains__(self, name: str) -> bool:
        current: Optional[Env] = self.env
        while current is not None and current.kind != "module":
            if name in current.names:
                return True
            current = current.parent
        return False
