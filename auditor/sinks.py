"""Where the numbers go: streamed JSON lines, TensorBoard event files and Python ``logging``.

Sinks are opened when a watch is entered, receive step records as they are drained from the
device (host side, so XLA and tf.distribute runs write the same way) and are closed at exit
with the findings. Nothing is kept here, so memory stays bounded on long runs.
"""
from __future__ import annotations

import logging
import math
import os

from auditor.runfile import RunFileWriter

logger = logging.getLogger("auditor")


def open_sinks(jsonl, logdir, settings: dict) -> list:
    """The sinks a watch asked for (JSONL file, TensorBoard logdir); each has ``records(batch)``,
    ``histograms(step, per_variable)`` and ``close(findings, variables, lost_records, recorded_steps,
    errors)`` (``errors``: what failed inside the auditor at exit)."""
    sinks = []
    try:
        if jsonl:
            sinks.append(JsonlSink(jsonl, settings))
        if logdir:
            sinks.append(TensorBoardSink(logdir))
    except BaseException:
        for sink in sinks:  # a bad logdir must not leave the JSONL file open
            sink.close([], {}, 0, 0, [])
        raise
    return sinks


class JsonlSink:
    """The run file (``auditor.runfile``), streamed: step lines as records are drained."""

    def __init__(self, path, settings: dict):
        self.writer = RunFileWriter(path, settings)

    def records(self, records) -> None:
        self.writer.steps(records)

    def histograms(self, step: int, per_variable) -> None:
        """Histograms go to TensorBoard only (they would dwarf the step lines)."""

    def close(self, findings, variables: dict, lost_records: int, recorded_steps: int, errors=()) -> None:
        self.writer.close(findings, variables, lost_records, recorded_steps, errors)


def tag_for(path: str, name: str) -> str:
    """TensorBoard tag for a per-variable scalar: the variable's layer path first, so that the
    dashboard groups a layer's variables together (``model/dense/kernel/grad_norm``); a TF
    variable name's ``:0`` is dropped (``dense/kernel:0`` -> ``dense/kernel/grad_norm``)."""
    if path.endswith(":0"):
        path = path[:-2]
    return f"{path}/{name}"


class TensorBoardSink:
    """Per-step scalars (global norm, clipped norm, clip ratio, None-gradient count, per-variable
    norms), per-variable histograms of gradient values (computed on the device every
    ``histogram_every`` steps) and the findings as text.

    Events are written with TensorBoard's own event-file writer and protos (no TensorFlow ops),
    so writing works the same from eager code, a ``tf.numpy_function`` of a TF1 ``Session`` run,
    or a program that disabled eager execution."""

    def __init__(self, logdir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir = os.fspath(logdir)
        if "://" not in logdir:  # a local path: a clear OSError now rather than TF's later
            os.makedirs(logdir, exist_ok=True)
        self.writer = EventFileWriter(logdir)
        self._metadata: dict = {}
        # A run starts here: TensorBoard drops what an earlier run left in a reused logdir (its
        # "no findings" beside this run's findings, its curves), as after a restart.
        from tensorboard.compat.proto import event_pb2

        # (TensorBoard purges the steps *after* a START's: at -1, every step of the earlier run.)
        self.writer.add_event(event_pb2.Event(step=-1, session_log=event_pb2.SessionLog(
            status=event_pb2.SessionLog.START)))

    def _write(self, tag, value, step, plugin) -> None:
        import time

        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.util import tensor_util

        metadata = self._metadata.get((plugin, tag))
        if metadata is None:  # full metadata on a tag's first value only, as tf.summary does
            metadata = _plugin_metadata(plugin)
            self._metadata[(plugin, tag)] = summary_pb2.SummaryMetadata(plugin_data=metadata.plugin_data)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, tensor=tensor_util.make_tensor_proto(value), metadata=metadata)])
        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def records(self, records) -> None:
        import numpy as np

        for r in records:
            prefix = f"auditor/{r.optimizer}"
            for name in ("global_norm", "clipped_norm", "clip_ratio"):
                value = getattr(r, name)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    self._write(f"{prefix}/{name}", np.float32(value), r.step, "scalars")
            self._write(f"{prefix}/none_gradients", np.float32(len(r.none_vars)), r.step, "scalars")
            for path, norm in r.var_norms.items():
                if norm is not None:
                    self._write(tag_for(path, "grad_norm"), np.float32(norm), r.step, "scalars")
            for path, ratio in (r.update_ratios or {}).items():
                if ratio is not None and math.isfinite(ratio):
                    self._write(tag_for(path, "update_ratio"), np.float32(ratio), r.step, "scalars")
        self.writer.flush()

    def histograms(self, step: int, per_variable) -> None:
        """``per_variable``: ``(path, (min, max, counts) or None)`` pairs of one step."""
        import numpy as np

        for path, hist in per_variable:
            if hist is None:
                continue
            lo, hi, counts = hist
            if hi > lo:
                edges = np.linspace(lo, hi, len(counts) + 1)
                buckets = np.stack([edges[:-1], edges[1:], counts], axis=1)
            else:  # every value equal: one bucket around it, as TensorBoard draws it
                buckets = np.array([[lo - 0.5, lo + 0.5, counts.sum()]])
            self._write(tag_for(path, "grad_hist"), buckets.astype(np.float64), step, "histograms")
        self.writer.flush()

    def close(self, findings, variables: dict, lost_records: int, recorded_steps: int, errors=()) -> None:
        import numpy as np

        for f in findings:
            when = f"step {f.step}" if f.step is not None else "whole run"
            where = f" at {', '.join(f.sites)}" if f.sites else ""
            text = f"**{f.code} {f.name}** ({when}){where}: {f.message}"
            self._write(f"auditor/findings/{f.code}", np.array(text, dtype=object),
                        f.step if f.step is not None else recorded_steps, "text")
        # Always written, so a reused logdir shows this run's verdict under one tag.
        verdict = f"{len(findings)} finding(s): " + ", ".join(f.code for f in findings) if findings else "no findings"
        self._write("auditor/findings", np.array(verdict, dtype=object), 0, "text")
        self.writer.close()


def _plugin_metadata(plugin: str):
    """TensorBoard's summary metadata for a scalar, histogram or text value."""
    from tensorboard.plugins.histogram import metadata as histogram
    from tensorboard.plugins.scalar import metadata as scalar
    from tensorboard.plugins.text import metadata as text

    module = {"scalars": scalar, "histograms": histogram, "text": text}[plugin]
    return module.create_summary_metadata(display_name="", description="")


def log_findings(findings) -> None:
    """Each finding as a WARNING on the ``auditor`` logger (so it reaches the user's logs)."""
    for f in findings:
        when = f" at step {f.step}" if f.step is not None else " (whole run)"
        where = f" at {', '.join(f.sites)}" if f.sites else ""
        logger.warning("%s %s%s%s: %s", f.code, f.name, when, where, f.message)
