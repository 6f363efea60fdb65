"""benchmarks/realworld/evaluate.py on a small checkouts folder of its own: precision, misses, differences."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "realworld" / "evaluate.py"
CODE = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 for g in grads]\n"
    "for g in grads:\n"
    "    tf.clip_by_norm(g, 1.0)\n"
)
HEADER = "kind\ttargets\tpath\tline\tcode\tverdict\treason\n"


def evaluate(tmp_path: Path, verdicts: str) -> subprocess.CompletedProcess:
    (tmp_path / "verdicts.tsv").write_text("# comment\n" + HEADER + verdicts, encoding="utf-8")
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "checkouts"), "--check",
                           "--manifest", str(tmp_path / "manifest.toml"), "--verdicts", str(tmp_path / "verdicts.tsv")],
                          capture_output=True, text=True, timeout=300)


def make_checkouts(tmp_path: Path) -> None:
    repo = tmp_path / "checkouts" / "demo"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text(CODE)
    (tmp_path / "manifest.toml").write_text(
        'targets = [3]\n[[repository]]\nname = "someone/demo"\nurl = "https://example.invalid/demo"\n'
        'commit = "0000000000000000000000000000000000000000"\ndirectory = "demo"\npython_files = 1\n'
        'written_for = "TF1"\n')


def test_all_judged_right_and_misses_found(tmp_path: Path) -> None:
    make_checkouts(tmp_path)
    result = evaluate(tmp_path,
                      "finding\t3\tdemo/train.py\t3\tGRD001\tright\tunguarded product\n"
                      "finding\t3\tdemo/train.py\t5\tGRD001\tright\tunguarded clip\n"
                      "finding\t3\tdemo/train.py\t5\tGRD005\tright\tclip discarded\n"
                      "miss\t3\tdemo/train.py\t4-5\tGRD005\tfound\tclip discarded\n"
                      "miss\t3\telsewhere.py\t1\tGRD001\tout-of-scope\tanother module\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "precision 1.000" in result.stdout
    assert "1 of 1 known misses found, 1 out of scope" in result.stdout
    assert "every finding matches its verdict" in result.stdout


def test_unjudged_wrong_and_vanished_findings_are_listed(tmp_path: Path) -> None:
    make_checkouts(tmp_path)
    result = evaluate(tmp_path,
                      "finding\t3\tdemo/train.py\t3\tGRD001\twrong\tsay the list is connected\n"
                      "finding\t3\tdemo/train.py\t9\tGRD003\tright\tno longer reported\n"
                      "miss\t3\tdemo/train.py\t2\tGRD006\tfound\tnot found at all\n")
    assert result.returncode == 1
    assert "reported, no verdict: demo/train.py:5 GRD001" in result.stdout
    assert "judged right, no longer reported: demo/train.py:9 GRD003" in result.stdout
    assert "precision 0.000" in result.stdout  # 1 wrong + 2 unjudged of 3
    assert "known miss not found: demo/train.py:2 GRD006" in result.stderr


def test_an_incomplete_checkout_is_a_problem(tmp_path: Path) -> None:
    make_checkouts(tmp_path)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("python_files = 1", "python_files = 2"))
    result = evaluate(tmp_path, "")
    assert result.returncode == 1
    assert "1 of 2 .py files" in result.stderr
