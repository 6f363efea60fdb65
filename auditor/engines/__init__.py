"""The training engines the auditor hooks, and how a watch joins and leaves them.

Each engine module declares its patches (``patches()``); those whose library may be imported
after the watch starts also have ``ready()`` and are installed at the first host point after.
A new engine is one module here (its patches and an ``ApplyEngine`` for the shared apply-site
flow in ``site.py``) and one entry in ``ENGINES``.
"""
from __future__ import annotations

from auditor import patching, registry
from auditor.engines import distribute, keras3, sonnet, tensorflow, tf1, tf_keras

ENGINES = (tensorflow, distribute, keras3, tf1, tf_keras, sonnet)


def attach(recorder) -> None:
    """Start recording for a watch: install the patches if it is the first one."""
    with registry.lock:
        first = not registry.active()
        if first:
            patching.install([p for engine in ENGINES if _ready(engine) for p in engine.patches()])
            patching.offer_late([engine for engine in ENGINES if not _ready(engine)])
        else:
            patching.install_late()
        try:
            registry.register(recorder)
        except BaseException:
            if first:
                patching.restore_all()
            raise


def detach(recorder) -> None:
    """Stop recording for a watch (its rows are drained); restore the patches if it was the last."""
    with registry.lock:
        try:
            registry.unregister(recorder)
        finally:
            if not registry.active():
                patching.restore_all()


def _ready(engine) -> bool:
    ready = getattr(engine, "ready", None)
    return ready is None or ready()
