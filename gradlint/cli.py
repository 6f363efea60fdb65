"""The `gradlint` command: check, fix, rules, explain.

Exit status of `gradlint check`: 0 no findings, 1 findings, 2 an error (unreadable file, syntax error,
bad configuration or arguments); other files are still checked after an error.

Exit status of `gradlint fix`: 0 no finding remains, 1 findings remain (or, with
``--exit-non-zero-on-fix``, something was fixed), 2 an error (a file that cannot be read, parsed or
written, or whose fix was refused; it is left untouched). With ``--diff`` nothing is written and the
status is 1 when a file would change, else 0 (2 on errors).
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from gradlint import __version__, runner
from gradlint.config import ConfigError, Settings, find_config, load_settings, split_codes, with_overrides
from gradlint.docs import render
from gradlint.reporting import FORMATTERS
from gradlint.rules import ALL_RULES, RULES_BY_CODE
from gradlint.runtime_checks import RUNTIME_CHECKS
from gradlint.violation import FileError, Violation

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradlint", description="Find gradient bugs in TensorFlow code.")
    parser.add_argument("--version", action="version", version=f"gradlint {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="lint files and directories")
    check.add_argument("paths", nargs="*", default=None, metavar="PATH", help="files or directories (default: .)")
    check.add_argument("--select", type=split_codes, help="comma-separated codes or prefixes to enable")
    check.add_argument("--ignore", type=split_codes, help="comma-separated codes or prefixes to disable")
    check.add_argument("--exclude", type=split_codes, help="extra comma-separated glob patterns to skip")
    check.add_argument("--format", choices=sorted(FORMATTERS), default="text", help="output format")
    check.add_argument("--config", type=Path, help="read settings from this pyproject.toml only")
    check.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    check.add_argument("--target-keras", type=int, choices=(2, 3), help="Keras major version the code targets")
    check.add_argument("--jobs", "-j", type=int, default=0, metavar="N",
                       help="worker processes (default: one per CPU; 1 checks in this process)")

    fix = commands.add_parser("fix", help="apply autofixes to files and directories")
    fix.add_argument("paths", nargs="*", default=None, metavar="PATH", help="files or directories (default: .)")
    fix.add_argument("--select", type=split_codes, help="comma-separated codes or prefixes to enable")
    fix.add_argument("--ignore", type=split_codes, help="comma-separated codes or prefixes to disable")
    fix.add_argument("--exclude", type=split_codes, help="extra comma-separated glob patterns to skip")
    fix.add_argument("--config", type=Path, help="read settings from this pyproject.toml only")
    fix.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    fix.add_argument("--target-keras", type=int, choices=(2, 3), help="Keras major version the code targets")
    fix.add_argument("--unsafe-fixes", action="store_true",
                     help="also apply fixes that change behaviour on purpose (see `gradlint rules`)")
    fix.add_argument("--diff", action="store_true",
                     help="print a unified diff of the fixes and write nothing (exit 1 if a file would change)")
    fix.add_argument("--exit-non-zero-on-fix", action="store_true",
                     help="exit 1 when something was fixed, even if no finding remains")

    rules = commands.add_parser("rules", help="list every rule code")
    rules.add_argument("--format", choices=("text", "json"), default="text")

    explain = commands.add_parser("explain", help="print a rule's documentation")
    explain.add_argument("code", metavar="CODE")

    report = commands.add_parser("report", help="summarise an auditor run recorded with watch(jsonl=...)")
    report.add_argument("run", metavar="RUN.jsonl")
    report.add_argument("--plot", metavar="OUT.png", help="also draw norms, clip ratio and findings (matplotlib)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # `gradlint check | head`: stop quietly
        sys.stdout = open(os.devnull, "w")
        return EXIT_CLEAN
    except KeyboardInterrupt:
        print("gradlint: interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: Optional[list[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        return run_check(args)
    if args.command == "fix":
        return run_fix(args)
    if args.command == "rules":
        return run_rules(args)
    if args.command == "explain":
        return run_explain(args)
    if args.command == "report":
        from auditor.runreport import main as report_main  # lazily: JSONL and matplotlib only

        return report_main(args.run, args.plot)
    parser.print_help()
    return EXIT_CLEAN


def _plan(args: argparse.Namespace, paths: list[str]):
    """The files to check with their rules, or None after reporting a configuration error."""
    try:
        tasks, missing = runner.plan(paths, _settings_resolver(args))
    except ConfigError as exc:
        print(f"gradlint: error: {exc}", file=sys.stderr)
        return None
    for error in missing:
        print(error, file=sys.stderr)
    return tasks, missing


def run_check(args: argparse.Namespace) -> int:
    paths = args.paths or ["."]
    planned = _plan(args, paths)
    if planned is None:
        return EXIT_ERROR
    tasks, missing = planned

    def report_errors(result) -> None:
        for error in result.errors:
            print(error, file=sys.stderr)

    outcome = runner.run(tasks, jobs=args.jobs, on_result=report_errors)
    violations, errors, files_checked = outcome.violations, missing + outcome.errors, outcome.files_checked
    if files_checked == 0 and not errors:
        print(f"gradlint: no Python files found in {', '.join(paths)}", file=sys.stderr)
    FORMATTERS[args.format](violations, errors, sys.stdout, files_checked)
    if errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if violations else EXIT_CLEAN


def run_fix(args: argparse.Namespace) -> int:
    from gradlint.fixer import fix_file

    paths = args.paths or ["."]
    planned = _plan(args, paths)
    if planned is None:
        return EXIT_ERROR
    tasks, missing = planned
    remaining: list[Violation] = []
    errors: list[FileError] = list(missing)
    files_checked = files_fixed = findings_fixed = 0
    unsafe_hidden: Counter = Counter()
    report = sys.stderr if args.diff else sys.stdout
    try:
        for task in tasks:
            path = task.path
            result = fix_file(path, [RULES_BY_CODE[code] for code in task.codes], unsafe=args.unsafe_fixes,
                              target_keras=task.target_keras, write=not args.diff)
            files_checked += 1
            remaining.extend(result.remaining)
            unsafe_hidden.update(result.unsafe_available)
            for error in result.errors:
                errors.append(error)
                print(error, file=sys.stderr)
            if result.changed and not result.errors:
                files_fixed += 1
                findings_fixed += result.fixed_count
                if args.diff:
                    sys.stdout.write(_unified_diff(path, result.original, result.fixed))
                verb = "would fix" if args.diff else "fixed"
                print(f"{path}: {verb} {_count(result.fixed_count, 'finding')} ({_by_code(result.fixed_findings)})",
                      file=report)
    except ConfigError as exc:
        print(f"gradlint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if files_checked == 0 and not errors:
        print(f"gradlint: no Python files found in {', '.join(paths)}", file=sys.stderr)
    if not args.diff:
        FORMATTERS["text"](sorted(remaining), errors, sys.stdout, files_checked)
    if findings_fixed:
        verb = "Would fix" if args.diff else "Fixed"
        print(f"{verb} {_count(findings_fixed, 'finding')} in {_count(files_fixed, 'file')}.", file=report)
    if unsafe_hidden:
        total = sum(unsafe_hidden.values())
        print(f"{_count(total, 'more fix', 'more fixes')} available with --unsafe-fixes "
              f"({_by_code(unsafe_hidden)}).", file=report)
    if errors:
        return EXIT_ERROR
    if args.diff:
        return EXIT_FINDINGS if files_fixed else EXIT_CLEAN
    if remaining or (args.exit_non_zero_on_fix and findings_fixed):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _count(number: int, singular: str, plural: Optional[str] = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _by_code(counts: Counter) -> str:
    return ", ".join(code if n == 1 else f"{code} x{n}" for code, n in sorted(counts.items()))


def _unified_diff(path: str, before: str, after: str) -> str:
    lines = []
    for line in difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                     fromfile=path, tofile=path):
        lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(lines)


def _settings_resolver(args: argparse.Namespace):
    overrides = dict(select=args.select, ignore=args.ignore, exclude=args.exclude, target_keras=args.target_keras)
    if args.config is not None:
        fixed = with_overrides(load_settings(args.config), **overrides)
        return lambda path: fixed
    if args.isolated:
        isolated = with_overrides(load_settings(None), **overrides)
        return lambda path: isolated
    cache: dict[Optional[Path], Settings] = {}

    def settings_for(path: str) -> Settings:
        config_file = find_config(Path(os.path.abspath(path)))
        if config_file not in cache:
            cache[config_file] = with_overrides(load_settings(config_file), **overrides)
        return cache[config_file]

    return settings_for


def run_rules(args: argparse.Namespace) -> int:
    if args.format == "json":
        import json

        rows = [{"code": r.CODE, "name": r.NAME, "kind": "static", "opt_in": r.OPT_IN, "fix": r.FIX,
                 "summary": r.SUMMARY} for r in ALL_RULES]
        rows += [{"code": c.code, "name": c.name, "kind": "runtime", "opt_in": False, "fix": None,
                  "summary": c.what} for c in RUNTIME_CHECKS]
        print(json.dumps(rows, indent=2))
        return EXIT_CLEAN
    for rule in ALL_RULES:
        tags = ["static"] + (["opt-in"] if rule.OPT_IN else []) + ([f"fix: {rule.FIX}"] if rule.FIX else [])
        print(f"{rule.CODE}  {rule.NAME:<34} [{', '.join(tags)}]  {rule.SUMMARY}")
    for check in RUNTIME_CHECKS:
        print(f"{check.code}  {check.name:<34} [runtime]  {check.what}")
    return EXIT_CLEAN


def run_explain(args: argparse.Namespace) -> int:
    text = render(args.code)
    if text is None:
        print(f"gradlint: error: unknown rule code {args.code!r} (see `gradlint rules`)", file=sys.stderr)
        return EXIT_ERROR
    print(text, end="")
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
