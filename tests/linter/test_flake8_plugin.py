"""The flake8 route: real flake8 in a subprocess, plugin found through its entry point."""
from __future__ import annotations

import subprocess
import sys

from conftest import FIXTURES, expected_findings


def flake8(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flake8", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_plugin_is_registered() -> None:
    result = flake8("--version")
    assert "gradlint" in result.stdout


def test_select_grd_reports_the_same_findings_as_the_cli() -> None:
    example = FIXTURES / "example" / "train_partial_update.py"
    result = flake8("--select=GRD", str(example))
    assert result.returncode == 1, result.stderr
    found = set()
    for line in result.stdout.splitlines():
        _, number, _, rest = line.split(":", 3)
        found.add((int(number), rest.split()[0]))
    assert found == expected_findings(example)


def test_fixture_tree_through_flake8() -> None:
    # opt-in rules report only when selected by their full code, as flake8-bugbear's B9 rules
    result = flake8("--select=GRD,GRD017,GRD018", str(FIXTURES / "rules"))
    reported = {(line.split(":")[0], int(line.split(":")[1]), line.split(": ", 1)[1].split()[0])
                for line in result.stdout.splitlines()}
    expected = set()
    for path in (FIXTURES / "rules").rglob("*.py"):
        expected |= {(str(path), number, code) for number, code in expected_findings(path)}
    assert reported == expected


def test_opt_in_rules_stay_off_with_the_prefix_alone() -> None:
    result = flake8("--select=GRD", str(FIXTURES / "rules" / "GRD017"), str(FIXTURES / "rules" / "GRD018"))
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""
    selected = flake8("--select=GRD017", str(FIXTURES / "rules" / "GRD017"))
    assert "GRD017" in selected.stdout


def test_noqa_is_honoured_by_flake8(tmp_path) -> None:
    path = tmp_path / "noqa.py"
    path.write_text(
        "import tensorflow as tf\n"
        "grads = tf.gradients(loss, params)\n"
        "a = [g * 0.5 for g in grads]  # noqa: GRD001\n"
        "b = [g * 0.5 for g in grads]\n"
    )
    result = flake8("--select=GRD", str(path))
    assert result.returncode == 1
    lines = [int(line.split(":")[1]) for line in result.stdout.splitlines()]
    assert lines == [4]


def test_default_flake8_run_is_unaffected_on_clean_code(tmp_path) -> None:
    path = tmp_path / "clean.py"
    path.write_text("import os\n\nprint(os.sep)\n")
    result = flake8(str(path))
    assert result.returncode == 0, result.stdout + result.stderr
