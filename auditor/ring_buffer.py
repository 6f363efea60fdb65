"""Ring buffers of float rows drained to the host: on the device (written in-graph, no host
sync per step), in a TF1 graph (written by the train op, read with ``Session.run``) and on the
host (rows a TF1 optimizer hands over through a ``tf.numpy_function`` in eager code or a
``tf.function``, and rows read from a session).

The device variables are created under ``tf.init_scope()`` so that a ``tf.function`` (or an XLA
cluster) tracing the first write captures them instead of creating them per call. A row is
written in place (``ResourceScatterUpdate``: no copy of the ring per step; XLA compiles it).
"""
from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf

from auditor.graph_stats import host_read


def tag_columns(tag):
    """Ops: an int64 tag as the two float32 columns that end a row (bit for bit)."""
    return tf.bitcast(tf.cast(tag, tf.int64), tf.float32)


def tags_of(columns) -> np.ndarray:
    """The int64 tags of rows' two tag columns (``[k, 2]`` float32), as ``tag_columns`` wrote them."""
    return np.ascontiguousarray(columns).view(np.int64).reshape(-1)


class RingBuffer:
    """``capacity`` rows of ``width`` float32 values, each followed by its int64 tag (two floats,
    bit for bit), and a write count kept in slot ``slot`` of an int64 ``counter`` variable its owner
    shares with other state: every variable a ``tf.function`` captures costs on every call. For
    the same reason ``spare`` more float32 values (its owner's copies of small variables) can live
    in rows after the ring (``write_spare``, ``read_spare``)."""

    def __init__(self, width: int, capacity: int, counter, slot: int, device=None, spare: int = 0):
        from auditor.graph_stats import make_variable

        self.width = width
        self.capacity = capacity
        self.counter = counter
        self.slot = slot
        self.spare = spare
        self.spare_rows = -(-spare // (width + 2))
        with tf.init_scope():
            self.rows = make_variable(tf.zeros([capacity + self.spare_rows, width + 2], tf.float32),
                                      "auditor_ring_rows", device)
        self.host_cursor = 0  # rows before this index were drained already

    def write_spare(self, parts):
        """Op: the float32 ``parts`` (``spare`` values once concatenated) into the spare rows."""
        pad = self.spare_rows * (self.width + 2) - self.spare
        values = tf.concat(list(parts) + ([tf.zeros([pad], tf.float32)] if pad else []), 0)
        return tf.raw_ops.ResourceScatterUpdate(
            resource=self.rows.handle, indices=np.arange(self.capacity, self.capacity + self.spare_rows),
            updates=tf.reshape(values, [self.spare_rows, self.width + 2]))

    def read_spare(self):
        """The ``spare`` values (flat; padding included at the end)."""
        rows = tf.raw_ops.ResourceGather(resource=self.rows.handle, dtype=tf.float32,
                                         indices=np.arange(self.capacity, self.capacity + self.spare_rows))
        return tf.reshape(rows, [-1])

    def write(self, parts, tag, count=None):
        """Ops appending one row (float32 ``parts``, concatenated) with an int64 tag; no host sync.
        ``count``: the write count, where the caller read it already (with other state)."""
        slot = tf.constant(self.slot)  # one constant node for both (each node costs per step)
        if count is None:
            count = tf.raw_ops.ResourceGather(resource=self.counter.handle, indices=slot, dtype=tf.int64)
        row = tf.concat(list(parts) + [tag_columns(tag)], 0)
        tf.raw_ops.ResourceScatterUpdate(resource=self.rows.handle, indices=tf.math.floormod(count, self.capacity),
                                         updates=row)
        tf.raw_ops.ResourceScatterAdd(resource=self.counter.handle, indices=slot,
                                      updates=tf.constant(1, tf.int64))

    def written(self) -> int:
        """Rows written so far (a host read)."""
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
            data = host_read(self.rows, np.arange(start, count) % self.capacity)  # the new rows only
        self.host_cursor = count
        return data[:, :self.width], tags_of(data[:, self.width:]), lost

    def pending_estimate(self) -> int:
        """Rows written since the last drain (host read of one scalar)."""
        return self.written() - self.host_cursor


class SessionRing:
    """``capacity`` float32 rows of ``width`` in a TF1 graph, and a write count. The variables are
    in no collection (not saved in checkpoints, not in ``global_variables_initializer``): each
    session runs ``initializer`` before it runs a write, and keeps its own count and cursor. They
    live on the CPU (one row a run crosses over)."""

    def __init__(self, width: int, capacity: int):
        from auditor.graph_stats import graph_variable

        self.width = width
        self.capacity = capacity
        self.rows = graph_variable(tf.zeros([capacity, width]), "auditor_rows")
        self.count = graph_variable(tf.constant(0, tf.int64), "auditor_rows_written")
        with tf.init_scope(), tf.device("/cpu:0"):
            self.initializer = tf.group(self.rows.initializer, self.count.initializer)
            self.indices = tf.compat.v1.placeholder(tf.int64, [None], name="auditor_row_indices")
            self.read = (tf.raw_ops.ReadVariableOp(resource=self.count.handle, dtype=tf.int64),
                         tf.raw_ops.ResourceGather(resource=self.rows.handle, indices=self.indices,
                                                   dtype=tf.float32))

    def write(self, row):
        """The op appending ``row`` (float32, ``width``), and the row's slot: a plain graph orders
        nothing by itself, so the count is incremented after the row is written."""
        with tf.device("/cpu:0"):
            count = tf.raw_ops.ReadVariableOp(resource=self.count.handle, dtype=tf.int64)
            slot = tf.math.floormod(count, self.capacity)
            update = tf.raw_ops.ResourceScatterUpdate(resource=self.rows.handle, indices=slot, updates=row)
            with tf.control_dependencies([update]):
                return tf.raw_ops.AssignAddVariableOp(resource=self.count.handle,
                                                      value=tf.constant(1, tf.int64)), slot

    def overwrite(self, slot, columns, values):
        """The op writing ``values`` (float32) over a row's ``columns`` (run it after the row's
        ``write``)."""
        columns = tf.constant(columns, tf.int64)
        indices = tf.stack([tf.fill(tf.shape(columns), slot), columns], axis=1)
        with tf.device("/cpu:0"):
            return tf.raw_ops.ResourceScatterNdUpdate(ref=self.rows.handle, indices=indices, updates=values)

    def initial_feed(self) -> dict:
        return {}

    def read_feed(self, start: int, stop: int) -> dict:
        """The feed that reads rows ``start`` to ``stop`` (counted from the session's first write)."""
        return {self.indices: np.arange(start, stop, dtype=np.int64) % self.capacity}


class HostRing:
    """The host-side counterpart of ``RingBuffer``: rows pushed from any thread, drained in order,
    with the rows lost before they reached it (a TF1 session ring that wrapped) counted."""

    def __init__(self, width: int):
        self.width = width
        self._rows: list = []  # 2-D blocks of rows
        self._tags: list = []
        self._pending = 0
        self._lost = 0
        self._lock = threading.Lock()

    def push_many(self, rows, tags) -> None:
        if len(tags):
            with self._lock:
                self._rows.append(rows)
                self._tags.append(tags)
                self._pending += len(tags)

    def lose(self, count: int) -> None:
        with self._lock:
            self._lost += count

    def drain(self):
        with self._lock:
            rows, tags, lost = self._rows, self._tags, self._lost
            self._rows, self._tags, self._pending, self._lost = [], [], 0, 0
        if not rows:
            return np.zeros([0, self.width], np.float32), np.zeros([0], np.int64), lost
        return np.concatenate(rows).astype(np.float32, copy=False), np.concatenate(tags).astype(np.int64), lost

    def pending_estimate(self) -> int:
        return self._pending
