"""Check or fix many files, in parallel worker processes when it pays off; results in a stable order."""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from gradlint import source as sources
from gradlint.cache import ResultCache
from gradlint.config import Settings
from gradlint.discovery import Excluded, discover
from gradlint.documents import lint_data
from gradlint.engine import LintResult
from gradlint.fixer import FixResult, fix_data, fix_file
from gradlint.notebook import is_notebook
from gradlint.rules import RULES_BY_CODE, select_rules
from gradlint.violation import FileError, Violation

# Below this many files per worker, starting processes costs more than it saves.
_MIN_FILES_PER_WORKER = 8
_CHUNK = 16
T = TypeVar("T")


@dataclass
class Task:
    """One file with what is needed to check it (picklable: rule codes, not classes).

    ``data`` holds the contents when they do not come from the file (stdin); ``cache_dir`` is the result
    cache's directory for this file's settings (None: no cache).
    """

    path: str
    codes: tuple[str, ...]
    target_keras: int
    data: Optional[bytes] = None
    cache_dir: Optional[str] = None


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)      # paths that do not exist
    excluded: list[Excluded] = field(default_factory=list)     # paths named explicitly but excluded
    stdin: Optional[bytes] = None                               # what standard input held, when it was read


@dataclass
class RunResult:
    violations: list[Violation] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files_checked: int = 0


def plan(paths: Sequence[str], settings_for: Callable[[str], Settings], *, cache: bool = False) -> Plan:
    """The files to check, each with its selected rules; missing paths become errors."""
    result = Plan()
    for item in discover(list(paths), settings_for):
        if isinstance(item, FileError):
            result.errors.append(item)
        elif isinstance(item, Excluded):
            result.excluded.append(item)
        else:
            path, settings = item
            result.tasks.append(task_for(path, settings, cache=cache))
    return result


def task_for(path: str, settings: Settings, *, data: Optional[bytes] = None, cache: bool = False) -> Task:
    """The task for one file (``path`` may be a name given to stdin) under its settings."""
    codes = _codes(settings.select, settings.ignore + settings.ignored_for(path))
    cache_dir = str(settings.cache_directory()) if cache else None
    return Task(path, codes, settings.target_keras, data, cache_dir)


_selected: dict[tuple, tuple[str, ...]] = {}


def _codes(select: tuple[str, ...], ignore: tuple[str, ...]) -> tuple[str, ...]:
    key = (select, ignore)
    if key not in _selected:
        _selected[key] = tuple(rule.CODE for rule in select_rules(select or None, ignore))
    return _selected[key]


def check_task(task: Task) -> LintResult:
    """Lint one task: from the cache when its content and settings were checked before."""
    if task.data is not None:
        data = task.data
    else:
        try:
            data = sources.read(task.path)
        except sources.SourceError as exc:
            return LintResult(task.path, errors=[FileError(task.path, str(exc))])
    notebook = is_notebook(task.path)
    cache = key = None
    if task.cache_dir is not None:
        cache = ResultCache(task.cache_dir)
        key = cache.key(data, task.codes, task.target_keras, notebook)
        kept = cache.load(key, task.path)
        if kept is not None:
            return LintResult(task.path, kept)
    result = lint_data(data, task.path, [RULES_BY_CODE[code] for code in task.codes],
                       target_keras=task.target_keras)
    if cache is not None and not result.errors:
        cache.store(key, result.violations)
    return result


def fix_task(task: Task, *, unsafe: bool, write: bool) -> FixResult:
    rules = [RULES_BY_CODE[code] for code in task.codes]
    if task.data is not None:
        return fix_data(task.data, task.path, rules, unsafe=unsafe, target_keras=task.target_keras)
    return fix_file(task.path, rules, unsafe=unsafe, target_keras=task.target_keras, write=write)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_tasks(work: Callable[[Task], T], tasks: Sequence[Task], jobs: Optional[int] = None) -> Iterator[T]:
    """``work(task)`` for every task, in order; ``jobs`` worker processes (default: CPU count, 1 = here)."""
    jobs = default_jobs() if jobs is None or jobs <= 0 else jobs
    jobs = min(jobs, max(1, len(tasks) // _MIN_FILES_PER_WORKER))
    if jobs <= 1:
        yield from map(work, tasks)
        return
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        yield from pool.map(work, tasks, chunksize=_CHUNK)  # map keeps the input order


def run(tasks: Sequence[Task], jobs: Optional[int] = None,
        on_result: Optional[Callable[[LintResult], None]] = None) -> RunResult:
    """Check every task; ``jobs`` worker processes (default: CPU count, 1 = in this process)."""
    prepared = set()
    for task in tasks:
        if task.cache_dir is not None and task.cache_dir not in prepared:
            ResultCache(task.cache_dir).prepare()
            prepared.add(task.cache_dir)
    outcome = RunResult(files_checked=len(tasks))
    for result in map_tasks(check_task, tasks, jobs):
        if on_result is not None:
            on_result(result)
        outcome.violations.extend(result.violations)
        outcome.errors.extend(result.errors)
    outcome.violations.sort()
    return outcome


def fix(tasks: Sequence[Task], jobs: Optional[int] = None, *, unsafe: bool = False,
        write: bool = True) -> Iterator[FixResult]:
    """Fix every task (in order, in worker processes when it pays off)."""
    return map_tasks(partial(fix_task, unsafe=unsafe, write=write), tasks, jobs)


def _start_method() -> str:
    """fork is fastest (workers inherit the imported modules) but deadlock-prone once the process runs
    threads (e.g. TensorFlow's, when gradlint is used as a library); then a fresh forkserver is used."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


__all__ = ["Plan", "RunResult", "Task", "check_task", "fix", "map_tasks", "plan", "run", "task_for"]
