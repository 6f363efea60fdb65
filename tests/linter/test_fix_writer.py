"""Writing fixed files: encoding, BOM, newlines, permission bits, atomicity, refusals."""
from __future__ import annotations

import os
import stat

import pytest

from gradlint.fixer import fix_file
from gradlint.writer import WriteError, write_fixed
from gradlint.rules import RULES_BY_CODE

GRD001 = [RULES_BY_CODE["GRD001"]]
BUGGY = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 for g in grads]\n"
)
FIXED = BUGGY.replace("[g * 0.5 for", "[g * 0.5 if g is not None else None for")
LOOP = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "for g in grads:\n"
    "    print(tf.norm(g))  # comment\n"
)


def _no_temporary_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".gradlint-tmp")]


def test_crlf_file_stays_crlf(write, tmp_path) -> None:
    for name, text in (("comp.py", BUGGY), ("loop.py", LOOP)):
        path = write(name, text.replace("\n", "\r\n").encode())
        result = fix_file(str(path), GRD001)
        assert result.errors == [] and result.changed
        data = path.read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n"), data
    assert b"if g is not None:\r\n        print(tf.norm(g))  # comment\r\n" in (tmp_path / "loop.py").read_bytes()


def test_declared_encoding_and_bom_are_kept(write) -> None:
    latin = write("latin.py", b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + BUGGY.encode())
    fix_file(str(latin), GRD001)
    assert latin.read_bytes() == b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + FIXED.encode()
    bom = write("bom.py", b"\xef\xbb\xbf# \xc3\xa9\n" + BUGGY.encode())
    fix_file(str(bom), GRD001)
    assert bom.read_bytes() == b"\xef\xbb\xbf# \xc3\xa9\n" + FIXED.encode()


def test_permission_bits_are_kept_and_no_temporary_file_is_left(write, tmp_path) -> None:
    path = write("run.py", BUGGY)
    path.chmod(0o751)
    fix_file(str(path), GRD001)
    assert path.read_text() == FIXED
    assert stat.S_IMODE(path.stat().st_mode) == 0o751
    assert _no_temporary_files(tmp_path)


def test_symlink_is_followed_and_kept(write, tmp_path) -> None:
    target = write("real.py", BUGGY)
    link = tmp_path / "link.py"
    link.symlink_to(target)
    fix_file(str(link), GRD001)
    assert link.is_symlink() and target.read_text() == FIXED


def test_read_only_file_is_an_error_and_untouched(write) -> None:
    path = write("ro.py", BUGGY)
    path.chmod(0o444)
    try:
        result = fix_file(str(path), GRD001)
        assert [e.message for e in result.errors] == ["the file is read-only; not fixed"]
        assert not result.changed and result.applied == {}
        assert [v.code for v in result.remaining] == ["GRD001"]
        assert path.read_text() == BUGGY
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root can write into a read-only directory")
def test_read_only_directory_is_an_error(write, tmp_path) -> None:
    path = write("sub/x.py", BUGGY)
    path.parent.chmod(0o555)
    try:
        result = fix_file(str(path), GRD001)
        assert result.errors and "temporary file" in result.errors[0].message
        assert path.read_text() == BUGGY
    finally:
        path.parent.chmod(0o755)


def test_writer_refuses_code_that_does_not_parse(write, tmp_path) -> None:
    path = write("x.py", BUGGY)
    with pytest.raises(WriteError, match="does not parse"):
        write_fixed(str(path), "def broken(:\n", BUGGY.encode())
    assert path.read_text() == BUGGY
    assert _no_temporary_files(tmp_path)


def test_writer_refuses_when_the_file_changed_meanwhile(write) -> None:
    path = write("x.py", BUGGY)
    with pytest.raises(WriteError, match="changed while"):
        write_fixed(str(path), FIXED, b"something else")
    assert path.read_text() == BUGGY


def test_unencodable_text_is_refused(write) -> None:
    path = write("x.py", b"# -*- coding: ascii -*-\nx = 1\n")
    with pytest.raises(WriteError, match="cannot encode"):
        write_fixed(str(path), "# -*- coding: ascii -*-\nx = '\u00e9'\n", path.read_bytes())


def test_files_without_findings_are_not_rewritten(write) -> None:
    path = write("clean.py", "import tensorflow as tf\nopt = tf.keras.optimizers.Adam()\n")
    before = os.stat(path)
    result = fix_file(str(path), list(RULES_BY_CODE.values()), unsafe=True)
    assert not result.changed and result.errors == []
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_dry_run_does_not_write(write) -> None:
    path = write("bug.py", BUGGY)
    result = fix_file(str(path), GRD001, write=False)
    assert result.fixed == FIXED and path.read_text() == BUGGY
