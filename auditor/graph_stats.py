"""TensorFlow ops that compute gradient statistics in-graph (eager, tf.function and XLA alike).

Imported only from inside ``watch()``: importing it imports TensorFlow.
"""
from __future__ import annotations

import functools

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2

_BITCAST = {tf.float16: tf.int16, tf.bfloat16: tf.int16, tf.float32: tf.int32, tf.float64: tf.int64}


def dense_values(grad):
    """The values whose squared sum is the gradient's squared norm, without densifying slices.

    ``IndexedSlices`` may repeat an index; rows with equal indices are summed first
    (sort + segment sum, which XLA compiles, unlike ``tf.unique``). Unused trailing rows
    are zero.
    """
    return _summed_slices(grad)[0] if isinstance(grad, tf.IndexedSlices) else grad


def _summed_slices(grad):
    """(rows summed per distinct index, padded with zero rows; count of distinct indices)."""
    values = grad.values
    indices = tf.reshape(grad.indices, [-1])
    order = tf.argsort(indices, stable=True)
    sorted_idx = tf.gather(indices, order)
    new_row = tf.cast(tf.not_equal(sorted_idx[1:], sorted_idx[:-1]), tf.int32)
    segments = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(new_row)], 0)
    summed = tf.math.unsorted_segment_sum(tf.gather(values, order), segments, num_segments=tf.size(indices))
    return summed, tf.reduce_max(segments) + 1


def half_sq_norm(grad):
    """Half the squared L2 norm in float32: ``l2_loss``, one fused kernel (half the memory traffic
    of square + sum)."""
    return tf.nn.l2_loss(tf.cast(dense_values(grad), tf.float32))


def sq_norm(grad):
    """Squared L2 norm in float32."""
    return 2.0 * half_sq_norm(grad)


def has_nonfinite(grad):
    """True where any element is NaN or Inf (exact: x*0 is NaN only for non-finite x)."""
    return nonfinite_each([grad])[0]


def nonfinite_each(grads):
    """Per gradient (none None), whether any element is NaN or Inf: one segment sum of ``x * 0``
    over all of them (NaN exactly where a segment holds a non-finite element)."""
    parts = [tf.reshape(tf.cast(g.values if isinstance(g, tf.IndexedSlices) else g, tf.float32), [-1])
             for g in grads]
    segment = tf.concat([tf.fill(tf.shape(p), k) for k, p in enumerate(parts)], 0)
    zeros = tf.concat(parts, 0) * 0.0
    return tf.logical_not(tf.math.is_finite(tf.math.unsorted_segment_sum(zeros, segment, len(parts))))


def nonfinite_small(grads):
    """Per gradient (none None), whether any element is NaN or Inf (see ``zero_sums``)."""
    return tf.logical_not(tf.math.is_finite(tf.stack(zero_sums(grads))))


def zero_sums(grads):
    """Per gradient (none None), ``l2_loss(x - x)``: 0.0, or NaN exactly where ``x`` holds a
    non-finite element (never Inf); two ops per gradient and no constant, for small gradients,
    where a node costs more than its data."""
    out = []
    for g in grads:
        x = tf.cast(g.values if isinstance(g, tf.IndexedSlices) else g, tf.float32)
        out.append(tf.nn.l2_loss(x - x))
    return out


def clipvalue_sq_norm(grad, clip, scale):
    """Squared norm after Keras' ``clipvalue`` clipping of ``grad / scale``."""
    values = tf.cast(dense_values(grad), tf.float32) / scale
    return tf.reduce_sum(tf.square(tf.clip_by_value(values, -clip, clip)))


HIST_BINS = 30


def histograms(grads, bins: int = HIST_BINS):
    """``[min, max, count_1 .. count_bins]`` (float32) of each gradient's finite values, in
    equal-width bins over its [min, max], as one ``[len(grads), 2 + bins]`` tensor; NaN/Inf elements
    are left out (``IndexedSlices``: the applied rows, repeated indices summed). All gradients are
    binned together (one concatenation, per-gradient segments), so the op count does not grow with
    the number of variables. Built from segment sums, which XLA compiles (``histogram_fixed_width``
    has no XLA kernel)."""
    parts, masks, segments = [], [], []
    for k, grad in enumerate(grads):
        if isinstance(grad, tf.IndexedSlices):
            summed, distinct = _summed_slices(grad)
            used = tf.less(tf.range(tf.shape(summed)[0]), distinct)  # drop the zero padding rows
            used = tf.reshape(tf.broadcast_to(tf.reshape(used, [-1] + [1] * (summed.shape.rank - 1)),
                                              tf.shape(summed)), [-1])
            flat = tf.reshape(tf.cast(summed, tf.float32), [-1])
        else:
            flat = tf.reshape(tf.cast(grad, tf.float32), [-1])
            used = None
        parts.append(flat)
        masks.append(used)
        segments.append(tf.fill(tf.shape(flat), k))
    n = len(grads)
    values, segment = tf.concat(parts, 0), tf.concat(segments, 0)
    finite = tf.math.is_finite(values)
    if any(m is not None for m in masks):
        finite = tf.logical_and(finite, tf.concat(
            [tf.ones_like(v, tf.bool) if m is None else m for v, m in zip(parts, masks)], 0))
    inf = tf.constant(float("inf"), tf.float32)
    lo = tf.math.unsorted_segment_min(tf.where(finite, values, inf), segment, n)
    hi = tf.math.unsorted_segment_max(tf.where(finite, values, -inf), segment, n)
    empty = tf.equal(tf.math.unsorted_segment_sum(tf.ones_like(segment), segment, n), 0)
    lo = tf.where(empty, inf, lo)  # as a min over no value (the segment op gives the largest float)
    hi = tf.where(empty, -inf, hi)
    width = hi - lo
    lo_e, width_e = tf.gather(lo, segment), tf.gather(width, segment)
    safe = tf.where(finite, values, lo_e)
    scaled = tf.where(width_e > 0, (safe - lo_e) / tf.where(width_e > 0, width_e, 1.0) * bins, tf.zeros_like(safe))
    index = tf.clip_by_value(tf.cast(tf.floor(scaled), tf.int32), 0, bins - 1)
    index = tf.where(finite, index, bins)  # a last bin per gradient for non-finite values, dropped
    counts = tf.math.unsorted_segment_sum(tf.ones_like(values), segment * (bins + 1) + index, n * (bins + 1))
    counts = tf.reshape(counts, [n, bins + 1])[:, :bins]
    return tf.concat([tf.stack([lo, hi], 1), counts], 1)


