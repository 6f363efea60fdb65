"""Ring buffers of float rows drained to the host: on the device (written in-graph, no host
sync per step) and on the host (for TF1, whose rows arrive through a ``tf.numpy_function``).

The device variables are created under ``tf.init_scope()`` so that a ``tf.function`` (or an XLA
cluster) tracing the first write captures them instead of creating them per call. A row is
written in place (``ResourceScatterUpdate``: no copy of the ring per step; XLA compiles it).
"""
from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf


class RingBuffer:
    """``capacity`` rows of ``width`` float32 values plus an int64 tag per row and a write counter."""

    def __init__(self, width: int, capacity: int, device=None):
        from auditor.graph_stats import make_variable

        self.width = width
        self.capacity = capacity
        with tf.init_scope():
            self.rows = make_variable(tf.zeros([capacity, width], tf.float32), "auditor_ring_rows", device)
            self.tags = make_variable(tf.zeros([capacity], tf.int64), "auditor_ring_tags", device)
            self.count = make_variable(tf.constant(0, tf.int64), "auditor_ring_count", device)
        self.host_cursor = 0  # rows before this index were drained already

    def write(self, row, tag):
        """Ops appending one row (float32 [width]) with an int64 tag; no host sync."""
        index = tf.math.floormod(self.count.read_value(), self.capacity)
        tf.raw_ops.ResourceScatterUpdate(resource=self.rows.handle, indices=index, updates=row)
        tf.raw_ops.ResourceScatterUpdate(resource=self.tags.handle, indices=index, updates=tag)
        self.count.assign_add(1)

    def drain(self):
        """Host read of rows written since the last drain: (rows, tags, lost_count). Syncs once."""
        with tf.init_scope():
            count = int(self.count.numpy())
            start = max(self.host_cursor, count - self.capacity)
            lost = start - self.host_cursor
            if count == start:
                self.host_cursor = count
                return np.zeros([0, self.width], np.float32), np.zeros([0], np.int64), lost
            rows = self.rows.numpy()
            tags = self.tags.numpy()
        order = np.arange(start, count) % self.capacity
        self.host_cursor = count
        return rows[order], tags[order], lost

    def pending_estimate(self) -> int:
        """Rows written since the last drain (host read of one scalar)."""
        with tf.init_scope():
            return int(self.count.numpy()) - self.host_cursor


class HostRing:
    """The host-side counterpart of ``RingBuffer``: rows pushed from any thread, drained in order."""

    def __init__(self, width: int):
        self.width = width
        self._rows: list = []
        self._tags: list = []
        self._lock = threading.Lock()

    def push(self, row, tag) -> None:
        with self._lock:
            self._rows.append(row)
            self._tags.append(tag)

    def drain(self):
        with self._lock:
            rows, tags, self._rows, self._tags = self._rows, self._tags, [], []
        if not rows:
            return np.zeros([0, self.width], np.float32), np.zeros([0], np.int64), 0
        return np.stack(rows).astype(np.float32).reshape(len(rows), self.width), np.asarray(tags, np.int64), 0

    def pending_estimate(self) -> int:
        return len(self._rows)
