"""Results of `gradlint check` kept between runs, per file content, under ``.gradlint_cache/`` (as ruff does).

An entry is found by a key made of the file's content hash, the selected rule codes, the target Keras
version, the kind of file (Python or notebook) and the tool's fingerprint: gradlint's version, the bytes of
its own source files (so a development checkout is never stale), the Python and libcst versions. A change
to any of them is a miss. Entries live under ``<cache dir>/<fingerprint>/``; when a new fingerprint starts
a directory, the other fingerprints' directories are removed.

Writes go to a temporary file that is then renamed over the entry, so concurrent runs and worker processes
never see half an entry; an unreadable or malformed entry is a miss. Results with errors are not kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

from gradlint import __version__
from gradlint.violation import Violation

CACHE_DIR_NAME = ".gradlint_cache"
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_FIELDS = ("line", "column", "code", "message", "end_line", "end_column", "cell", "json_line")


@lru_cache(maxsize=1)
def tool_fingerprint() -> str:
    """What, besides a file and its settings, decides gradlint's result on it (computed once per process)."""
    return fingerprint(__version__, Path(__file__).resolve().parent)


def fingerprint(version: str, package: Path) -> str:
    """A hash of the version, every ``*.py`` file under ``package`` and the Python and libcst versions."""
    digest = hashlib.sha256(f"gradlint {version}\npython {sys.version}\n".encode())
    try:
        from importlib.metadata import version as installed

        digest.update(f"libcst {installed('libcst')}\n".encode())
    except Exception:  # no metadata: the source hash below still covers gradlint itself
        pass
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class ResultCache:
    """The entries of one tool fingerprint under one cache directory."""

    def __init__(self, cache_dir: str | os.PathLike, fingerprint: Optional[str] = None) -> None:
        self.root = Path(cache_dir)
        self.directory = self.root / (fingerprint or tool_fingerprint())

    def prepare(self) -> None:
        """Create the directory (and a .gitignore and CACHEDIR.TAG beside it); drop other fingerprints'."""
        if self.directory.is_dir():
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_if_missing(self.root / ".gitignore", "# created by gradlint\n*\n")
            _write_if_missing(self.root / "CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n"
                                                          "# gradlint's result cache: https://bford.info/cachedir/\n")
            for other in self.root.iterdir():
                if other != self.directory and _FINGERPRINT.match(other.name) and other.is_dir():
                    shutil.rmtree(other, ignore_errors=True)
        except OSError:
            pass  # an unwritable cache is no cache, not an error

    @staticmethod
    def key(data: bytes, codes: Sequence[str], target_keras: int, notebook: bool) -> str:
        settings = f"{','.join(sorted(codes))}|keras{target_keras}|{'ipynb' if notebook else 'py'}"
        return hashlib.sha256(hashlib.sha256(data).digest() + settings.encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key[2:]}.json"

    def load(self, key: str, path: str) -> Optional[list[Violation]]:
        """The findings kept for ``key``, reported at ``path``; None on a miss."""
        try:
            with open(self._entry(key), "rb") as handle:
                rows = json.load(handle)
            return [Violation(path, **dict(zip(_FIELDS, row))) for row in rows]
        except (OSError, ValueError, TypeError):
            return None

    def store(self, key: str, violations: Sequence[Violation]) -> None:
        rows = [[getattr(v, name) for name in _FIELDS] for v in violations]
        entry = self._entry(key)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                    json.dump(rows, handle, separators=(",", ":"))
                os.replace(temporary, entry)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            pass


def _write_if_missing(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(text, encoding="utf-8")


__all__ = ["CACHE_DIR_NAME", "ResultCache", "fingerprint", "tool_fingerprint"]