def histogram(grad, bins: int = HIST_BINS):
    """``[min, max, count_1 .. count_bins]`` of one gradient (see ``histograms``)."""
    return tf.reshape(histograms([grad], bins), [-1])


def read(variable):
    """The current value of a Keras or TF variable as a tensor."""
    inner = getattr(variable, "value", variable)
    if callable(inner):  # tf.Variable.value is a method
        inner = variable
    return tf.convert_to_tensor(inner)


def update_ratio(now, before):
    """Op: ||now - before|| / ||before|| in float32 (how far one update moved a variable, relative to
    its size; Inf for a variable that was all zeros)."""
    now, before = tf.cast(now, tf.float32), tf.cast(before, tf.float32)
    return tf.sqrt(tf.reduce_sum(tf.square(now - before))) / tf.sqrt(tf.reduce_sum(tf.square(before)))


def differs(a, b):
    """Exact (bitwise) inequality of two tensors of one dtype, as a scalar bool."""
    target = _BITCAST.get(a.dtype)
    if target is not None:
        a = tf.bitcast(a, target)
        b = tf.bitcast(b, target)
    return tf.reduce_any(tf.not_equal(a, b))


def host_read(variable, indices):
    """Host values of a variable at ``indices`` of its first axis (one gather, not a copy of the
    whole variable)."""
    with tf.init_scope():
        return tf.raw_ops.ResourceGather(resource=variable.handle, indices=indices, dtype=variable.dtype).numpy()


def make_variable(initial, name, device=None, shape=None):
    """A plain (non-distributed) resource variable, created outside any function graph (``shape``:
    a partly unknown shape, for a variable assigned values of other shapes later).

    ``ResourceVariable`` is constructed directly so that a ``tf.distribute`` strategy in scope
    does not turn the auditor's buffers into mirrored variables: each replica owns its own.
    """
    from tensorflow.python.ops import resource_variable_ops

    with tf.init_scope():
        if device is not None:
            with tf.device(device):
                return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name, shape=shape)
        return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name, shape=shape)


def graph_variable(initial, name):
    """A resource variable of a TF1 graph in no collection (not saved, not initialized by
    ``global_variables_initializer``), on the CPU, created outside the caller's control
    dependencies; whoever runs the graph initializes it."""
    with tf.init_scope(), tf.device("/cpu:0"):
        return tf.compat.v1.Variable(initial, trainable=False, collections=[], use_resource=True, name=name)


def cond(pred, true_fn, false_fn, single_threaded=False):
    """``tf.cond`` kept as a functional ``If`` (not lowered to switch/merge): the branch not taken
    is not run at all, where a lowered cond still schedules each of its ops as a dead node;
    ``single_threaded``: as for ``switch_case``."""
    return _functional(tf.cond(pred, true_fn, false_fn),
                       ("then_branch", "else_branch") if single_threaded else ())


def switch_case(index, branches, single_threaded=False):
    """``tf.switch_case`` kept as a functional ``Case``: one op runs the one branch needed;
    ``single_threaded``: its branches are small and have no branch of their own (see ``_functional``)."""
    return _functional(tf.switch_case(index, branches), ("branches",) if single_threaded else ())


def _functional(out, branch_attrs):
    """Keep the op functional; ``branch_attrs``: its branch functions to run on TF's single-threaded
    executor, on a machine with CPU devices only (in the calling thread, no hop through the thread
    pool; that executor supports CPU devices only, and a nested functional op inside makes it
    slower, not faster)."""
    if not tf.executing_eagerly():
        first = out[0] if isinstance(out, (tuple, list)) else out
        op = first.op
        while op.type == "Identity":
            op = op.inputs[0].op
        if op.type in ("If", "StatelessIf", "Case", "StatelessCase"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
            if _cpu_only():
                for name in branch_attrs:
                    _run_single_threaded(op, name)
    return out


@functools.cache
def _cpu_only() -> bool:
    """Whether every logical device is a CPU."""
    return all(d.device_type == "CPU" for d in tf.config.list_logical_devices())


def _run_single_threaded(op, name: str) -> None:
    value = op.get_attr(name)
    functions = value if isinstance(value, list) else [value]
    marked = []
    for function in functions:
        copy = attr_value_pb2.NameAttrList()
        copy.CopyFrom(function)
        copy.attr["_executor"].s = b"SINGLE_THREADED_EXECUTOR"
        marked.append(copy)
    if isinstance(value, list):
        op._set_attr(name, attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(func=marked)))
    else:
        op._set_attr(name, attr_value_pb2.AttrValue(func=marked[0]))
