"""Standard input (`gradlint check -`, `gradlint fix -`, --stdin-filename) and `fix --jobs / --format`."""
from __future__ import annotations

import json

from conftest import FIXTURES, run_gradlint

BUGGY = "import tensorflow as tf\ngrads = tf.gradients(loss, params)\nscaled = [g * 0.5 for g in grads]\n"
FIXED = BUGGY.replace("[g * 0.5 for", "[g * 0.5 if g is not None else None for")
UNFIXABLE = "import tensorflow as tf\ngrads = tf.gradients(loss, params)\nfirst = -grads[0]\n"
NOTEBOOK = FIXTURES / "notebooks" / "partial_update.ipynb"


def test_check_reads_stdin() -> None:
    result = run_gradlint("check", "-", stdin=BUGGY)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("<stdin>:3:11: GRD001 ")
    assert run_gradlint("check", "-", stdin="import os\n").returncode == 0


def test_stdin_filename_names_the_input_and_finds_its_configuration(tmp_path, write) -> None:
    write("pyproject.toml", '[tool.gradlint.per-file-ignores]\n"tests/*" = ["GRD001"]\n')
    named = run_gradlint("check", "--no-cache", "--stdin-filename", str(tmp_path / "src" / "train.py"), stdin=BUGGY)
    assert named.returncode == 1
    assert named.stdout.startswith(f"{tmp_path / 'src' / 'train.py'}:3:11: GRD001 ")
    ignored = run_gradlint("check", "--no-cache", "--stdin-filename", "tests/test_train.py", "-", stdin=BUGGY,
                           cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr
    assert not (tmp_path / "tests").exists()


def test_stdin_notebook_by_its_name() -> None:
    result = run_gradlint("check", "--no-cache", "--stdin-filename", "nb.ipynb", stdin=NOTEBOOK.read_text())
    assert result.returncode == 1
    assert result.stdout.startswith("nb.ipynb:cell 6:1:12: GRD001 ")


def test_fix_writes_the_fixed_source_to_stdout_and_the_report_to_stderr(tmp_path) -> None:
    result = run_gradlint("fix", "-", stdin=BUGGY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == FIXED
    assert "<stdin>: fixed 1 finding (GRD001)" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
    unchanged = run_gradlint("fix", "-", stdin="import os\n")
    assert unchanged.returncode == 0 and unchanged.stdout == "import os\n"
    remaining = run_gradlint("fix", "-", stdin=UNFIXABLE)
    assert remaining.returncode == 1
    assert remaining.stdout == UNFIXABLE
    assert "<stdin>:3:9: GRD001 " in remaining.stderr


def test_fix_stdin_notebook_and_diff() -> None:
    result = run_gradlint("fix", "--stdin-filename", "nb.ipynb", stdin=NOTEBOOK.read_text())
    assert result.returncode == 1  # GRD003 needs --unsafe-fixes
    fixed = json.loads(result.stdout)
    assert "".join(fixed["cells"][5]["source"]).startswith(
        "clipped = [tf.clip_by_norm(g, 1.0) if g is not None else None for g in grads]\n")
    assert fixed["cells"][5]["outputs"] == json.loads(NOTEBOOK.read_text())["cells"][5]["outputs"]
    diff = run_gradlint("fix", "--diff", "-", stdin=BUGGY)
    assert diff.returncode == 1
    assert diff.stdout.startswith("--- <stdin>\n+++ <stdin>\n")


def test_fix_stdin_keeps_the_declared_encoding() -> None:
    import subprocess
    import sys

    data = b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + BUGGY.encode()
    result = subprocess.run([sys.executable, "-m", "gradlint", "fix", "-"], input=data, capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + FIXED.encode()


def test_excluded_stdin_filename_passes_the_input_through(tmp_path, write) -> None:
    write("pyproject.toml", "[tool.gradlint]\nexclude = ['generated/*']\n")
    result = run_gradlint("fix", "--stdin-filename", "generated/gen.py", stdin=BUGGY, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == BUGGY
    assert "generated/gen.py: excluded by 'generated/*'" in result.stderr
    check = run_gradlint("check", "--stdin-filename", "generated/gen.py", stdin=BUGGY, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout == ""


def test_stdin_cannot_be_combined_with_paths(write) -> None:
    path = write("a.py", BUGGY)
    both = run_gradlint("check", "-", str(path), stdin=BUGGY)
    assert both.returncode == 2
    assert both.stderr == "gradlint check: error: - (standard input) cannot be combined with other paths\n"
    named = run_gradlint("fix", "--stdin-filename", "x.py", str(path), stdin=BUGGY)
    assert named.returncode == 2 and "--stdin-filename names standard input" in named.stderr
    assert path.read_text() == BUGGY


def test_fix_format_json_and_jobs(tmp_path, write) -> None:
    for number in range(20):
        write(f"pkg/m{number:02}.py", BUGGY if number % 2 else UNFIXABLE)
    twin = tmp_path / "twin"
    twin.mkdir()
    for path in sorted((tmp_path / "pkg").iterdir()):
        (twin / path.name).write_text(path.read_text())
    serial = run_gradlint("fix", "--format", "json", "--jobs", "1", str(tmp_path / "pkg"))
    parallel = run_gradlint("fix", "--format", "json", "--jobs", "2", str(twin))
    assert serial.returncode == parallel.returncode == 1
    first, second = json.loads(serial.stdout), json.loads(parallel.stdout)
    assert first["files_checked"] == second["files_checked"] == 20
    assert [(f["path"].split("/")[-1], f["line"]) for f in first["findings"]] == [
        (f"m{n:02}.py", 3) for n in range(0, 20, 2)]
    assert [(f["path"].split("/")[-1], f["line"]) for f in second["findings"]] == [
        (f["path"].split("/")[-1], f["line"]) for f in first["findings"]]
    assert "Fixed 10 findings in 10 files." in serial.stderr and "Fixed 10 findings in 10 files." in parallel.stderr
    for number in range(1, 20, 2):
        assert (tmp_path / "pkg" / f"m{number:02}.py").read_text() == FIXED == (twin / f"m{number:02}.py").read_text()
    github = run_gradlint("fix", "--format", "github", str(tmp_path / "pkg"))
    assert github.stdout.count("::warning file=") == 10
