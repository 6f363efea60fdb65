"""Where the numbers go: streamed JSON lines, TensorBoard event files and Python ``logging``.

Sinks are opened when a watch is entered, receive step records as they are drained from the
device (host side, so XLA and tf.distribute runs write the same way) and are closed at exit
with the findings. Nothing is kept here, so memory stays bounded on long runs.
"""
from __future__ import annotations

import json
import logging
import math
import os

logger = logging.getLogger("auditor")


def open_sinks(audit) -> list:
    sinks = []
    if audit.jsonl:
        sinks.append(JsonlSink(audit.jsonl, audit))
    if audit.logdir:
        sinks.append(TensorBoardSink(audit.logdir))
    return sinks


class JsonlSink:
    """``{"type": "run"}`` first, one ``{"type": "step"}`` line per record as it is drained,
    then ``{"type": "finding"}`` lines and ``{"type": "end"}`` with the variable table."""

    def __init__(self, path, audit):
        self.out = open(os.fspath(path), "w", encoding="utf-8")
        self._write({"type": "run", "settings": audit.settings()})

    def _write(self, obj) -> None:
        self.out.write(json.dumps(obj, allow_nan=False) + "\n")

    def records(self, records) -> None:
        for record in records:
            self._write({"type": "step", **record.to_dict()})
        self.out.flush()

    def histograms(self, step: int, per_variable) -> None:
        """Histograms go to TensorBoard only (they would dwarf the step lines)."""

    def close(self, audit, findings) -> None:
        from auditor import report

        for finding in findings:
            self._write({"type": "finding", **finding.to_dict()})
        data = report.to_dict(audit, steps=False)
        self._write({"type": "end", "variables": data["variables"], "lost_records": data["lost_records"],
                     "recorded_steps": audit.recorded_count})
        self.out.close()


def tag_for(path: str, name: str) -> str:
    """TensorBoard tag for a per-variable scalar: the variable's layer path first, so that the
    dashboard groups a layer's variables together (``model/dense/kernel/grad_norm``)."""
    return f"{path}/{name}"


class TensorBoardSink:
    """Per-step scalars (global norm, clipped norm, clip ratio, None-gradient count, per-variable
    norms), per-variable histograms of gradient values (computed on the device every
    ``histogram_every`` steps) and the findings as text."""

    def __init__(self, logdir):
        import tensorflow as tf

        self.tf = tf
        with tf.init_scope():
            self.writer = tf.summary.create_file_writer(os.fspath(logdir))

    def records(self, records) -> None:
        tf = self.tf
        with tf.init_scope(), self.writer.as_default():
            for r in records:
                prefix = f"auditor/{r.optimizer}"
                for name in ("global_norm", "clipped_norm", "clip_ratio"):
                    value = getattr(r, name)
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        tf.summary.scalar(f"{prefix}/{name}", value, step=r.step)
                tf.summary.scalar(f"{prefix}/none_gradients", len(r.none_vars), step=r.step)
                for path, norm in r.var_norms.items():
                    if norm is not None:
                        tf.summary.scalar(tag_for(path, "grad_norm"), norm, step=r.step)
        self.writer.flush()

    def histograms(self, step: int, per_variable) -> None:
        """``per_variable``: ``(path, (min, max, counts) or None)`` pairs of one step."""
        import numpy as np
        from tensorboard.plugins.histogram import metadata

        tf = self.tf
        with tf.init_scope(), self.writer.as_default():
            for path, hist in per_variable:
                if hist is None:
                    continue
                lo, hi, counts = hist
                if hi > lo:
                    edges = np.linspace(lo, hi, len(counts) + 1)
                    buckets = np.stack([edges[:-1], edges[1:], counts], axis=1)
                else:  # every value equal: one bucket around it, as TensorBoard draws it
                    buckets = np.array([[lo - 0.5, lo + 0.5, counts.sum()]])
                tag = tag_for(path, "grad_hist")
                tf.summary.write(tag, tf.constant(buckets, tf.float64), step=step,
                                 metadata=metadata.create_summary_metadata(tag, f"gradient values of {path}"))
        self.writer.flush()

    def close(self, audit, findings) -> None:
        tf = self.tf
        with tf.init_scope(), self.writer.as_default():
            for i, f in enumerate(findings):
                tf.summary.text(f"auditor/findings/{f.code}", f"**{f.code} {f.name}** (step {f.step}): {f.message}",
                                step=f.step if f.step is not None else i)
            if not findings:
                tf.summary.text("auditor/findings", "no findings", step=0)
        self.writer.flush()
        self.writer.close()


def log_findings(findings) -> None:
    """Each finding as a WARNING on the ``auditor`` logger (so it reaches the user's logs)."""
    for f in findings:
        where = f" at step {f.step}" if f.step is not None else ""
        logger.warning("%s %s%s: %s", f.code, f.name, where, f.message)
