"""Precision on real code: lint the repositories of manifest.toml and compare with verdicts.tsv.

    python benchmarks/realworld/evaluate.py CHECKOUTS            # every target of the manifest
    python benchmarks/realworld/evaluate.py CHECKOUTS --target-keras 3
    python benchmarks/realworld/evaluate.py CHECKOUTS --check    # exit 1 on any difference or shortfall

CHECKOUTS is a local folder with one checkout per repository (see manifest.toml for how to make it; no
network is used here). Every `.py` file is linted with the default rule selection, once per target Keras
version. The script prints, per repository and target, the findings judged right and wrong and those not
judged yet; the precision per target; the known misses found; and every finding that differs from the
verdicts: reported without a verdict, or judged right and no longer reported. A finding judged wrong that
is no longer reported is the expected outcome and is not listed.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
PRECISION_TARGET = 0.95


@dataclass(frozen=True)
class Verdict:
    kind: str
    targets: frozenset[int]
    path: str
    lines: tuple[int, int]
    code: str
    verdict: str
    reason: str


def load_verdicts(path: Path) -> list[Verdict]:
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    verdicts = []
    for row in csv.DictReader(rows, delimiter="\t"):
        first, _, last = row["line"].partition("-")
        verdicts.append(Verdict(row["kind"], frozenset(int(t) for t in row["targets"].split(",")), row["path"],
                                (int(first), int(last or first)), row["code"], row["verdict"], row["reason"]))
    return verdicts


def lint_repository(root: Path, directory: str, target: int) -> tuple[list[tuple[str, int, str]], list[str], int]:
    """(findings as (path, line, code), internal errors, files) for one checkout at one target."""
    from gradlint.engine import lint_file
    from gradlint.rules import select_rules

    rules = select_rules()
    findings, errors, files = [], [], 0
    for path in sorted((root / directory).rglob("*.py")):
        files += 1
        result = lint_file(str(path), rules, target_keras=target)
        relative = path.relative_to(root).as_posix()
        findings.extend((relative, v.line, v.code) for v in result.violations)
        errors.extend(f"{relative}: {e.message}" for e in result.errors if "internal error" in e.message
                      or "nested too deeply" in e.message)
    return findings, errors, files


def checkout_commit(folder: Path) -> str | None:
    if not (folder / ".git").exists():
        return None
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", type=Path, help="folder holding one checkout per repository")
    parser.add_argument("--target-keras", type=int, choices=(2, 3), help="only this target (default: the manifest's)")
    parser.add_argument("--manifest", type=Path, default=HERE / "manifest.toml", help=argparse.SUPPRESS)
    parser.add_argument("--verdicts", type=Path, default=HERE / "verdicts.tsv", help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a finding differs from the verdicts, precision is below "
                             f"{PRECISION_TARGET}, a known miss is not found, or the analysis fails")
    args = parser.parse_args()
    manifest = tomllib.loads(args.manifest.read_text(encoding="utf-8"))
    verdicts = load_verdicts(args.verdicts)
    targets = [args.target_keras] if args.target_keras else list(manifest["targets"])
    root = args.checkouts.resolve()

    problems: list[str] = []
    for repository in manifest["repository"]:
        folder = root / repository["directory"]
        if not folder.is_dir():
            problems.append(f"{repository['name']}: no checkout at {folder}")
            continue
        files = sum(1 for _ in folder.rglob("*.py"))
        if files < repository["python_files"]:
            problems.append(f"{repository['name']}: {files} of {repository['python_files']} .py files in {folder} "
                            "(an incomplete checkout)")
        commit = checkout_commit(folder)
        if commit is not None and commit != repository["commit"]:
            problems.append(f"{repository['name']}: checkout at {commit[:12]}, "
                            f"manifest says {repository['commit'][:12]}")

    judged = {(v.path, v.lines[0], v.code, t): v for v in verdicts if v.kind == "finding" for t in v.targets}
    differences: list[str] = []
    summary: dict[int, Counter] = defaultdict(Counter)
    reported_at: dict[int, set[tuple[str, int, str]]] = {}
    print(f"{'repository':48} {'target':>6} {'files':>6} {'findings':>8} {'right':>6} {'wrong':>6} {'unjudged':>8}")
    for target in targets:
        reported_at[target] = set()
        for repository in manifest["repository"]:
            if not (root / repository["directory"]).is_dir():
                continue
            findings, errors, files = lint_repository(root, repository["directory"], target)
            problems.extend(f"target {target}: {e}" for e in errors)
            counts = Counter()
            for path, line, code in findings:
                reported_at[target].add((path, line, code))
                verdict = judged.get((path, line, code, target))
                if verdict is None:
                    counts["unjudged"] += 1
                    differences.append(f"target {target}: reported, no verdict: {path}:{line} {code}")
                else:
                    counts[verdict.verdict] += 1
            summary[target].update(counts)
            summary[target]["files"] += files
            print(f"{repository['name']:48} {target:>6} {files:>6} {len(findings):>8} {counts['right']:>6} "
                  f"{counts['wrong']:>6} {counts['unjudged']:>8}")
        for (path, line, code, target_of), verdict in judged.items():
            if target_of == target and verdict.verdict == "right" and (path, line, code) not in reported_at[target]:
                differences.append(f"target {target}: judged right, no longer reported: {path}:{line} {code}")

    print()
    for target in targets:
        counts = summary[target]
        considered = counts["right"] + counts["wrong"] + counts["unjudged"]
        precision = counts["right"] / considered if considered else 1.0
        print(f"target-keras {target}: {counts['files']} files, {considered} findings, {counts['right']} right, "
              f"{counts['wrong']} wrong, {counts['unjudged']} not judged: precision {precision:.3f} "
              f"(unjudged count as wrong)")
        if precision < PRECISION_TARGET:
            problems.append(f"target {target}: precision {precision:.3f} < {PRECISION_TARGET}")

    misses = [v for v in verdicts if v.kind == "miss"]
    found = out_of_scope = 0
    print("\nknown misses:")
    for miss in misses:
        if miss.verdict == "out-of-scope":
            out_of_scope += 1
            print(f"  out of scope  {miss.path}:{miss.lines[0]} {miss.code}: {miss.reason}")
            continue
        hit = all(any(path == miss.path and code == miss.code and miss.lines[0] <= line <= miss.lines[1]
                      for path, line, code in reported_at.get(target, ()))
                  for target in miss.targets if target in reported_at)
        found += hit
        print(f"  {'found' if hit else 'MISSED':12}  {miss.path}:{miss.lines[0]} {miss.code}: {miss.reason}")
        if not hit:
            problems.append(f"known miss not found: {miss.path}:{miss.lines[0]} {miss.code}")
    print(f"{found} of {len(misses) - out_of_scope} known misses found, {out_of_scope} out of scope")

    if differences:
        print(f"\n{len(differences)} finding(s) differ from the verdicts:")
        for line in differences:
            print("  " + line)
    else:
        print("\nevery finding matches its verdict")
    for problem in problems:
        print("problem: " + problem, file=sys.stderr)
    return 1 if args.check and (differences or problems) else 0


if __name__ == "__main__":
    sys.exit(main())
