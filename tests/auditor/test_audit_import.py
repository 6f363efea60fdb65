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
