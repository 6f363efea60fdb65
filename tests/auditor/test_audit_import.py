"""``import auditor`` must not import TensorFlow nor initialise devices."""
import subprocess
import sys
import textwrap


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=240, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})


def test_import_does_not_import_tensorflow():
    proc = _run("import auditor, sys; assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
                "assert 'keras' not in sys.modules; print('ok')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_devices_can_still_be_configured_after_import():
    proc = _run("""
        import auditor
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        assert len(tf.config.list_logical_devices("CPU")) == 2
        with auditor.watch(summary=False) as audit:
            pass
        assert audit.steps == []
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_watch_does_not_import_tf_keras():
    """tf_keras is hooked only when the user imported it; watch() never imports it."""
    proc = _run("""
        import sys
        import auditor
        import tensorflow as tf
        with auditor.watch(summary=False):
            tf.function(lambda: tf.constant(1.0))()
        assert "tf_keras" not in sys.modules, "watch imported tf_keras"
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_tf_keras_imported_inside_watch_is_hooked():
    """Importing tf_keras after entering watch(): hooked at the next tape/tf.function call."""
    proc = _run("""
        import auditor
        import tensorflow as tf
        with auditor.watch(summary=False) as audit:
            import tf_keras
            opt = tf_keras.optimizers.SGD(0.1)
            v = tf.Variable([1.0, 2.0])
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(v * v)
            grads = tape.gradient(loss, [v])  # hooks tf_keras (before opt.apply_gradients is looked up)
            opt.apply_gradients(zip(grads, [v]))
        assert len(audit.steps) == 1, audit.steps
        assert abs(audit.steps[0].global_norm - 20 ** 0.5) < 1e-5
        from tf_keras.src.optimizers import optimizer
        assert not hasattr(optimizer.Optimizer.__dict__["apply_gradients"], "__auditor_patch__")
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
