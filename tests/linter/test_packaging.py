"""The distribution: built as a wheel (offline, with the installed setuptools), named `tf-gradlint`, with
the `gradlint` command and the flake8 entry point, SPDX license metadata and no setuptools warning."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """A wheel built from a copy of the sources (the checkout gets no build/ or egg-info), and pip's log."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("gradlint", "auditor"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-v",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return built, result.stdout + result.stderr


def _read(archive: zipfile.ZipFile, suffix: str) -> str:
    (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
    return archive.read(name).decode("utf-8")


def test_wheel_name_metadata_and_license(wheel) -> None:
    path, _ = wheel
    assert path.name.startswith("tf_gradlint-")
    with zipfile.ZipFile(path) as archive:
        metadata = Parser().parsestr(_read(archive, ".dist-info/METADATA"))
        names = archive.namelist()
    assert metadata["Name"] == "tf-gradlint"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License"] is None  # the deprecated free-text field
    assert any(n.startswith("gradlint/") for n in names) and any(n.startswith("auditor/") for n in names)
    assert not any(n.startswith(("tests/", "fixtures/")) for n in names)


def test_wheel_entry_points(wheel) -> None:
    path, _ = wheel
    with zipfile.ZipFile(path) as archive:
        entry_points = configparser.ConfigParser()
        entry_points.optionxform = str  # entry point names are case-sensitive
        entry_points.read_string(_read(archive, ".dist-info/entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"gradlint": "gradlint.cli:main"}
    assert dict(entry_points["flake8.extension"]) == {"GRD": "gradlint.flake8_plugin:GradlintChecker"}


def test_build_prints_no_setuptools_warning(wheel) -> None:
    _, log = wheel
    assert "Deprecat" not in log and "deprecat" not in log, log
    assert "BuildBackendWarning" not in log, log
