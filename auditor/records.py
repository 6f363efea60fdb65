"""The step record: what one optimizer ``apply`` did, its JSON form, and the order records go in.

Pure Python (no TensorFlow): every later stage (evaluation, summary, sinks, the run file and
``gradlint report``) reads these records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

try:  # CPython's own call (the interpreter TensorFlow runs on); elsewhere records stay tracked
    import ctypes

    _gc_untrack = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("PyObject_GC_UnTrack", ctypes.pythonapi))
except (ImportError, AttributeError, OSError):
    _gc_untrack = None


@dataclass
class StepRecord:
    """What one ``apply`` call did. ``step`` is the optimizer's raw iteration count before it."""

    step: int
    optimizer: str
    global_norm: float | None  # before any clipping (user or optimizer)
    clipped_norm: float | None  # after all clipping (None: unknown)
    clip_ratio: float | None  # clipped / global (None: no clipping configured or seen)
    var_norms: dict = field(default_factory=dict)  # path -> norm reaching apply (None for None grads)
    none_vars: list = field(default_factory=list)
    changed_vars: list | None = None  # None: not checked on this step
    nonfinite: list = field(default_factory=list)
    applied_norm: float | None = None  # norm of the gradients reaching apply (after user clipping)
    var_set: tuple = ()  # every variable passed to apply (paths)
    replica_norms: list | None = None  # tf.distribute: each replica's norm before clipping
    clip_bound: float | None = None  # tf.distribute: the configured global_clipnorm (or clipnorm)
    clip_kind: str | None = None  # "global_clipnorm" or "clipnorm" (with clip_bound)
    replicas_in_sync: int | None = None  # tf.distribute: all workers' replicas (replica_norms: this worker's)
    sites: tuple = ()  # "file:line" of the user code that called apply at this site
    update_ratios: dict | None = None  # path -> ||w_after - w_before|| / ||w_before|| (checked steps)

    def to_dict(self) -> dict:
        """The record as JSON-ready data (non-finite floats as strings, see ``json_float``)."""
        out = {
            "step": self.step,
            "optimizer": self.optimizer,
            "global_norm": json_float(self.global_norm),
            "clipped_norm": json_float(self.clipped_norm),
            "clip_ratio": json_float(self.clip_ratio),
            "applied_norm": json_float(self.applied_norm),
            "var_norms": {k: json_float(v) for k, v in self.var_norms.items()},
            "none_vars": list(self.none_vars),
            "changed_vars": None if self.changed_vars is None else list(self.changed_vars),
            "nonfinite": list(self.nonfinite),
            "sites": list(self.sites),
            "update_ratios": None if self.update_ratios is None else
            {k: json_float(v) for k, v in self.update_ratios.items()},
        }
        if self.replica_norms is not None:
            out["replica_norms"] = [json_float(x) for x in self.replica_norms]
            out["clip_bound"] = json_float(self.clip_bound)
            out["clip_kind"] = self.clip_kind
            out["replicas_in_sync"] = self.replicas_in_sync
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "StepRecord":
        """The inverse of ``to_dict`` (missing fields get their defaults; ``step`` is required)."""
        var_norms = {path: float_from_json(norm) for path, norm in (data.get("var_norms") or {}).items()}
        replica_norms = data.get("replica_norms")
        return cls(
            step=int(data["step"]),
            optimizer=str(data.get("optimizer", "?")),
            global_norm=float_from_json(data.get("global_norm")),
            clipped_norm=float_from_json(data.get("clipped_norm")),
            clip_ratio=float_from_json(data.get("clip_ratio")),
            var_norms=var_norms,
            none_vars=list(data.get("none_vars") or ()),
            changed_vars=None if data.get("changed_vars") is None else list(data["changed_vars"]),
            nonfinite=list(data.get("nonfinite") or ()),
            applied_norm=float_from_json(data.get("applied_norm")),
            var_set=tuple(var_norms),
            replica_norms=None if replica_norms is None else [float_from_json(x) for x in replica_norms],
            clip_bound=float_from_json(data.get("clip_bound")),
            clip_kind=data.get("clip_kind"),
            replicas_in_sync=data.get("replicas_in_sync"),
            sites=tuple(data.get("sites") or ()),
            update_ratios=None if data.get("update_ratios") is None else
            {path: float_from_json(x) for path, x in data["update_ratios"].items()},
        )


def json_float(x):
    """A float for ``json.dumps(..., allow_nan=False)``: non-finite values become "nan", "inf", "-inf"."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)


def float_from_json(x):
    """The inverse of ``json_float`` (None stays None)."""
    if x is None:
        return None
    return float(x)  # also parses "nan", "inf", "-inf"


def in_step_order(records) -> list[StepRecord]:
    """Records sorted by step, then optimizer (the order of ``audit.steps`` and of the sinks)."""
    return sorted(records, key=lambda r: (r.step, r.optimizer))


def leave_to_refcounting(records) -> None:
    """Take ``records`` and their lists out of Python's cycle collector (reference counting still
    frees them). A record holds strings, numbers and containers of them, so it can be part of no
    cycle; tracked, the three objects of each record kept for ``history`` pile up in the oldest
    generation and bring on full collections of the whole process: in a TensorFlow process
    (~300,000 objects) one of ~150 ms every ~20,000 steps, ~8 µs a step. (A cycle you build
    through a record's lists is not collected.)"""
    if _gc_untrack is None:
        return
    for record in records:
        _gc_untrack(record)
        for name in _LIST_FIELDS:
            value = getattr(record, name)
            if value is not None:
                _gc_untrack(value)


# The record's list fields (its dicts of numbers the interpreter leaves untracked by itself).
_LIST_FIELDS = tuple(f.name for f in fields(StepRecord) if f.type.split(" |")[0] == "list")
