"""Settings: defaults, ``[tool.gradlint]`` in pyproject.toml, and command-line overrides."""
from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from gradlint.cache import CACHE_DIR_NAME
from gradlint.codes import CodeError, check_patterns

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_EXCLUDES = (".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "build", "dist", "__pycache__",
                    ".eggs", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
                    ".gradlint_cache")
_KNOWN_KEYS = {"select", "ignore", "exclude", "per-file-ignores", "target-keras", "cache-dir"}


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()       # from the configuration file
    cli_exclude: tuple[str, ...] = ()   # from --exclude
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    target_keras: int = 3
    root: Optional[Path] = None  # the directory of the pyproject.toml the settings came from
    config_file: Optional[Path] = None
    cache_dir: Optional[Path] = None  # cache-dir (relative to the pyproject.toml) or --cache-dir

    def cache_directory(self) -> Path:
        """Where results are cached: ``cache_dir``, else ``.gradlint_cache`` at the project root (the
        directory of the pyproject.toml with ``[tool.gradlint]``; the current directory without one)."""
        if self.cache_dir is not None:
            return self.cache_dir
        return (self.root or Path(os.path.abspath(os.curdir))) / CACHE_DIR_NAME

    def relative(self, path: str) -> str:
        absolute = Path(os.path.abspath(path))
        if self.root is not None:
            try:
                return absolute.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return Path(path).as_posix()

    def exclusion(self, path: str) -> Optional[str]:
        """The first exclude pattern that matches ``path`` (None: not excluded)."""
        relative = self.relative(path)
        name = os.path.basename(path.rstrip("/\\"))
        for pattern in self.exclude + self.cli_exclude:
            if (fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern)
                    or fnmatch.fnmatch(relative, pattern.rstrip("/") + "/*")):
                return pattern
        return None

    def is_excluded(self, path: str) -> bool:
        return self.exclusion(path) is not None

    def exclusion_origin(self, pattern: str) -> str:
        """Where an exclude pattern comes from, for messages."""
        if pattern in self.exclude and self.config_file is not None:
            return f"exclude in {self.config_file}"
        return "--exclude"

    def ignored_for(self, path: str) -> tuple[str, ...]:
        relative = self.relative(path)
        name = os.path.basename(path)
        codes: list[str] = []
        for pattern, pattern_codes in self.per_file_ignores:
            if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern):
                codes.extend(pattern_codes)
        return tuple(codes)


def find_config(start: Path) -> Optional[Path]:
    """The nearest pyproject.toml with a ``[tool.gradlint]`` table, walking up from ``start``.

    A pyproject.toml on the way that is not valid TOML is an error (ConfigError naming the file): skipping it
    would silently use a parent directory's settings, or none.
    """
    directory = start if start.is_dir() else start.parent
    directory = Path(os.path.abspath(directory))
    for candidate_dir in (directory, *directory.parents):
        candidate = candidate_dir / "pyproject.toml"
        if candidate.is_file():
            if "gradlint" in _read_toml(candidate).get("tool", {}):
                return candidate
    return None


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({exc.reason})") from None


def load_settings(config_file: Optional[Path]) -> Settings:
    """Settings from a pyproject.toml (defaults when ``config_file`` is None)."""
    if config_file is None:
        return Settings(target_keras=default_target_keras())
    table = _read_toml(config_file).get("tool", {}).get("gradlint", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{config_file}: [tool.gradlint] must be a table")
    unknown = set(table) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{config_file}: unknown [tool.gradlint] key(s): {', '.join(sorted(unknown))}")
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{config_file}: per-file-ignores must be a table of glob = [codes]")
    cache_dir = table.get("cache-dir")
    if cache_dir is not None and not isinstance(cache_dir, str):
        raise ConfigError(f"{config_file}: cache-dir must be a string (a directory)")
    target = table.get("target-keras", default_target_keras())
    if target not in (2, 3):
        raise ConfigError(f"{config_file}: target-keras must be 2 or 3, not {target!r}")
    return Settings(
        select=_rule_codes(table.get("select", []), config_file, "select"),
        ignore=_rule_codes(table.get("ignore", []), config_file, "ignore"),
        exclude=_as_list(table.get("exclude", []), config_file, "exclude"),
        per_file_ignores=tuple((glob, _rule_codes(codes, config_file, f"per-file-ignores {glob!r}"))
                               for glob, codes in per_file.items()),
        target_keras=target,
        root=config_file.parent.resolve(),
        config_file=config_file,
        cache_dir=config_file.parent.resolve() / cache_dir if cache_dir is not None else None,
    )


def with_overrides(settings: Settings, *, select=None, ignore=None, extend_select=None, extend_ignore=None,
                   exclude=None, target_keras=None, cache_dir=None) -> Settings:
    """Command-line flags replace the configured values they name; ``extend_*`` and ``exclude`` add to them."""
    changes: dict = {}
    if select is not None:
        changes["select"] = tuple(select)
    if ignore is not None:
        changes["ignore"] = tuple(ignore)
    if extend_select:
        changes["select"] = (changes.get("select", settings.select) or ("GRD",)) + tuple(extend_select)
    if extend_ignore:
        changes["ignore"] = changes.get("ignore", settings.ignore) + tuple(extend_ignore)
    if exclude is not None:
        changes["cli_exclude"] = settings.cli_exclude + tuple(exclude)
    if target_keras is not None:
        changes["target_keras"] = target_keras
    if cache_dir is not None:
        changes["cache_dir"] = Path(os.path.abspath(cache_dir))
    return replace(settings, **changes)


def default_target_keras() -> int:
    """Major version of the installed ``keras`` distribution, read from metadata (never imported); 3 if none."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        major = version("keras").split(".", 1)[0]
        return 2 if major == "2" else 3
    except (PackageNotFoundError, ValueError):
        return 3
    except Exception:  # broken metadata must not stop linting
        return 3


def split_codes(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


def _rule_codes(value, config_file: Path, key: str) -> tuple[str, ...]:
    try:
        return check_patterns(_as_list(value, config_file, key))
    except CodeError as exc:
        raise ConfigError(f"{config_file}: {key}: {exc}") from None


def _as_list(value, config_file: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(split_codes(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{config_file}: {key} must be a list of strings")


__all__ = ["ConfigError", "DEFAULT_EXCLUDES", "Settings", "find_config", "load_settings", "with_overrides"]
