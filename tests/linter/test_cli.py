"""`gradlint check / rules / explain` end to end, as a subprocess."""
from __future__ import annotations

import json
import os

import pytest

from conftest import FIXTURES, run_gradlint

BUGGY = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 for g in grads]\n"
)
CLEAN = "import tensorflow as tf\nx = tf.constant(1.0)\n"


def test_clean_file_exits_zero(write) -> None:
    path = write("clean.py", CLEAN)
    result = run_gradlint("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_findings_exit_one_with_location(write) -> None:
    path = write("bug.py", BUGGY)
    result = run_gradlint("check", str(path))
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{path}:3:11: GRD001 ")
    assert "line 2" in first
    assert "Found 1 finding in 1 file" in result.stdout


def test_json_format(write) -> None:
    path = write("bug.py", BUGGY)
    result = run_gradlint("check", "--format", "json", str(path))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["version"] == 1 and document["files_checked"] == 1 and document["errors"] == []
    (finding,) = document["findings"]
    assert finding["code"] == "GRD001" and finding["name"] == "unchecked-none-gradient"
    assert (finding["line"], finding["column"]) == (3, 11)
    assert finding["end_line"] == 3 and finding["end_column"] > finding["column"]
    assert finding["path"] == str(path)


def test_syntax_error_is_reported_and_other_files_still_checked(write, tmp_path) -> None:
    write("a_broken.py", "import tensorflow as tf\ndef f(:\n    tf.gradients(y, x)\n")
    write("b_bug.py", BUGGY)
    result = run_gradlint("check", str(tmp_path))
    assert result.returncode == 2
    assert "a_broken.py: error: syntax error at line 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert "b_bug.py:3:11: GRD001" in result.stdout


def test_undecodable_and_binary_files(write, tmp_path) -> None:
    write("latin.py", b"# optimizer\nname = '\xe9t\xe9'\nopt.apply_gradients(x)\n")
    write("binary.py", b"\x00\x01apply_gradients\x00")
    write("ok.py", BUGGY)
    result = run_gradlint("check", str(tmp_path))
    assert result.returncode == 2
    assert "latin.py: error: cannot decode the file as utf-8 (line 2)" in result.stderr
    assert "binary.py: error: not a Python source file" in result.stderr
    assert "ok.py:3:11: GRD001" in result.stdout
    assert "Traceback" not in result.stderr


def test_declared_encoding_bom_and_crlf(write) -> None:
    latin = write("latin1.py", b"# -*- coding: latin-1 -*-\nimport tensorflow as tf\ns = '\xe9'\n"
                               b"grads = tf.gradients(loss, params)\nx = [g * 2 for g in grads]\n")
    crlf = write("crlf.py", ("\ufeff" + BUGGY).replace("\n", "\r\n"))
    result = run_gradlint("check", str(latin), str(crlf))
    assert result.returncode == 1, result.stderr
    assert f"{latin}:5:6: GRD001" in result.stdout
    assert f"{crlf}:3:11: GRD001" in result.stdout


def test_empty_directory_and_missing_path(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_gradlint("check", str(tmp_path / "empty"))
    assert result.returncode == 0
    assert "no Python files" in result.stderr
    missing = run_gradlint("check", str(tmp_path / "nope.py"))
    assert missing.returncode == 2
    assert "nope.py: error: no such file or directory" in missing.stderr


def test_noqa_bare_and_specific(write) -> None:
    source = (
        "import tensorflow as tf\n"
        "grads = tf.gradients(loss, params)\n"
        "a = [g * 0.5 for g in grads]  # noqa\n"
        "b = [g * 0.5 for g in grads]  # noqa: GRD001\n"
        "c = [g * 0.5 for g in grads]  # noqa:GRD002,GRD001\n"
        "d = [g * 0.5 for g in grads]  # noqa: GRD002\n"
        "e = [g * 0.5 for g in grads]  # noqa: E501\n"
    )
    path = write("noqa.py", source)
    result = run_gradlint("check", "--format", "json", str(path))
    lines = sorted(f["line"] for f in json.loads(result.stdout)["findings"])
    assert lines == [6, 7]


def test_select_and_ignore_flags(write) -> None:
    path = write("mixed.py", (FIXTURES / "example" / "train_partial_update.py").read_text())
    def codes(*flags):
        result = run_gradlint("check", "--format", "json", *flags, str(path))
        return sorted({f["code"] for f in json.loads(result.stdout)["findings"]})
    assert codes() == ["GRD001", "GRD002", "GRD003", "GRD012"]
    assert codes("--select", "GRD001,GRD003") == ["GRD001", "GRD003"]
    assert codes("--ignore", "GRD002,GRD01") == ["GRD001", "GRD003"]
    assert codes("--select", "GRD00", "--ignore", "GRD001") == ["GRD002", "GRD003"]
    assert codes("--select", "GRD", "--ignore", "GRD") == []


def test_pyproject_configuration_found_by_walking_up(tmp_path, write) -> None:
    write("pyproject.toml", (
        "[tool.gradlint]\n"
        "ignore = ['GRD002', 'GRD012']\n"
        "exclude = ['generated/*']\n"
        "[tool.gradlint.per-file-ignores]\n"
        "'tests/*' = ['GRD001']\n"
    ))
    example = (FIXTURES / "example" / "train_partial_update.py").read_text()
    write("src/pkg/train.py", example)
    write("tests/test_train.py", example)
    write("generated/out.py", example)
    result = run_gradlint("check", "--format", "json", str(tmp_path / "src"), str(tmp_path / "tests"),
                          str(tmp_path / "generated"))
    findings = json.loads(result.stdout)["findings"]
    by_file = {}
    for f in findings:
        by_file.setdefault(os.path.basename(f["path"]), set()).add(f["code"])
    assert by_file == {"train.py": {"GRD001", "GRD003"}, "test_train.py": {"GRD003"}}
    # the command line wins over the file
    override = run_gradlint("check", "--format", "json", "--ignore", "GRD003", str(tmp_path / "src"))
    assert {f["code"] for f in json.loads(override.stdout)["findings"]} == {"GRD001", "GRD002", "GRD012"}
    isolated = run_gradlint("check", "--format", "json", "--isolated", str(tmp_path / "generated"))
    assert {f["code"] for f in json.loads(isolated.stdout)["findings"]} == {"GRD001", "GRD002", "GRD003",
                                                                            "GRD012"}


def test_invalid_configuration_is_a_clear_error(tmp_path, write) -> None:
    write("pyproject.toml", "[tool.gradlint]\nselekt = ['GRD001']\n")
    write("a.py", BUGGY)
    result = run_gradlint("check", str(tmp_path))
    assert result.returncode == 2
    assert "unknown [tool.gradlint] key(s): selekt" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_excluded_directories_are_skipped(tmp_path, write) -> None:
    for folder in (".venv", "build", "__pycache__", ".git", "node_modules"):
        write(f"{folder}/bug.py", BUGGY)
    write("src/bug.py", BUGGY)
    result = run_gradlint("check", "--format", "json", str(tmp_path))
    paths = {f["path"] for f in json.loads(result.stdout)["findings"]}
    assert paths == {str(tmp_path / "src" / "bug.py")}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_directory_symlink_loop_terminates(tmp_path, write) -> None:
    write("pkg/bug.py", BUGGY)
    os.symlink(tmp_path / "pkg", tmp_path / "pkg" / "loop")
    result = run_gradlint("check", "--format", "json", str(tmp_path))
    assert result.returncode == 1
    assert len(json.loads(result.stdout)["findings"]) == 1


def test_modern_syntax_is_parsed(write) -> None:
    source = (
        "import tensorflow as tf\n"
        "type Pairs = list[tuple[int, int]]\n"
        "def first[T](items: list[T]) -> T:\n"
        "    match items:\n"
        "        case [head, *_]:\n"
        "            return head\n"
        "    return f\"{items!r:>{10}}\"\n"
        "grads = tf.gradients(loss, params)\n"
        "scaled = [g * 2 for g in grads]\n"
    )
    result = run_gradlint("check", str(write("modern.py", source)))
    assert result.returncode == 1, result.stderr
    assert ":9:" in result.stdout


def test_rules_and_explain() -> None:
    listing = run_gradlint("rules")
    assert listing.returncode == 0
    for code in ("GRD001", "GRD002", "GRD003", "GRD101", "GRD108"):
        assert code in listing.stdout
    assert "[runtime]" in listing.stdout and "fix: safe" in listing.stdout
    rows = json.loads(run_gradlint("rules", "--format", "json").stdout)
    assert {r["code"]: r["kind"] for r in rows}["GRD104"] == "runtime"
    explained = run_gradlint("explain", "grd003")
    assert explained.returncode == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety"):
        assert heading in explained.stdout
    assert "GRD003 apply-gradients-per-variable" in explained.stdout
    runtime = run_gradlint("explain", "GRD104")
    assert runtime.returncode == 0 and "Runtime finding" in runtime.stdout
    unknown = run_gradlint("explain", "GRD999")
    assert unknown.returncode == 2 and "unknown rule code" in unknown.stderr


def test_version_and_help() -> None:
    assert run_gradlint("--version").stdout.startswith("gradlint ")
    assert "check" in run_gradlint().stdout


def test_parallel_jobs_give_identical_results() -> None:
    target = str(FIXTURES)
    serial = run_gradlint("check", "--format", "json", "--jobs", "1", target)
    parallel = run_gradlint("check", "--format", "json", "--jobs", "2", target)
    assert serial.returncode == parallel.returncode == 1
    assert serial.stdout == parallel.stdout
    assert json.loads(serial.stdout)["files_checked"] >= 40
