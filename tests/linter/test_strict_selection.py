"""A typo is an error, not a silent "clean": unknown and runtime codes wherever codes are accepted, a malformed
pyproject.toml on the search path, bad --jobs (all exit 2 with a clear message); an excluded file named on
the command line says so. flake8 keeps owning its selection: there gradlint only warns."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES, run_gradlint
from gradlint.runtime_checks import RUNTIME_BY_CODE


EXAMPLE = (FIXTURES / "example" / "train_partial_update.py").read_text()
UNKNOWN = "unknown rule code {code}; `gradlint rules` lists them"
RUNTIME_RANGE = f"{min(RUNTIME_BY_CODE)}–{max(RUNTIME_BY_CODE)}"  # the catalogue's runtime codes


@pytest.mark.parametrize("command", ["check", "fix"])
@pytest.mark.parametrize("flag,value,message", [
    ("--select", "GRD999", UNKNOWN.format(code="GRD999")),
    ("--select", "GRD001,FOO", UNKNOWN.format(code="FOO")),
    ("--ignore", "XYZ", UNKNOWN.format(code="XYZ")),
    ("--extend-select", "GRD0017", UNKNOWN.format(code="GRD0017")),
    ("--extend-ignore", "GRD2", UNKNOWN.format(code="GRD2")),
    ("--select", "GRD101", "GRD101 is a runtime finding, reported by the auditor while a watched training runs"),
    ("--ignore", "GRD1", f"GRD1 selects only runtime findings ({RUNTIME_RANGE})"),
])
def test_unknown_and_runtime_codes_on_the_command_line(write, command, flag, value, message) -> None:
    path = write("train.py", EXAMPLE)
    result = run_gradlint(command, flag, value, str(path))
    assert result.returncode == 2
    assert f"gradlint {command}: error: argument {flag}: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == EXAMPLE  # fix wrote nothing


@pytest.mark.parametrize("table,message", [
    ('select = ["GRD999"]', "select: unknown rule code GRD999"),
    ('ignore = ["XYZ"]', "ignore: unknown rule code XYZ"),
    ('select = ["GRD0", "GRD105"]', "select: GRD105 is a runtime finding"),
    ('[tool.gradlint.per-file-ignores]\n"train.py" = ["GRD9999"]', "per-file-ignores 'train.py': unknown rule code GRD9999"),
])
@pytest.mark.parametrize("command", ["check", "fix"])
def test_unknown_codes_in_the_configuration(tmp_path, write, command, table, message) -> None:
    config = write("pyproject.toml", "[tool.gradlint]\n" + table + "\n")
    path = write("train.py", EXAMPLE)
    result = run_gradlint(command, str(path))
    assert result.returncode == 2
    assert f"gradlint: error: {config}: {message}" in result.stderr
    assert path.read_text() == EXAMPLE


def test_known_codes_prefixes_and_case_still_work(write) -> None:
    path = write("train.py", EXAMPLE)
    result = run_gradlint("check", "--no-cache", "--format", "json", "--select", "grd00,GRD012", "--ignore", "GRD002",
                          "--extend-select", "GRD017", str(path))
    assert result.returncode == 1, result.stderr
    assert {f["code"] for f in json.loads(result.stdout)["findings"]} == {"GRD001", "GRD003", "GRD012"}
    everything = run_gradlint("check", "--no-cache", "--select", "ALL", str(path))
    assert everything.returncode == 1


def test_extend_select_adds_to_the_configured_selection(write) -> None:
    write("pyproject.toml", '[tool.gradlint]\nselect = ["GRD001"]\n')
    path = write("train.py", EXAMPLE)
    def codes(*flags):
        result = run_gradlint("check", "--no-cache", "--format", "json", *flags, str(path))
        return sorted({f["code"] for f in json.loads(result.stdout)["findings"]})
    assert codes() == ["GRD001"]
    assert codes("--extend-select", "GRD003") == ["GRD001", "GRD003"]
    assert codes("--extend-ignore", "GRD001") == []


def test_malformed_pyproject_on_the_search_path_names_the_file_and_the_error(tmp_path, write) -> None:
    write("pyproject.toml", "[tool.gradlint]\nignore = ['GRD001']\n")  # must not be used instead
    broken = write("project/pyproject.toml", "[tool.gradlint\nselect = ['GRD001']\n")
    path = write("project/src/train.py", EXAMPLE)
    for command in ("check", "fix"):
        result = run_gradlint(command, str(path))
        assert result.returncode == 2
        assert result.stderr.strip() == (f"gradlint: error: {broken}: invalid TOML: Expected ']' at the end of a "
                                         "table declaration (at line 1, column 15)")
        assert result.stdout == ""


def test_pyproject_without_a_gradlint_table_is_skipped(tmp_path, write) -> None:
    write("pyproject.toml", "[tool.gradlint]\nignore = ['GRD001', 'GRD002', 'GRD003']\n")
    write("project/pyproject.toml", "[project]\nname = 'x'\n")
    path = write("project/train.py", EXAMPLE)
    result = run_gradlint("check", "--no-cache", "--format", "json", str(path))
    assert result.returncode == 1, result.stderr
    assert {f["code"] for f in json.loads(result.stdout)["findings"]} == {"GRD012"}


@pytest.mark.parametrize("value", ["0", "-3", "two"])
@pytest.mark.parametrize("command", ["check", "fix"])
def test_bad_jobs(write, command, value) -> None:
    path = write("train.py", EXAMPLE)
    result = run_gradlint(command, "--jobs", value, str(path))
    assert result.returncode == 2
    assert f"argument --jobs/-j: expected a whole number of processes, 1 or more, not '{value}'" in result.stderr


def test_excluded_file_named_explicitly_says_so(tmp_path, write) -> None:
    config = write("pyproject.toml", "[tool.gradlint]\nexclude = ['generated/*']\n")
    generated = write("generated/gen.py", EXAMPLE)
    result = run_gradlint("check", str(generated))
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr == f"gradlint: {generated}: excluded by 'generated/*' (exclude in {config}); not checked\n"
    other = write("other.py", EXAMPLE)
    flagged = run_gradlint("check", "--no-cache", "--exclude", "oth*", str(other))
    assert flagged.stderr == f"gradlint: {other}: excluded by 'oth*' (--exclude); not checked\n"
    fixed = run_gradlint("fix", str(generated))
    assert fixed.returncode == 0 and "excluded by 'generated/*'" in fixed.stderr
    assert generated.read_text() == EXAMPLE


def flake8(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flake8", *args], capture_output=True, text=True, timeout=300)


def test_flake8_keeps_its_selection_and_warns_about_unknown_grd_codes(write) -> None:
    path = write("train.py", EXAMPLE)
    result = flake8("--select=GRD999,GRD1,GRD00,E999", "--extend-ignore=GRD000", str(path))
    assert result.returncode == 1  # GRD00 still selects GRD001..GRD003
    assert {line.split(": ", 1)[1].split()[0] for line in result.stdout.splitlines()} == {"GRD001", "GRD002", "GRD003"}
    assert result.stderr.splitlines() == [
        "gradlint: warning: unknown rule code GRD999; `gradlint rules` lists them",
        f"gradlint: warning: GRD1 selects only runtime findings ({RUNTIME_RANGE}), reported by the auditor while a "
        "watched training runs (`with auditor.watch():`); the linter checks only the static rules GRD001–GRD018",
    ]
    quiet = flake8("--select=GRD,E,W", "--extend-ignore=E501", str(path))
    assert quiet.stderr == ""  # other plugins' codes and the plain prefix need no word
