"""Write a fixed file safely: same encoding (PEP 263 cookie / BOM), same newlines, same permission bits,
atomically (a temporary file in the same directory, then ``os.replace``), and only code that parses
(a notebook's cells are checked before its JSON text is built; the bytes are written the same way).
"""
from __future__ import annotations

import ast
import io
import os
import stat
import tempfile
import tokenize

_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class WriteError(Exception):
    """The file was not written; the message says why, in one line."""


def source_encoding(data: bytes) -> str:
    """The encoding Python reads ``data`` with (``utf-8-sig`` when it starts with a BOM)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    return encoding


def encode_like(text: str, original: bytes) -> bytes:
    """``text`` encoded the way ``original`` was (its cookie or BOM; UTF-8 otherwise)."""
    encoding = source_encoding(original)
    try:
        return text.encode(encoding)  # `utf-8-sig` writes the BOM back
    except (UnicodeEncodeError, LookupError) as exc:
        raise WriteError(f"cannot encode the fixed code as {encoding}: {exc}") from None


def write_fixed(path: str, text: str, original: bytes) -> None:
    """Replace the file at ``path`` (whose content was ``original`` when it was read) with ``text``.

    Raises WriteError, leaving the file untouched, when the text does not parse, the file is read-only
    or changed since it was read, or the directory cannot hold a temporary file.
    """
    try:
        ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        raise WriteError(f"refusing to write code that does not parse: {exc}") from None
    write_atomically(path, encode_like(text, original), original)


def write_atomically(path: str, data: bytes, original: bytes) -> None:
    """Replace the file at ``path`` (whose content was ``original`` when it was read) with ``data``.

    Raises WriteError, leaving the file untouched, when the file is read-only or changed since it was read,
    or the directory cannot hold a temporary file.
    """
    target = os.path.realpath(path)  # a symlink keeps pointing at the file it points at
    try:
        info = os.stat(target)
    except OSError as exc:
        raise WriteError(f"cannot write the file: {exc.strerror or exc}") from None
    if not info.st_mode & _WRITE_BITS or not os.access(target, os.W_OK):
        raise WriteError("the file is read-only; not fixed")
    try:
        with open(target, "rb") as handle:
            if handle.read() != original:
                raise WriteError("the file changed while it was being fixed; not written")
    except OSError as exc:
        raise WriteError(f"cannot read the file again before writing: {exc.strerror or exc}") from None
    directory = os.path.dirname(target) or "."
    try:
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.",
                                                 suffix=".gradlint-tmp")
    except OSError as exc:
        raise WriteError(f"cannot create a temporary file in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, stat.S_IMODE(info.st_mode))
        if hasattr(os, "chown") and (info.st_uid, info.st_gid) != _owner(temporary):
            try:  # possible as root: keep the file's owner
                os.chown(temporary, info.st_uid, info.st_gid)
            except OSError:
                pass
        os.replace(temporary, target)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise WriteError(f"cannot write the file: {exc.strerror or exc}") from None


def _owner(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid


__all__ = ["WriteError", "encode_like", "source_encoding", "write_atomically", "write_fixed"]
