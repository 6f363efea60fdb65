"""Suite-wide: under `make test` (GRADLINT_REQUIRE_DEPS=1) a test may not skip because an
installed-by-make dependency is missing or the CPU could not be split: that is a failure."""
import os

import pytest

_MUST_RUN = ("could not import", "initialised its devices")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("GRADLINT_REQUIRE_DEPS") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(text in reason for text in _MUST_RUN):
        report.outcome = "failed"
        report.longrepr = f"skipped under GRADLINT_REQUIRE_DEPS=1 (make test installs this): {reason}"
