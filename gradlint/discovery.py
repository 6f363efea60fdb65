"""Which files to check: explicit files, and ``*.py`` / ``*.ipynb`` files found recursively in directories."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

from gradlint.config import DEFAULT_EXCLUDES, Settings
from gradlint.violation import FileError

SOURCE_SUFFIXES = (".py", ".ipynb")


@dataclass(frozen=True)
class Excluded:
    """A path named on the command line that an exclude pattern skips."""

    path: str
    pattern: str
    origin: str  # "exclude in .../pyproject.toml" or "--exclude"

    def __str__(self) -> str:
        return f"gradlint: {self.path}: excluded by {self.pattern!r} ({self.origin}); not checked"


def discover(paths: list[str], settings_for: Callable[[str], Settings]
             ) -> Iterator[tuple[str, Settings] | FileError | Excluded]:
    """Yield ``(file, settings)`` for every file to check, an Excluded for an excluded path named explicitly,
    or a FileError for a path that does not exist.

    Directory symlinks are not followed (no loops); default excludes apply inside directories only;
    configured excludes apply to explicit files too, so pre-commit respects them.
    """
    seen: set[str] = set()
    for path in paths:
        settings = settings_for(path)
        if not (os.path.exists(path) or os.path.islink(path)):
            yield FileError(path, "no such file or directory")
            continue
        pattern = settings.exclusion(path)
        if pattern is not None:
            yield Excluded(path, pattern, settings.exclusion_origin(pattern))
            continue
        if os.path.isdir(path):
            for directory, subdirs, files in os.walk(path, followlinks=False):
                subdirs[:] = sorted(
                    d for d in subdirs
                    if d not in DEFAULT_EXCLUDES and not d.endswith(".egg-info")
                    and not settings.is_excluded(os.path.join(directory, d))
                )
                for name in sorted(files):
                    if not name.endswith(SOURCE_SUFFIXES):
                        continue
                    file_path = os.path.join(directory, name)
                    if settings.is_excluded(file_path):
                        continue
                    key = os.path.normpath(os.path.abspath(file_path))
                    if key not in seen:
                        seen.add(key)
                        yield file_path, settings
        else:
            key = os.path.normpath(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                yield path, settings
