"""`gradlint fix` end to end, as a subprocess: output, exit status, --diff, safety classes, config."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from conftest import FIXTURES, run_gradlint

BUGGY = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 for g in grads]\n"
)
FIXED = BUGGY.replace("[g * 0.5 for", "[g * 0.5 if g is not None else None for")
PER_VARIABLE = (
    "import tensorflow as tf\n"
    "optimizer = tf.keras.optimizers.Adam()\n"
    "grads = tape.gradient(loss, model.trainable_variables)\n"
    "for g, v in zip(grads, model.trainable_variables):\n"
    "    optimizer.apply_gradients([(g, v)])\n"
)
PER_VARIABLE_FIXED = (
    "import tensorflow as tf\n"
    "optimizer = tf.keras.optimizers.Adam()\n"
    "grads = tape.gradient(loss, model.trainable_variables)\n"
    "grads_and_vars = []\n"
    "for g, v in zip(grads, model.trainable_variables):\n"
    "    grads_and_vars.append((g, v))\n"
    "optimizer.apply_gradients(grads_and_vars)\n"
)
UNFIXABLE = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "first = -grads[0]\n"
)
CLEAN = "import tensorflow as tf\nx = tf.constant(1.0)\n"


def test_fix_writes_the_file_and_exits_zero_when_nothing_remains(write) -> None:
    path = write("bug.py", BUGGY)
    result = run_gradlint("fix", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert path.read_text() == FIXED
    assert f"{path}: fixed 1 finding (GRD001)" in result.stdout
    assert "Fixed 1 finding in 1 file." in result.stdout
    again = run_gradlint("fix", str(path))
    assert again.returncode == 0 and path.read_text() == FIXED
    assert "fixed" not in again.stdout.lower()
    assert run_gradlint("check", str(path)).returncode == 0


def test_exit_non_zero_on_fix(write) -> None:
    path = write("bug.py", BUGGY)
    result = run_gradlint("fix", "--exit-non-zero-on-fix", str(path))
    assert result.returncode == 1
    assert path.read_text() == FIXED
    assert run_gradlint("fix", "--exit-non-zero-on-fix", str(path)).returncode == 0


def test_remaining_findings_are_listed_in_check_format_and_exit_one(write, tmp_path) -> None:
    write("a.py", BUGGY)
    left = write("b.py", UNFIXABLE)
    result = run_gradlint("fix", str(tmp_path))
    assert result.returncode == 1
    assert f"{left}:3:9: GRD001 " in result.stdout
    assert "Found 1 finding in 1 file (2 checked)." in result.stdout
    assert "Fixed 1 finding in 1 file." in result.stdout
    assert left.read_text() == UNFIXABLE


def test_unsafe_fixes_only_with_the_flag(write) -> None:
    path = write("loop.py", PER_VARIABLE)
    safe = run_gradlint("fix", str(path))
    assert safe.returncode == 1
    assert path.read_text() == PER_VARIABLE
    assert "1 more fix available with --unsafe-fixes (GRD003)." in safe.stdout
    assert ":5:5: GRD003 " in safe.stdout
    unsafe = run_gradlint("fix", "--unsafe-fixes", str(path))
    assert unsafe.returncode == 0, unsafe.stdout + unsafe.stderr
    assert path.read_text() == PER_VARIABLE_FIXED


def test_diff_prints_a_unified_diff_and_writes_nothing(write, tmp_path) -> None:
    bug = write("bug.py", BUGGY)
    clean = write("clean.py", CLEAN)
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (bug, clean)}
    result = run_gradlint("fix", "--diff", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == (
        f"--- {bug}\n+++ {bug}\n@@ -1,3 +1,3 @@\n"
        " import tensorflow as tf\n"
        " grads = tf.gradients(loss, params)\n"
        "-scaled = [g * 0.5 for g in grads]\n"
        "+scaled = [g * 0.5 if g is not None else None for g in grads]\n"
    )
    assert "Would fix 1 finding in 1 file." in result.stderr
    assert {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (bug, clean)} == before
    nothing = run_gradlint("fix", "--diff", str(clean))
    assert nothing.returncode == 0 and nothing.stdout == ""


def test_diff_of_file_without_final_newline(write) -> None:
    path = write("bug.py", BUGGY.rstrip("\n"))
    result = run_gradlint("fix", "--diff", str(path))
    assert result.returncode == 1
    assert result.stdout.endswith("\n\\ No newline at end of file\n")


def test_select_and_ignore_and_config_like_check(write, tmp_path) -> None:
    path = write("pkg/bug.py", BUGGY)
    assert run_gradlint("fix", "--ignore", "GRD001", str(path)).returncode == 0
    assert path.read_text() == BUGGY
    write("pkg/pyproject.toml", '[tool.gradlint]\nper-file-ignores = {"bug.py" = ["GRD001"]}\n')
    assert run_gradlint("fix", str(path)).returncode == 0
    assert path.read_text() == BUGGY
    result = run_gradlint("fix", "--isolated", "--select", "GRD001", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert path.read_text() == FIXED
    write("bad/pyproject.toml", "[tool.gradlint]\nselect = 3\n")
    write("bad/x.py", BUGGY)
    bad = run_gradlint("fix", str(tmp_path / "bad" / "x.py"))
    assert bad.returncode == 2 and "select must be a list" in bad.stderr


def test_errors_exit_two_and_other_files_are_still_fixed(write, tmp_path) -> None:
    write("a_broken.py", "import tensorflow as tf\ndef f(:\n    tf.gradients(y, x)\n")
    bug = write("b_bug.py", BUGGY)
    result = run_gradlint("fix", str(tmp_path), str(tmp_path / "missing.py"))
    assert result.returncode == 2
    assert "a_broken.py: error: syntax error at line 2" in result.stderr
    assert "missing.py: error: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert bug.read_text() == FIXED


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_read_only_file_is_reported_not_crashed_on(write, tmp_path) -> None:
    locked = write("locked.py", BUGGY)
    other = write("other.py", BUGGY)
    locked.chmod(0o444)
    try:
        result = run_gradlint("fix", str(tmp_path))
        assert result.returncode == 2
        assert f"{locked}: error: the file is read-only; not fixed" in result.stderr
        assert "Traceback" not in result.stderr
        assert locked.read_text() == BUGGY
        assert stat.S_IMODE(locked.stat().st_mode) == 0o444
        assert other.read_text() == FIXED
        assert f"{locked}:3:11: GRD001" in result.stdout  # still listed as remaining
    finally:
        locked.chmod(0o644)


def test_no_python_files_is_exit_zero(tmp_path) -> None:
    result = run_gradlint("fix", str(tmp_path))
    assert result.returncode == 0
    assert "no Python files or notebooks found" in result.stderr


def test_bundled_example_with_unsafe_fixes(tmp_path) -> None:
    example = tmp_path / "train.py"
    example.write_text((FIXTURES / "example" / "train_partial_update.py").read_text())
    result = run_gradlint("fix", "--unsafe-fixes", str(example))
    assert result.returncode == 1  # GRD002 has no fix
    assert f"{example}: fixed " in result.stdout and "GRD001" in result.stdout and "GRD003" in result.stdout
    assert ": GRD002 " in result.stdout
    text = example.read_text()
    assert "tf.clip_by_norm(g, 1.0) if g is not None else None" in text
    assert "optimizer.apply_gradients(grads_and_vars)" in text
    after = run_gradlint("check", str(example)).stdout
    assert " GRD001 " not in after and " GRD003 " not in after


def test_check_rules_explain_unchanged_by_fix_command() -> None:
    help_text = run_gradlint("--help").stdout
    assert "fix" in help_text and "check" in help_text
    rules = run_gradlint("rules").stdout
    assert "[static, fix: safe]" in rules and "[static, fix: unsafe]" in rules
    fix_help = run_gradlint("fix", "--help").stdout
    for flag in ("--select", "--ignore", "--unsafe-fixes", "--diff", "--exit-non-zero-on-fix", "--config",
                 "--isolated"):
        assert flag in fix_help
