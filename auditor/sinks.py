"""Minimal sinks written at exit: JSON lines and TensorBoard scalars (richer sinks: issue 6)."""
from __future__ import annotations

import json
import os


def write(audit) -> None:
    if audit.jsonl:
        write_jsonl(audit, audit.jsonl)
    if audit.logdir:
        write_tensorboard(audit, audit.logdir)


def write_jsonl(audit, path) -> None:
    """One line per step record ({"type": "step", ...}), then one per finding ({"type": "finding"})."""
    data = audit.to_dict()
    with open(os.fspath(path), "w", encoding="utf-8") as out:
        for step in data["steps"]:
            out.write(json.dumps({"type": "step", **step}, allow_nan=False) + "\n")
        for finding in data["findings"]:
            out.write(json.dumps({"type": "finding", **finding}, allow_nan=False) + "\n")


def write_tensorboard(audit, logdir) -> None:
    """Scalars per optimizer: global_norm, clipped_norm, clip_ratio, keyed by optimizer step."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(os.fspath(logdir))
    with tf.init_scope(), writer.as_default():
        for record in audit.steps:
            for name in ("global_norm", "clipped_norm", "clip_ratio"):
                value = getattr(record, name)
                if value is not None:
                    tf.summary.scalar(f"auditor/{record.optimizer}/{name}", value, step=record.step)
    writer.flush()
    writer.close()
