"""Auditor test configuration: quiet TensorFlow, and check no test leaves patches behind."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_leftover_patches():
    """Every test must leave the patches restored and no watch active."""
    yield
    from auditor import hooks

    assert not hooks.installed()
    assert not hooks._sessions
