"""Command outputs shown in README.md and docs/ must be what the tools print today.

    python tests/linter/doc_outputs.py            # compare; list the blocks that differ (exit 1 if any)
    python tests/linter/doc_outputs.py --update   # rewrite the differing blocks with today's output
    make doc-outputs                              # the same as --update

Every fenced block whose info string is ``console`` is checked. In it, a line starting with ``$ `` is a
command, run with bash from a scratch directory holding a copy of ``fixtures/`` (so ``gradlint fix`` and
the auditor demo change nothing in the checkout), with this Python's ``bin`` first on ``PATH``; the lines up
to the next command or the closing fence are what it prints (stdout and stderr together, as on a terminal).
In a shown output, a line ending in `` ...`` stands for any line that starts with the text before it, and a
line ``...`` for any number of lines. ``--update`` writes the full output of a block that differs, with
lines longer than 100 characters shortened to ``<start> ...``; shorten it further by hand if you like.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)```console\s*$")
ELLIPSIS = "..."
MAX_WIDTH = 100


@dataclass
class Block:
    """One ``console`` block: where it is, its commands and the output each shows."""

    path: Path
    start: int   # index of the first line after the opening fence
    end: int     # index of the closing fence
    indent: str
    steps: list[tuple[str, list[str]]]  # (command, shown output lines)


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent = match.group("indent")
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        steps: list[tuple[str, list[str]]] = []
        for line in lines[index + 1:end]:
            line = line[len(indent):] if line.startswith(indent) else line
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        found.append(Block(path, index + 1, end, indent, steps))
        index = end + 1
    return found


def matches(shown: list[str], actual: list[str]) -> bool:
    """Does the shown output (with its `` ...`` and ``...`` elisions) describe the actual lines?"""
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[i, j]
        if i == len(shown):
            result = j == len(actual)
        elif shown[i] == ELLIPSIS:
            result = match(i + 1, j) or (j < len(actual) and match(i, j + 1))
        elif j == len(actual):
            result = False
        elif shown[i].endswith(" " + ELLIPSIS):
            result = actual[j].startswith(shown[i][: -len(ELLIPSIS)].rstrip()) and match(i + 1, j + 1)
        else:
            result = shown[i] == actual[j] and match(i + 1, j + 1)
        memo[i, j] = result
        return result

    return match(0, 0)


def scratch_directory() -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="gradlint-docs-"))
    shutil.copytree(REPO / "fixtures", scratch / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    return scratch


def run(command: str, cwd: Path) -> list[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1", COLUMNS="100", NO_COLOR="1")
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=900)
    return result.stdout.splitlines()


@dataclass
class Difference:
    block: Block
    command: str
    shown: list[str]
    actual: list[str]

    def __str__(self) -> str:
        where = f"{self.block.path.relative_to(REPO)}:{self.block.start}"
        shown = "\n".join("    " + line for line in self.shown)
        actual = "\n".join("    " + line for line in self.actual)
        return f"{where}: `$ {self.command}` shows\n{shown}\n  but prints\n{actual}"


def differences(paths: list[Path] | None = None) -> list[Difference]:
    """Run every command of every console block (each block in a fresh scratch directory)."""
    found = []
    for path in paths or documents():
        for block in blocks(path):
            scratch = scratch_directory()
            try:
                for command, shown in block.steps:
                    actual = run(command, scratch)
                    if not matches(shown, actual):
                        found.append(Difference(block, command, shown, actual))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return found


def shorten(line: str) -> str:
    if len(line) <= MAX_WIDTH:
        return line
    cut = line.rfind(" ", 0, MAX_WIDTH - len(ELLIPSIS) - 1)
    return line[: cut if cut > 0 else MAX_WIDTH - len(ELLIPSIS) - 1] + " " + ELLIPSIS


def update(found: list[Difference]) -> None:
    """Rewrite each differing block with the actual outputs of all its commands."""
    by_file: dict[Path, list[Block]] = {}
    for difference in found:
        if difference.block not in by_file.setdefault(difference.block.path, []):
            by_file[difference.block.path].append(difference.block)
    for path, changed in by_file.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for block in sorted(changed, key=lambda b: -b.start):
            scratch = scratch_directory()
            try:
                body = []
                for command, _ in block.steps:
                    body.append(block.indent + "$ " + command)
                    body.extend(block.indent + shorten(line) if line else "" for line in run(command, scratch))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            lines[block.start:block.end] = body
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"updated {path.relative_to(REPO)} ({len(changed)} block(s)): review the diff")


def main(argv: list[str]) -> int:
    found = differences()
    for difference in found:
        print(difference, end="\n\n")
    if found and "--update" in argv:
        update(found)
        return 0
    if found:
        print(f"{len(found)} command output(s) differ; run `python tests/linter/doc_outputs.py --update`")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
