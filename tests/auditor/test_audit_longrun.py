"""Long runs: 10,000 optimizer steps under watch() keep host memory bounded (history window,
streamed JSONL), and the records that left the window still reached the sink."""
import json
import tracemalloc

import keras
import tensorflow as tf

import auditor
from audit_helpers import data, make_net, mse


def test_ten_thousand_steps_keep_host_memory_bounded(tmp_path):
    model = make_net()
    opt = keras.optimizers.SGD(1e-4)
    x, y = (tf.constant(a) for a in data())
    variables = model.trainable_variables

    @tf.function
    def hundred_steps():  # 100 optimizer steps per call: 10,000 steps in 100 host calls
        for _ in tf.range(100):
            with tf.GradientTape() as tape:
                loss = mse(model, x, y)
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    path = tmp_path / "long.jsonl"
    with auditor.watch(summary=False, jsonl=path, history=200, check_changes="auto") as audit:
        for _ in range(20):  # warm up: trace, first drains, allocator pools
            hundred_steps()
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(80):
            hundred_steps()
        grown, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(audit.steps) == 200  # the window, not the run
    assert int(opt.iterations.numpy()) == 10_000
    assert audit.recorded_count + audit.lost_records == 10_000
    assert audit.lost_records == 0
    # 8,000 more records (6 variables each) kept only in a 200-record window: growth stays small
    assert grown - base < 1_000_000, f"host memory grew by {grown - base} bytes"
    steps = 0
    with open(path) as lines:
        for line in lines:
            steps += json.loads(line)["type"] == "step"
    assert steps == 10_000
    assert audit.findings == []
