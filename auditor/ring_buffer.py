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
    """``capacity`` rows of ``width`` float32 values, each followed by its int64 tag (two floats,
    bit for bit), and a write count kept in slot ``slot`` of an int64 ``counter`` variable its owner
    shares with other state: every variable a ``tf.function`` captures costs on every call."""

    def __init__(self, width: int, capacity: int, counter, slot: int, device=None):
        from auditor.graph_stats import make_variable

        self.width = width
        self.capacity = capacity
        self.counter = counter
        self.slot = slot
        with tf.init_scope():
            self.rows = make_variable(tf.zeros([capacity, width + 2], tf.float32), "auditor_ring_rows", device)
        self.host_cursor = 0  # rows before this index were drained already

    def write(self, parts, tag):
        """Ops appending one row (float32 ``parts``, concatenated) with an int64 tag; no host sync."""
        count = tf.raw_ops.ResourceGather(resource=self.counter.handle, indices=self.slot, dtype=tf.int64)
        row = tf.concat(list(parts) + [tf.bitcast(tf.cast(tag, tf.int64), tf.float32)], 0)
        tf.raw_ops.ResourceScatterUpdate(resource=self.rows.handle, indices=tf.math.floormod(count, self.capacity),
                                         updates=row)
        tf.raw_ops.ResourceScatterAdd(resource=self.counter.handle, indices=self.slot,
                                      updates=tf.constant(1, tf.int64))

    def written(self) -> int:
        """Rows written so far (a host read)."""
        from auditor.graph_stats import host_read

        return int(host_read(self.counter, self.slot))

    def drain(self):
        """Host read of rows written since the last drain: (rows, tags, lost_count). Syncs once."""
        with tf.init_scope():
            count = self.written()
            start = max(self.host_cursor, count - self.capacity)
            lost = start - self.host_cursor
            if count == start:
                self.host_cursor = count
                return np.zeros([0, self.width], np.float32), np.zeros([0], np.int64), lost
            data = self.rows.numpy()
        data = data[np.arange(start, count) % self.capacity]
        self.host_cursor = count
        tags = np.ascontiguousarray(data[:, self.width:]).view(np.int64).reshape(-1)
        return data[:, :self.width], tags, lost

    def pending_estimate(self) -> int:
        """Rows written since the last drain (host read of one scalar)."""
        return self.written() - self.host_cursor


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
