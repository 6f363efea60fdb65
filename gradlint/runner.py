"""Check many files, in parallel worker processes when it pays off; results in a stable order."""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from gradlint.config import Settings
from gradlint.discovery import discover
from gradlint.engine import LintResult, lint_file
from gradlint.rules import RULES_BY_CODE, select_rules
from gradlint.violation import FileError, Violation

# Below this many files per worker, starting processes costs more than it saves.
_MIN_FILES_PER_WORKER = 8
_CHUNK = 16


@dataclass
class Task:
    """One file with what is needed to check it (picklable: rule codes, not classes)."""

    path: str
    codes: tuple[str, ...]
    target_keras: int


@dataclass
class RunResult:
    violations: list[Violation] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_checked: int = 0


def plan(paths: Sequence[str], settings_for: Callable[[str], Settings]) -> tuple[list[Task], list[FileError]]:
    """The files to check, each with its selected rules; missing paths become errors."""
    tasks: list[Task] = []
    errors: list[FileError] = []
    cache: dict[tuple, tuple[str, ...]] = {}
    for item in discover(list(paths), settings_for):
        if isinstance(item, FileError):
            errors.append(item)
            continue
        path, settings = item
        ignore = settings.ignore + settings.ignored_for(path)
        key = (settings.select, ignore)
        if key not in cache:
            cache[key] = tuple(rule.CODE for rule in select_rules(settings.select or None, ignore))
        tasks.append(Task(path, cache[key], settings.target_keras))
    return tasks, errors


def check_task(task: Task) -> LintResult:
    return lint_file(task.path, [RULES_BY_CODE[code] for code in task.codes], target_keras=task.target_keras)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run(tasks: Sequence[Task], jobs: Optional[int] = None,
        on_result: Optional[Callable[[LintResult], None]] = None) -> RunResult:
    """Check every task; ``jobs`` worker processes (default: CPU count, 1 = in this process)."""
    jobs = default_jobs() if jobs is None or jobs <= 0 else jobs
    jobs = min(jobs, max(1, len(tasks) // _MIN_FILES_PER_WORKER))
    if jobs <= 1:
        results = map(check_task, tasks)
        return _collect(results, len(tasks), on_result)
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        results = pool.map(check_task, tasks, chunksize=_CHUNK)  # map keeps the input order
        return _collect(results, len(tasks), on_result)


def _start_method() -> str:
    """fork is fastest (workers inherit the imported modules) but deadlock-prone once the process runs
    threads (e.g. TensorFlow's, when gradlint is used as a library); then a fresh forkserver is used."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _collect(results, count: int, on_result) -> RunResult:
    outcome = RunResult(files_checked=count)
    for result in results:
        if on_result is not None:
            on_result(result)
        outcome.violations.extend(result.violations)
        outcome.errors.extend(result.errors)
    outcome.violations.sort(key=lambda v: (v.path, v.line, v.column, v.code))
    return outcome
