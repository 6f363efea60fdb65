"""gradlint installs and runs without TensorFlow: importing and checking load neither TF nor Keras."""
from __future__ import annotations

import subprocess
import sys

from conftest import FIXTURES

SCRIPT = f"""
import sys
import gradlint.cli, gradlint.flake8_plugin
from gradlint.engine import lint_file
from gradlint.rules import ALL_RULES
result = lint_file({str(FIXTURES / 'example' / 'train_partial_update.py')!r}, ALL_RULES)
assert len(result.violations) == 4, result
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'numpy'))
print(heavy)
assert not heavy, heavy
"""


def test_linting_loads_no_tensorflow_or_keras() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_check_loads_no_tensorflow() -> None:
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['gradlint', 'check', {str(FIXTURES / 'rules')!r}]\n"
        "try:\n"
        "    runpy.run_module('gradlint', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 1, exit.code\n"
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
