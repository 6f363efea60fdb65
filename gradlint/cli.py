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
from gradlint.codes import CodeError, check_patterns
from gradlint.config import ConfigError, Settings, find_config, load_settings, split_codes, with_overrides
from gradlint.discovery import Excluded
from gradlint.docs import render
from gradlint.reporting import FORMATTERS
from gradlint.rules import ALL_RULES, RULES_BY_CODE
from gradlint.runtime_checks import RUNTIME_CHECKS
from gradlint.violation import FileError, Violation

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
STDIN = "-"
STDIN_NAME = "<stdin>"  # how standard input is named in messages without --stdin-filename
NO_CACHE_VARIABLE = "GRADLINT_NO_CACHE"  # set (not to 0): as --no-cache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradlint", description="Find gradient bugs in TensorFlow code.")
    parser.add_argument("--version", action="version", version=f"gradlint {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="lint files, directories and notebooks")
    _add_common_options(check)
    check.add_argument("--no-cache", action="store_true",
                       help=f"neither read nor write the result cache (also: {NO_CACHE_VARIABLE}=1)")
    check.add_argument("--cache-dir", metavar="DIR",
                       help="where to keep the result cache (default: .gradlint_cache at the project root)")

    fix = commands.add_parser("fix", help="apply autofixes to files, directories and notebooks")
    _add_common_options(fix)
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


def _add_common_options(command: argparse.ArgumentParser) -> None:
    """The options `check` and `fix` share."""
    command.add_argument("paths", nargs="*", default=None, metavar="PATH",
                         help="files, directories or notebooks (default: .); - reads standard input")
    command.add_argument("--select", type=rule_codes, help="comma-separated codes or prefixes to enable")
    command.add_argument("--ignore", type=rule_codes, help="comma-separated codes or prefixes to disable")
    command.add_argument("--extend-select", type=rule_codes, metavar="CODES",
                         help="codes or prefixes to enable on top of the configured selection")
    command.add_argument("--extend-ignore", type=rule_codes, metavar="CODES",
                         help="codes or prefixes to disable on top of the configured ones")
    command.add_argument("--exclude", type=split_codes, help="extra comma-separated glob patterns to skip")
    command.add_argument("--format", choices=sorted(FORMATTERS), default="text", help="output format of findings")
    command.add_argument("--config", type=Path, help="read settings from this pyproject.toml only")
    command.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    command.add_argument("--target-keras", type=int, choices=(2, 3), help="Keras major version the code targets")
    command.add_argument("--jobs", "-j", type=positive_int, metavar="N",
                         help="worker processes (default: one per CPU; 1 works in this process)")
    command.add_argument("--stdin-filename", metavar="NAME",
                         help="the name of the file read from standard input (for configuration and messages)")


def rule_codes(value: str) -> tuple[str, ...]:
    """An argparse type: comma-separated rule codes or prefixes, each naming a static rule."""
    try:
        return check_patterns(split_codes(value))
    except CodeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, 1 or more, not {value!r}")
    return number


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
    if args.command in ("check", "fix"):
        problem = _stdin_argument_error(args)
        if problem is not None:
            print(f"gradlint {args.command}: error: {problem}", file=sys.stderr)
            return EXIT_ERROR
        return run_check(args) if args.command == "check" else run_fix(args)
    if args.command == "rules":
        return run_rules(args)
    if args.command == "explain":
        return run_explain(args)
    if args.command == "report":
        from auditor.report_command import main as report_main  # lazily: JSONL and matplotlib only

        return report_main(args.run, args.plot)
    parser.print_help()
    return EXIT_CLEAN


def _stdin_argument_error(args: argparse.Namespace) -> Optional[str]:
    paths = args.paths or []
    if STDIN in paths and len(paths) > 1:
        return f"{STDIN} (standard input) cannot be combined with other paths"
    if args.stdin_filename is not None and paths not in ([], [STDIN]):
        return "--stdin-filename names standard input: give no other path (or -)"
    return None


def _reads_stdin(args: argparse.Namespace) -> bool:
    return args.paths == [STDIN] or (args.stdin_filename is not None and not args.paths)


def _plan(args: argparse.Namespace, *, cache: bool = False) -> Optional[runner.Plan]:
    """The files to check with their rules, or None after reporting a configuration error."""
    settings_for = _settings_resolver(args)
    try:
        if _reads_stdin(args):
            return _stdin_plan(args, settings_for, cache)
        planned = runner.plan(args.paths or ["."], settings_for, cache=cache)
    except ConfigError as exc:
        print(f"gradlint: error: {exc}", file=sys.stderr)
        return None
    for error in planned.errors:
        print(error, file=sys.stderr)
    for excluded in planned.excluded:
        print(excluded, file=sys.stderr)
    return planned


def _stdin_plan(args: argparse.Namespace, settings_for, cache: bool) -> runner.Plan:
    """One task for standard input, named by --stdin-filename (configuration is found from that name)."""
    name = args.stdin_filename or STDIN_NAME
    settings = settings_for(args.stdin_filename or ".")
    data = sys.stdin.buffer.read()
    pattern = settings.exclusion(args.stdin_filename) if args.stdin_filename else None
    if pattern is not None:
        excluded = Excluded(name, pattern, settings.exclusion_origin(pattern))
        print(excluded, file=sys.stderr)
        return runner.Plan(excluded=[excluded], stdin=data)
    return runner.Plan(tasks=[runner.task_for(name, settings, data=data, cache=cache)], stdin=data)


def _nothing_found(planned: runner.Plan, paths: list[str]) -> None:
    if not planned.errors and not planned.excluded:
        print(f"gradlint: no Python files or notebooks found in {', '.join(paths)}", file=sys.stderr)


def _cache_wanted(args: argparse.Namespace) -> bool:
    return not args.no_cache and os.environ.get(NO_CACHE_VARIABLE, "") in ("", "0")


def run_check(args: argparse.Namespace) -> int:
    planned = _plan(args, cache=_cache_wanted(args))
    if planned is None:
        return EXIT_ERROR

    def report_errors(result) -> None:
        for error in result.errors:
            print(error, file=sys.stderr)

    outcome = runner.run(planned.tasks, jobs=args.jobs, on_result=report_errors)
    violations, errors, files_checked = outcome.violations, planned.errors + outcome.errors, outcome.files_checked
    if files_checked == 0:
        _nothing_found(planned, args.paths or ["."])
    FORMATTERS[args.format](violations, errors, sys.stdout, files_checked)
    if errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if violations else EXIT_CLEAN


def run_fix(args: argparse.Namespace) -> int:
    planned = _plan(args)
    if planned is None:
        return EXIT_ERROR
    stdin = planned.stdin is not None
    remaining: list[Violation] = []
    errors: list[FileError] = list(planned.errors)
    files_checked = files_fixed = findings_fixed = 0
    unsafe_hidden: Counter = Counter()
    # stdout carries the fixed source (stdin), the diff or the findings in a machine format: all else to stderr
    report = sys.stderr if args.diff or stdin or args.format != "text" else sys.stdout
    if stdin and not planned.tasks and not args.diff:  # excluded: pass the input through unchanged
        sys.stdout.buffer.write(planned.stdin)
    for result in runner.fix(planned.tasks, args.jobs, unsafe=args.unsafe_fixes, write=not args.diff and not stdin):
        path = result.path
        files_checked += 1
        remaining.extend(result.remaining)
        unsafe_hidden.update(result.unsafe_available)
        for error in result.errors:
            errors.append(error)
            print(error, file=sys.stderr)
        if stdin and not args.diff:
            sys.stdout.buffer.write(result.output if result.output is not None else planned.stdin)
            sys.stdout.flush()
        if result.changed and not result.errors:
            files_fixed += 1
            findings_fixed += result.fixed_count
            if args.diff:
                for label, before, after in result.sections:
                    sys.stdout.write(_unified_diff(label, before, after))
            verb = "would fix" if args.diff else "fixed"
            print(f"{path}: {verb} {_count(result.fixed_count, 'finding')} ({_by_code(result.fixed_findings)})",
                  file=report)
    if files_checked == 0 and not stdin:
        _nothing_found(planned, args.paths or ["."])
    if not args.diff:
        FORMATTERS[args.format](sorted(remaining), errors, sys.stderr if stdin else sys.stdout, files_checked)
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
    overrides = dict(select=args.select, ignore=args.ignore, extend_select=args.extend_select,
                     extend_ignore=args.extend_ignore, exclude=args.exclude, target_keras=args.target_keras,
                     cache_dir=getattr(args, "cache_dir", None))
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
    rows = []
    for rule in ALL_RULES:
        tags = ["static"] + (["opt-in"] if rule.OPT_IN else []) + ([f"fix: {rule.FIX}"] if rule.FIX else [])
        rows.append((rule.CODE, rule.NAME, f"[{', '.join(tags)}]", rule.SUMMARY))
    rows += [(check.code, check.name, "[runtime]", check.what) for check in RUNTIME_CHECKS]
    name_width = max(len(row[1]) for row in rows)
    tag_width = max(len(row[2]) for row in rows)
    for code, name, tags, summary in rows:
        print(f"{code}  {name:<{name_width}}  {tags:<{tag_width}}  {summary}")
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
