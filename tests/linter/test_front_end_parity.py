"""`gradlint check` and `flake8 --select=GRD` agree: `# noqa` forms, whole-file noqa, and the target Keras
version read from `[tool.gradlint]` (real flake8 and the real CLI in subprocesses)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import run_gradlint

GRADIENTS = "import tensorflow as tf\ngrads = tf.gradients(loss, params)\n"
TF1_NAME = ("import keras\n"
            "frozen = [v for v in model.trainable_variables if v.name == 'encoder/kernel:0']\n")


def flake8(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flake8", "--select=GRD", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def flake8_findings(result: subprocess.CompletedProcess) -> set[tuple[str, int, str]]:
    found = set()
    for line in result.stdout.splitlines():
        path, number, _, rest = line.split(":", 3)
        found.add((Path(path).name, int(number), rest.split()[0]))
    return found


def check_findings(*paths: Path, cwd: Path, extra: tuple[str, ...] = ()) -> set[tuple[str, int, str]]:
    result = run_gradlint("check", "--format", "json", *extra, *map(str, paths), cwd=cwd)
    assert result.returncode in (0, 1), result.stderr
    return {(Path(f["path"]).name, f["line"], f["code"]) for f in json.loads(result.stdout)["findings"]}


def test_noqa_forms_mean_the_same_in_both(tmp_path: Path) -> None:
    files = {
        "lower.py": GRADIENTS + "a = [g * 0.5 for g in grads]  # NOQA: grd001\nb = [g * 0.5 for g in grads]\n",
        "flake8_file.py": "# flake8: noqa\n" + GRADIENTS + "a = [g * 0.5 for g in grads]\n",
        "gradlint_file.py": GRADIENTS + "# gradlint: noqa\na = [g * 0.5 for g in grads]\n",
        "after_code.py": GRADIENTS + "a = [g * 0.5 for g in grads]  # flake8: noqa\nb = [g * 2 for g in grads]\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    # after code, `# flake8: noqa` is neither a whole-file nor a line noqa (flake8 only warns about it)
    expected = {("lower.py", 4, "GRD001"), ("after_code.py", 3, "GRD001"), ("after_code.py", 4, "GRD001")}
    assert check_findings(*(tmp_path / n for n in files), cwd=tmp_path) == expected
    assert flake8_findings(flake8(*files, cwd=tmp_path)) == expected


def test_file_noqa_with_codes_suppresses_only_those_in_gradlint_check(tmp_path: Path) -> None:
    path = tmp_path / "codes.py"
    path.write_text("# gradlint: noqa: GRD001\n" + GRADIENTS + "a = [g * 0.5 for g in grads]\n"
                    "grads = tf.clip_by_global_norm(grads, 1.0)\nopt.apply_gradients(zip(grads, params))\n")
    assert check_findings(path, cwd=tmp_path) == {("codes.py", 5, "GRD004")}
    # flake8 ignores `# gradlint:` lines; the plugin applies them, so flake8 reports the same
    assert flake8_findings(flake8(path.name, cwd=tmp_path)) == {("codes.py", 5, "GRD004")}


def test_flake8_reads_target_keras_from_pyproject(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "names.py").write_text(TF1_NAME)
    assert flake8_findings(flake8("names.py", cwd=project)) == {("names.py", 2, "GRD012")}
    (project / "pyproject.toml").write_text("[tool.gradlint]\ntarget-keras = 2\n")
    assert flake8("names.py", cwd=project).stdout == ""
    assert check_findings(project / "names.py", cwd=project) == set()
    # the command-line option wins over the configuration, as `gradlint check --target-keras` does
    assert flake8_findings(flake8("--gradlint-target-keras=3", "names.py", cwd=project)) == {
        ("names.py", 2, "GRD012")}
    assert check_findings(project / "names.py", cwd=project, extra=("--target-keras", "3")) == {
        ("names.py", 2, "GRD012")}


def test_flake8_reports_a_broken_configuration(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\ntarget-keras = 5\n")
    (tmp_path / "names.py").write_text(TF1_NAME)
    result = flake8("names.py", cwd=tmp_path)
    assert "GRD000 gradlint could not read its configuration" in result.stdout
    assert "target-keras" in result.stdout
