"""TensorFlow ops that compute gradient statistics in-graph (eager, tf.function and XLA alike).

Imported only from inside ``watch()``: importing it imports TensorFlow.
"""
from __future__ import annotations

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
    values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
    values = tf.cast(values, tf.float32)
    return tf.logical_not(tf.math.is_finite(tf.reduce_sum(values * 0.0)))


def clipvalue_sq_norm(grad, clip, scale):
    """Squared norm after Keras' ``clipvalue`` clipping of ``grad / scale``."""
    values = tf.cast(dense_values(grad), tf.float32) / scale
    return tf.reduce_sum(tf.square(tf.clip_by_value(values, -clip, clip)))


HIST_BINS = 30


def histogram(grad, bins: int = HIST_BINS):
    """``[min, max, count_1 .. count_bins]`` (float32) of the gradient's finite values, in
    equal-width bins over [min, max]; NaN/Inf elements are left out (``IndexedSlices``: the
    applied rows, repeated indices summed). Built from a segment sum,
    which XLA compiles (``histogram_fixed_width`` has no XLA kernel)."""
    if isinstance(grad, tf.IndexedSlices):
        summed, distinct = _summed_slices(grad)
        used = tf.less(tf.range(tf.shape(summed)[0]), distinct)  # drop the zero padding rows
        used = tf.reshape(tf.broadcast_to(tf.reshape(used, [-1] + [1] * (summed.shape.rank - 1)),
                                          tf.shape(summed)), [-1])
        values = tf.reshape(tf.cast(summed, tf.float32), [-1])
    else:
        values = tf.reshape(tf.cast(grad, tf.float32), [-1])
        used = None
    finite = tf.math.is_finite(values)
    if used is not None:
        finite = tf.logical_and(finite, used)
    inf = tf.constant(float("inf"), tf.float32)
    lo = tf.reduce_min(tf.where(finite, values, inf))
    hi = tf.reduce_max(tf.where(finite, values, -inf))
    width = hi - lo
    safe = tf.where(finite, values, lo)
    scaled = tf.where(width > 0, (safe - lo) / tf.where(width > 0, width, 1.0) * bins, tf.zeros_like(safe))
    index = tf.clip_by_value(tf.cast(tf.floor(scaled), tf.int32), 0, bins - 1)
    index = tf.where(finite, index, bins)  # a last segment for non-finite values, dropped
    counts = tf.math.unsorted_segment_sum(tf.ones_like(values), index, bins + 1)[:bins]
    return tf.concat([tf.stack([lo, hi]), counts], 0)


def read(variable):
    """The current value of a Keras or TF variable as a tensor."""
    inner = getattr(variable, "value", variable)
    if callable(inner):  # tf.Variable.value is a method
        inner = variable
    return tf.convert_to_tensor(inner)


def differs(a, b):
    """Exact (bitwise) inequality of two tensors of one dtype, as a scalar bool."""
    target = _BITCAST.get(a.dtype)
    if target is not None:
        a = tf.bitcast(a, target)
        b = tf.bitcast(b, target)
    return tf.reduce_any(tf.not_equal(a, b))


def make_variable(initial, name, device=None):
    """A plain (non-distributed) resource variable, created outside any function graph.

    ``ResourceVariable`` is constructed directly so that a ``tf.distribute`` strategy in scope
    does not turn the auditor's buffers into mirrored variables: each replica owns its own.
    """
    from tensorflow.python.ops import resource_variable_ops

    with tf.init_scope():
        if device is not None:
            with tf.device(device):
                return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name)
        return resource_variable_ops.ResourceVariable(initial, trainable=False, name=name)


def cond(pred, true_fn, false_fn):
    """``tf.cond`` kept as a functional ``If`` (not lowered to switch/merge): the branch not taken
    is not run at all, where a lowered cond still schedules each of its ops as a dead node."""
    return _functional(tf.cond(pred, true_fn, false_fn))


def switch_case(index, branches):
    """``tf.switch_case`` kept as a functional ``Case``: one op runs the one branch needed."""
    return _functional(tf.switch_case(index, branches))


def _functional(out):
    if not tf.executing_eagerly():
        first = out[0] if isinstance(out, (tuple, list)) else out
        op = first.op
        while op.type == "Identity":
            op = op.inputs[0].op
        if op.type in ("If", "StatelessIf", "Case", "StatelessCase"):
            op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return out
