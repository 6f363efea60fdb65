"""A device-side ring buffer of float rows, written in-graph and drained to the host.

The variables are created under ``tf.init_scope()`` so that a ``tf.function`` (or an XLA
cluster) tracing the first write captures them instead of creating them per call. Rows
are written with ``tensor_scatter_nd_update`` + ``assign``: a shape-stable update XLA
compiles once.
"""
from __future__ import annotations

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
        count = self.count.read_value()
        index = tf.reshape(tf.math.floormod(count, self.capacity), [1, 1])
        self.rows.assign(tf.tensor_scatter_nd_update(self.rows, index, tf.reshape(row, [1, self.width])))
        self.tags.assign(tf.tensor_scatter_nd_update(self.tags, index, tf.reshape(tag, [1])))
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
        order = [k % self.capacity for k in range(start, count)]
        self.host_cursor = count
        return rows[order], tags[order], lost

    def pending_estimate(self) -> int:
        """Rows written since the last drain (host read of one scalar)."""
        with tf.init_scope():
            return int(self.count.numpy()) - self.host_cursor
