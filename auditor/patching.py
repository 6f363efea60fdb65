"""Installing and restoring the class-level patches the engines declare.

An engine declares ``Patch(owner, attribute, make)`` entries: ``make(original)`` returns the
replacement, which keeps calling ``original`` (so a reference to a replacement taken during a watch
still works after the restore). Patches are installed when the first watch is entered and restored
when the last one exits (``auditor.engines`` calls these under ``registry.lock``). Engines whose
library is imported later (tf_keras, Sonnet) are offered again by ``install_late`` at host points.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from auditor import registry

_installed: dict = {}  # (id(owner), attribute) -> (owner, attribute, original)
_late: list = []  # engines whose library was not imported yet when the patches were installed
_modules_seen = 0  # len(sys.modules) when install_late last looked


@dataclass(frozen=True)
class Patch:
    """Replace ``owner.attribute`` by ``make(original)`` while a watch is active."""

    owner: object
    attribute: str
    make: Callable

    def original(self):
        """The attribute as the owner defines it (from its ``__dict__`` when it has one)."""
        table = getattr(self.owner, "__dict__", {})
        return table[self.attribute] if self.attribute in table else getattr(self.owner, self.attribute)


def imported(classes) -> bool:
    """Whether every module of ``(module, class)`` pairs is imported (never imports one)."""
    return all(module in sys.modules for module, _ in classes)


def method_patches(classes, attribute: str, make) -> list[Patch]:
    """A ``Patch`` of ``attribute`` for each imported class of ``(module, class)`` pairs that defines it."""
    out = []
    for module, name in classes:
        owner = getattr(sys.modules.get(module), name, None)
        if owner is not None and attribute in owner.__dict__:
            out.append(Patch(owner, attribute, make))
    return out


def install(patches) -> None:
    """Install every patch not installed yet; on an error, undo this call's patches and re-raise."""
    done = []
    try:
        for patch in patches:
            key = (id(patch.owner), patch.attribute)
            if key in _installed:
                continue
            original = patch.original()
            _installed[key] = (patch.owner, patch.attribute, original)
            done.append(key)
            setattr(patch.owner, patch.attribute, patch.make(original))
    except BaseException:
        for key in reversed(done):
            owner, attribute, original = _installed.pop(key)
            setattr(owner, attribute, original)
        raise


def offer_late(engines) -> None:
    """Engines (with ``ready()`` and ``patches()``) whose library is not imported yet: installed
    by ``install_late`` once it is."""
    global _modules_seen
    _late[:] = list(engines)
    _modules_seen = 0


def install_late() -> None:
    """Install the patches of libraries imported since (nothing to do while no module was
    imported since the last look)."""
    global _modules_seen
    if not _late or len(sys.modules) == _modules_seen:
        return
    _modules_seen = len(sys.modules)
    for engine in list(_late):
        if engine.ready():
            with registry.lock:
                if _installed and engine in _late:
                    install(engine.patches())
                    _late.remove(engine)


def restore_all() -> None:
    """Put every patched attribute back."""
    _late.clear()
    while _installed:
        _, (owner, attribute, original) = _installed.popitem()
        setattr(owner, attribute, original)


def installed() -> bool:
    """Whether any patch is in place."""
    return bool(_installed)


def patched() -> list:
    """``(owner, attribute)`` of every installed patch (a testing hook)."""
    return [(owner, attribute) for owner, attribute, _ in _installed.values()]
