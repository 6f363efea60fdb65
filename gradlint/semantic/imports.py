"""Import and alias resolution: which module object each local name stands for."""
from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.semantic.syntax import dotted_name
from gradlint.semantic.tfapi import canonical

_BUILTINS = frozenset({
    "zip", "list", "tuple", "map", "filter", "enumerate", "range", "len", "sorted", "reversed",
    "float", "int", "abs", "round", "sum", "max", "min", "isinstance", "print", "dict", "set",
})


class ImportMap:
    """Local name -> fully qualified name, from every import statement in the file."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.uses_tf1_or_legacy_keras = False  # tf.compat.v1 / tf_keras in use: TF1-style variable names
        self.uses_keras = False  # keras / tf.keras referenced (Keras 3 variables have no ':0' names)

    def add_import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = dotted_name(alias.name)
            if full is None:
                continue
            if full.split(".")[0] == "keras" or full.startswith("tensorflow.keras"):
                self.uses_keras = True
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.aliases[alias.asname.name.value] = full
            else:
                top = full.split(".", 1)[0]
                self.aliases[top] = top

    def add_import_from(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted_name(node.module)
        if module is None:
            return
        for alias in node.names:
            name = dotted_name(alias.name)
            if name is None:
                continue
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            self.aliases[local] = f"{module}.{name}"
            if canonical(f"{module}.{name}").split(".")[0] == "keras":
                self.uses_keras = True

    def resolve(self, expr: cst.BaseExpression, shadowed: frozenset[str] | set[str] = frozenset()) -> Optional[str]:
        """Canonical qualified name of ``expr`` (``tf.keras.optimizers.Adam`` -> ``keras.optimizers.Adam``)."""
        dotted = dotted_name(expr)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head in shadowed:
            return None
        base = self.aliases.get(head)
        if base is None:
            if head in _BUILTINS and not rest:
                return f"builtins.{head}"
            return None
        full = f"{base}.{rest}" if rest else base
        if "compat.v1" in full or full.startswith(("tf_keras", "tensorflow.python.keras")):
            self.uses_tf1_or_legacy_keras = True
        result = canonical(full)
        if result == "keras" or result.startswith("keras."):
            self.uses_keras = True
        return result

    @property
    def imports_tensorflow(self) -> bool:
        return any(v.split(".", 1)[0] in ("tensorflow", "keras", "tf_keras") for v in self.aliases.values())
