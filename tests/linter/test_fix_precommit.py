"""The pre-commit hooks of this repository, run by real `pre-commit try-repo` in a temporary git repository.

pre-commit installs gradlint from this repository's committed HEAD into its own environment (under a
temporary PRE_COMMIT_HOME), which needs PyPI for gradlint's dependencies.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

BUGGY = (
    "import tensorflow as tf\n"
    "\n"
    "\n"
    "def step(loss, params):\n"
    "    grads = tf.gradients(loss, params)\n"
    "    return [tf.clip_by_norm(g, 1.0) for g in grads]  # clip each gradient\n"
)
FIXED = BUGGY.replace("tf.clip_by_norm(g, 1.0) for", "tf.clip_by_norm(g, 1.0) if g is not None else None for")
CLEAN = "import tensorflow as tf\n\nx = tf.constant(1.0)\n"


def _git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _head() -> str:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of gradlint")
    if not (REPO / ".pre-commit-hooks.yaml").exists():
        pytest.fail(".pre-commit-hooks.yaml is missing")
    tracked = _git("ls-files", ".pre-commit-hooks.yaml", cwd=REPO)
    if not tracked.strip():
        pytest.skip(".pre-commit-hooks.yaml is not committed yet (try-repo sees committed code only)")
    return _git("rev-parse", "HEAD", cwd=REPO).strip()


def _try_repo(hook: str, repo: Path, home: Path, ref: str, all_files: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never")
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(REPO), hook, "--ref", ref, "--verbose"]
        + (["--all-files"] if all_files else []),
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory) -> Path:
    pytest.importorskip("pre_commit")
    return tmp_path_factory.mktemp("pre-commit-home")


def _new_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    _git("init", "-q", cwd=root)
    for name, text in files.items():
        (root / name).write_text(text)
    _git("add", ".", cwd=root)
    _git("commit", "-q", "-m", "initial", cwd=root)
    return root


def test_fix_hook_fails_then_passes(tmp_path, pre_commit_home) -> None:
    ref = _head()
    repo = _new_repo(tmp_path / "project", {"buggy.py": BUGGY, "clean.py": CLEAN})
    first = _try_repo("gradlint-fix", repo, pre_commit_home, ref)
    output = first.stdout + first.stderr
    assert first.returncode != 0, output
    assert "gradlint (fix)" in output and "Failed" in output
    assert "files were modified by this hook" in output
    assert "buggy.py: fixed 1 finding (GRD001)" in output
    assert (repo / "buggy.py").read_text() == FIXED
    assert (repo / "clean.py").read_text() == CLEAN
    second = _try_repo("gradlint-fix", repo, pre_commit_home, ref)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout
    check = _try_repo("gradlint", repo, pre_commit_home, ref)
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_hook_reports_and_no_python_files_is_skipped(tmp_path, pre_commit_home) -> None:
    ref = _head()
    buggy = _new_repo(tmp_path / "buggy", {"buggy.py": BUGGY})
    result = _try_repo("gradlint", buggy, pre_commit_home, ref)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "buggy.py:6:13: GRD001" in result.stdout
    assert (buggy / "buggy.py").read_text() == BUGGY
    empty = _new_repo(tmp_path / "docs-only", {"README.md": "# no Python here\n"})
    for hook in ("gradlint", "gradlint-fix"):
        skipped = _try_repo(hook, empty, pre_commit_home, ref)
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert "Skipped" in skipped.stdout
    # the usual commit: only a non-Python file staged, a buggy Python file committed but not staged
    (buggy / "README.md").write_text("changed\n")
    _git("add", "README.md", cwd=buggy)
    for hook in ("gradlint", "gradlint-fix"):
        staged = _try_repo(hook, buggy, pre_commit_home, ref, all_files=False)
        assert staged.returncode == 0, staged.stdout + staged.stderr
        assert "Skipped" in staged.stdout
    assert (buggy / "buggy.py").read_text() == BUGGY
