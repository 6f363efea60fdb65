"""Settings: defaults, ``[tool.gradlint]`` in pyproject.toml, and command-line overrides."""
from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_EXCLUDES = (".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "build", "dist", "__pycache__",
                    ".eggs", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache")
_KNOWN_KEYS = {"select", "ignore", "exclude", "per-file-ignores", "target-keras"}


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Settings:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    target_keras: int = 3
    root: Optional[Path] = None  # the directory of the pyproject.toml the settings came from
    config_file: Optional[Path] = None

    def relative(self, path: str) -> str:
        absolute = Path(os.path.abspath(path))
        if self.root is not None:
            try:
                return absolute.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return Path(path).as_posix()

    def is_excluded(self, path: str) -> bool:
        relative = self.relative(path)
        name = os.path.basename(path.rstrip("/\\"))
        return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p)
                   or fnmatch.fnmatch(relative, p.rstrip("/") + "/*") for p in self.exclude)

    def ignored_for(self, path: str) -> tuple[str, ...]:
        relative = self.relative(path)
        name = os.path.basename(path)
        codes: list[str] = []
        for pattern, pattern_codes in self.per_file_ignores:
            if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern):
                codes.extend(pattern_codes)
        return tuple(codes)


def find_config(start: Path) -> Optional[Path]:
    """The nearest pyproject.toml with a ``[tool.gradlint]`` table, walking up from ``start``."""
    directory = start if start.is_dir() else start.parent
    directory = Path(os.path.abspath(directory))
    for candidate_dir in (directory, *directory.parents):
        candidate = candidate_dir / "pyproject.toml"
        if candidate.is_file():
            try:
                with open(candidate, "rb") as handle:
                    data = tomllib.load(handle)
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if "gradlint" in data.get("tool", {}):
                return candidate
    return None


def load_settings(config_file: Optional[Path]) -> Settings:
    """Settings from a pyproject.toml (defaults when ``config_file`` is None)."""
    if config_file is None:
        return Settings(target_keras=default_target_keras())
    try:
        with open(config_file, "rb") as handle:
            table = tomllib.load(handle).get("tool", {}).get("gradlint", {})
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    unknown = set(table) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{config_file}: unknown [tool.gradlint] key(s): {', '.join(sorted(unknown))}")
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{config_file}: per-file-ignores must be a table of glob = [codes]")
    target = table.get("target-keras", default_target_keras())
    if target not in (2, 3):
        raise ConfigError(f"{config_file}: target-keras must be 2 or 3, not {target!r}")
    return Settings(
        select=_codes(table, "select", config_file),
        ignore=_codes(table, "ignore", config_file),
        exclude=_codes(table, "exclude", config_file),
        per_file_ignores=tuple((glob, _as_list(codes, config_file, "per-file-ignores")) for glob, codes in per_file.items()),
        target_keras=target,
        root=config_file.parent.resolve(),
        config_file=config_file,
    )


def with_overrides(settings: Settings, *, select=None, ignore=None, exclude=None, target_keras=None) -> Settings:
    """Command-line flags replace the configured values they name."""
    changes: dict = {}
    if select is not None:
        changes["select"] = tuple(select)
    if ignore is not None:
        changes["ignore"] = tuple(ignore)
    if exclude is not None:
        changes["exclude"] = settings.exclude + tuple(exclude)
    if target_keras is not None:
        changes["target_keras"] = target_keras
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


def _codes(table: dict, key: str, config_file: Path) -> tuple[str, ...]:
    return _as_list(table.get(key, []), config_file, key)


def _as_list(value, config_file: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(split_codes(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{config_file}: {key} must be a list of strings")


__all__ = ["ConfigError", "DEFAULT_EXCLUDES", "Settings", "find_config", "load_settings", "with_overrides"]
