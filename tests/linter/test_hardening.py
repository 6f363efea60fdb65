"""Bad and unusual input: a clear message or a normal result, never a traceback."""
from __future__ import annotations

import json

import pytest

from gradlint.engine import lint_source
from gradlint.rules import ALL_RULES, Report, Rule

from conftest import run_gradlint

BUGGY = "import tensorflow as tf\ngrads = tf.gradients(loss, params)\nscaled = [g * 0.5 for g in grads]\n"


@pytest.mark.parametrize("name,content,expect_error", [
    ("empty.py", b"", None),
    ("comments.py", b"# optimizer gradient notes only\n", None),
    ("tabs.py", b"import tensorflow as tf\nif True:\n\tgrads = tf.gradients(loss, params)\n"
                b"\tscaled = [g * 0.5 for g in grads]\n", None),
    ("mixed_tabs.py", b"import tensorflow as tf\nif True:\n\tx = 1\n        grads = tf.gradients(a, b)\n",
     "error: "),
    ("bom_crlf.py", b"\xef\xbb\xbfimport tensorflow as tf\r\ngrads = tf.gradients(l, params)\r\n", None),
    ("nul.py", b"import tensorflow\x00 as tf\n# gradient\n", "not a Python source file"),
    ("latin.py", b"# optimizer\nname = '\xe9'\n", "cannot decode the file as utf-8 (line 2)"),
    ("cookie.py", b"# -*- coding: klingon -*-\nopt.apply_gradients(x)\n",
     "error: the file declares an unknown encoding 'klingon' on line 1\n"),
    ("nested_fstring.py", b"import tensorflow as tf\nopt = tf.keras.optimizers.Adam()\n"
                          b"msg = f\"{f\"{opt}\"}\"\n", None),
    ("deep.py", b"import tensorflow as tf\ngrads = tf.gradients(loss, params)\nx = " + b"(" * 400 + b"1"
                + b")" * 400 + b"\n", None),
    ("match.py", b"import tensorflow as tf\nmatch tf.gradients(l, params):\n    case [g, *_]:\n"
                 b"        pass\n", None),
])
def test_unusual_files_never_raise(write, name, content, expect_error) -> None:
    path = write(name, content)
    result = run_gradlint("check", "--format", "json", str(path))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2)
    document = json.loads(result.stdout)
    if expect_error is None:
        # valid for some Python version: either checked normally or reported as one clear line
        assert len(result.stderr.strip().splitlines()) <= 1
    else:
        assert result.returncode == 2
        assert expect_error in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.count("encoding") <= 1  # said once, not "unknown encoding ...: unknown encoding"
        assert document["errors"] and document["errors"][0]["path"] == str(path)


def test_five_megabyte_file(write) -> None:
    body = "".join(f"def helper_{i}(x):\n    return x * {i} + 1\n\n" for i in range(110_000))
    path = write("big.py", BUGGY + body)
    assert path.stat().st_size > 5_000_000
    result = run_gradlint("check", "--format", "json", str(path))
    assert result.returncode == 1, result.stderr
    assert [f["line"] for f in json.loads(result.stdout)["findings"]] == [3]


def test_binary_file_named_py_among_good_files(write, tmp_path) -> None:
    write("a.py", bytes(range(256)) * 8)
    write("b.py", BUGGY)
    result = run_gradlint("check", str(tmp_path))
    assert result.returncode == 2
    assert "a.py: error:" in result.stderr and "b.py:3:11: GRD001" in result.stdout


class _BrokenRule(Rule):
    CODE = "GRD999"
    NAME = "broken"

    def check(self, model):
        yield Report(model.module, "never")
        raise ValueError("boom")


def test_internal_error_in_one_rule_keeps_the_others() -> None:
    result = lint_source(BUGGY, "file.py", [_BrokenRule, *ALL_RULES])
    assert [v.code for v in result.violations] == ["GRD001"]
    (error,) = result.errors
    assert error.path == "file.py"
    assert "internal error in rule GRD999: ValueError: boom" in error.message
