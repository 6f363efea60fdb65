"""A testing hook: what the auditor holds between watches, for tests and debugging.

Not part of the watch API; the tests use it instead of reaching into private state.
"""
from __future__ import annotations

from auditor import patching, registry


def patch_targets() -> list[tuple]:
    """``(owner, attribute)`` of every patch a watch installs now (libraries imported so far)."""
    from auditor.engines import ENGINES

    return [(p.owner, p.attribute) for engine in ENGINES
            if getattr(engine, "ready", lambda: True)() for p in engine.patches()]


def patches_installed() -> bool:
    """Whether any patch is in place (only while a watch is active)."""
    return patching.installed()


def census() -> dict:
    """Active watches, probes alive, probes with subscribers, probes kept with their optimizer,
    and the user clips remembered in this thread."""
    from auditor.engines import site

    return dict(registry.census(), clips=site.clip_memory_size())


def probes(audit) -> list:
    """The apply-site probes a watch subscribed to (``DeviceProbe`` / TF1 ``SessionProbe`` / ``EagerProbe``)."""
    return list(audit.recorder.probes) if audit.recorder is not None else []
