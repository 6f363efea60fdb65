"""Auditor test configuration: quiet TensorFlow, split the CPU for tf.distribute, and check no
test leaves patches behind."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Under `make test` (GRADLINT_REQUIRE_DEPS=1) nothing may skip for want of what make installs:
# tf_keras and Sonnet must import, and the CPU must split for tf.distribute (see the strategy fixture).
REQUIRE_DEPS = os.environ.get("GRADLINT_REQUIRE_DEPS") == "1"
if REQUIRE_DEPS:
    import importlib.util  # noqa: E402

    for module, package in (("tf_keras", "tf_keras"), ("sonnet", "dm-sonnet")):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"GRADLINT_REQUIRE_DEPS=1 but {package} is not installed (make test installs it)")


def _split_cpu():
    """Two logical CPU devices for MirroredStrategy tests; must run before TF initialises devices."""
    import tensorflow as tf

    try:
        cpu = tf.config.list_physical_devices("CPU")[0]
        if tf.config.get_logical_device_configuration(cpu) is None:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    except RuntimeError:  # devices already initialised (another test directory ran TF first)
        pass


_split_cpu()


@pytest.fixture(scope="session")
def strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session: strategies created
    side by side in one process reuse collective instance keys and abort each other's all-reduces."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        (pytest.fail if REQUIRE_DEPS else pytest.skip)("TensorFlow initialised its devices before the CPU could be split")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


@pytest.fixture(autouse=True)
def _no_leftover_patches():
    """Every test must leave the patches restored and no watch active."""
    yield
    from auditor import testing

    assert not testing.patches_installed()
    assert testing.census()["watches"] == 0
