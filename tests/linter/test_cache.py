"""The result cache: used when content, settings and tool are unchanged, never stale when any of them
changes, safe under --jobs and concurrent runs. (Its speed is measured in benchmarks/lint_throughput.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradlint.cache import ResultCache, fingerprint

from conftest import FIXTURES, REPO

BUGGY = "import tensorflow as tf\ngrads = tf.gradients(loss, params)\nscaled = [g * 0.5 for g in grads]\n"
BOGUS = [[1, 0, "GRD002", "planted in the cache", 1, 1, 0, 0]]


def gradlint(*args: str, cwd: Path, package_parent: Path | None = None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "GRADLINT_NO_CACHE"}
    if package_parent is not None:  # run a copy of gradlint's sources instead of the installed one
        env["PYTHONPATH"] = str(package_parent)
    return subprocess.run([sys.executable, "-m", "gradlint", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n")
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "nb.ipynb").write_bytes((FIXTURES / "notebooks" / "partial_update.ipynb").read_bytes())
    return tmp_path


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*.json") if not p.name.startswith(".tmp-"))


def plant(cache: Path) -> None:
    """Overwrite every entry with a finding no rule would report: a run that shows it read the cache."""
    for entry in entries(cache):
        entry.write_text(json.dumps(BOGUS))


def test_warm_run_reads_the_cache_and_prints_the_same(project) -> None:
    cold = gradlint("check", ".", cwd=project)
    cache = project / ".gradlint_cache"
    assert cold.returncode == 1, cold.stderr
    assert len(entries(cache)) == 2
    assert (cache / ".gitignore").read_text().endswith("*\n") and (cache / "CACHEDIR.TAG").exists()
    warm = gradlint("check", ".", cwd=project)
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert "nb.ipynb:cell 6:1:12: GRD001" in warm.stdout and "train.py:3:11: GRD001" in warm.stdout
    plant(cache)
    planted = gradlint("check", ".", cwd=project)
    assert planted.stdout.count("GRD002 planted in the cache") == 2  # so the warm run came from the cache
    uncached = gradlint("check", "--no-cache", ".", cwd=project)
    assert uncached.stdout == cold.stdout


def test_no_cache_writes_nothing(project) -> None:
    assert gradlint("check", "--no-cache", ".", cwd=project).returncode == 1
    assert not (project / ".gradlint_cache").exists()
    by_environment = subprocess.run([sys.executable, "-m", "gradlint", "check", "."], cwd=project,
                                    env=dict(os.environ, GRADLINT_NO_CACHE="1"), capture_output=True, timeout=300)
    assert by_environment.returncode == 1
    assert not (project / ".gradlint_cache").exists()
    assert gradlint("fix", "--diff", ".", cwd=project).returncode == 1
    assert not (project / ".gradlint_cache").exists()  # fix does not use the cache


@pytest.mark.parametrize("change", ["content", "select", "target-keras", "per-file-ignores", "notebook cell"])
def test_any_change_of_content_or_settings_is_a_miss(project, change) -> None:
    gradlint("check", ".", cwd=project)
    plant(project / ".gradlint_cache")
    args = ["check", "--format", "json", "."]
    if change == "content":
        (project / "train.py").write_text(BUGGY + "\n")
        (project / "nb.ipynb").write_text((project / "nb.ipynb").read_text() + "\n")
    elif change == "select":
        args[1:1] = ["--select", "GRD00"]
    elif change == "target-keras":
        args[1:1] = ["--target-keras", "2"]
    elif change == "per-file-ignores":
        (project / "pyproject.toml").write_text('[tool.gradlint.per-file-ignores]\n"*" = ["GRD012"]\n')
    elif change == "notebook cell":
        document = json.loads((project / "nb.ipynb").read_text())
        document["cells"][2]["source"].append("\n# one more line")
        (project / "nb.ipynb").write_text(json.dumps(document, indent=1))
        (project / "train.py").write_text(BUGGY + "\n")
    result = gradlint(*args, cwd=project)
    findings = json.loads(result.stdout)["findings"]
    assert findings and not [f for f in findings if f["message"] == "planted in the cache"]
    assert {f["code"] for f in findings} == {"GRD001", "GRD003"}


def _copy_package(destination: Path) -> Path:
    shutil.copytree(REPO / "gradlint", destination / "gradlint", ignore=shutil.ignore_patterns("__pycache__"))
    return destination / "gradlint"


def test_a_new_version_or_changed_gradlint_source_is_a_miss(project, tmp_path_factory) -> None:
    parent = tmp_path_factory.mktemp("copy")
    package = _copy_package(parent)
    gradlint("check", ".", cwd=project, package_parent=parent)
    cache = project / ".gradlint_cache"
    (first,) = [p for p in cache.iterdir() if p.is_dir()]
    plant(cache)
    same = gradlint("check", ".", cwd=project, package_parent=parent)
    assert "planted in the cache" in same.stdout  # an unchanged copy shares the fingerprint

    init = package / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "99.'))
    new_version = gradlint("check", ".", cwd=project, package_parent=parent)
    assert "planted in the cache" not in new_version.stdout and "GRD001" in new_version.stdout
    assert not first.exists()  # the old fingerprint's entries are dropped
    (second,) = [p for p in cache.iterdir() if p.is_dir()]

    plant(cache)
    rule = package / "rules" / "grd001_unchecked_none_gradient.py"
    rule.write_text(rule.read_text() + "\n# an edit in a development checkout\n")
    edited = gradlint("check", ".", cwd=project, package_parent=parent)
    assert "planted in the cache" not in edited.stdout and "GRD001" in edited.stdout
    assert not second.exists()


def test_fingerprint_covers_version_and_every_source_file(tmp_path) -> None:
    package = _copy_package(tmp_path)
    base = fingerprint("1.0", package)
    assert fingerprint("1.0", package) == base
    assert fingerprint("1.1", package) != base
    (package / "semantic" / "analyzer.py").write_text((package / "semantic" / "analyzer.py").read_text() + " ")
    assert fingerprint("1.0", package) != base


def test_cache_dir_in_configuration_and_on_the_command_line(project, tmp_path_factory) -> None:
    (project / "pyproject.toml").write_text('[tool.gradlint]\ncache-dir = "build/lint-cache"\n')
    gradlint("check", "train.py", cwd=project)
    assert entries(project / "build" / "lint-cache") and not (project / ".gradlint_cache").exists()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    gradlint("check", "--cache-dir", str(elsewhere / "c"), "train.py", cwd=project)
    assert entries(elsewhere / "c")
    (project / "pyproject.toml").write_text("[tool.gradlint]\ncache-dir = 3\n")
    bad = gradlint("check", "train.py", cwd=project)
    assert bad.returncode == 2 and "cache-dir must be a string" in bad.stderr


def test_results_with_errors_are_not_kept(project) -> None:
    (project / "broken.py").write_text("import tensorflow as tf\ndef f(:\n    tf.gradients(y, x)\n")
    for _ in range(2):
        result = gradlint("check", "broken.py", cwd=project)
        assert result.returncode == 2 and "broken.py: error: syntax error at line 2" in result.stderr
    assert entries(project / ".gradlint_cache") == []


def test_concurrent_runs_with_jobs_agree_and_leave_no_temporary_files(tmp_path) -> None:
    for number in range(40):
        (tmp_path / f"m{number:02}.py").write_text(BUGGY if number % 3 else "import os\n")
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n")
    expected = gradlint("check", "--no-cache", "--format", "json", ".", cwd=tmp_path).stdout
    command = [sys.executable, "-m", "gradlint", "check", "--jobs", "2", "--format", "json", "."]
    env = {name: value for name, value in os.environ.items() if name != "GRADLINT_NO_CACHE"}
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(3)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [out for out, _ in outputs] == [expected] * 3, [err for _, err in outputs]
    cache = tmp_path / ".gradlint_cache"
    assert len(entries(cache)) == 2  # one per distinct content: buggy and clean
    assert not list(cache.rglob(".tmp-*"))
    assert gradlint("check", "--jobs", "2", "--format", "json", ".", cwd=tmp_path).stdout == expected


def test_unreadable_or_malformed_entries_are_misses(tmp_path) -> None:
    cache = ResultCache(tmp_path / "c", "0123456789abcdef")
    cache.prepare()
    key = cache.key(BUGGY.encode(), ("GRD001",), 3, False)
    assert cache.load(key, "a.py") is None
    cache.store(key, [])
    assert cache.load(key, "a.py") == []
    entry = next((tmp_path / "c").rglob("*.json"))
    entry.write_text("[[1, 2")
    assert cache.load(key, "a.py") is None
    entry.write_text('[["not", "a", "row"]]')
    assert cache.load(key, "a.py") is None
    assert cache.key(BUGGY.encode(), ("GRD001",), 3, True) != key
