"""The linter over real code: every .py file of the installed keras and tensorflow, no internal error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_gradlint


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(list(spec.submodule_search_locations)[0])


@pytest.mark.slow
def test_installed_keras_and_tensorflow_sources_lint_without_errors() -> None:
    roots = [_package_dir("keras"), _package_dir("tensorflow")]
    result = run_gradlint("check", "--format", "json", "--select", "GRD,GRD017,GRD018", *map(str, roots))
    document = json.loads(result.stdout)
    internal = [e for e in document["errors"] if "internal error" in e["message"]]
    assert internal == []
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert document["files_checked"] > 1500
    # the reviewed baseline: these sources contain no true positive for the rules (see the closing notes)
    assert document["findings"] == [], document["findings"][:5]
    assert os.path.isdir(roots[0])
