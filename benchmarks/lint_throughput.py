"""Lint throughput, measured side by side in one run (medians of interleaved repeats).

    python benchmarks/lint_throughput.py            # keras sources + a generated TF-heavy corpus
    python benchmarks/lint_throughput.py --full     # tensorflow + keras sources (slow: flake8 takes minutes)
    python benchmarks/lint_throughput.py --cache    # only the result cache: cold vs warm, beside ruff
    python benchmarks/lint_throughput.py --baseline ../main-checkout --only-model
                                                    # this tree's semantic model against another checkout's

Compares, on the same tree: `gradlint check` (one process and --jobs default), `flake8 --select=GRD`,
plain `flake8` (default checks, gradlint installed) and plain `flake8` with gradlint hidden from its
plugin discovery — the cost every flake8 user pays once the plugin is installed. On the TF-heavy corpus
(every file has gradient code: the prefilter's worst case) it also reports lines per second and where the
time goes (parse, semantic model, rules), measured in this process.

The result cache is measured on the keras sources: `gradlint check` with an empty cache (cold: every file
linted and stored), again with the filled cache (warm: every file read, hashed and found), and with
--no-cache; beside `ruff check` cold (--no-cache) and warm when ruff is installed (on PATH or importable).
``--baseline DIR`` (a checkout of another revision, e.g. ``git worktree add /tmp/main-baseline main``) adds
a side-by-side measurement on the TF-heavy corpus: each repeat runs one probe process per tree, in
alternating order, and the medians of lines/s (read, prefilter, parse, semantic model, rules) and of the
semantic model alone are compared. ``--only-model`` skips the CLI / flake8 tables.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDE_GRADLINT = (
    "import importlib.metadata as md, sys\n"
    "_all = md.distributions\n"
    "md.distributions = lambda **kw: (d for d in _all(**kw) if (d.metadata['Name'] or '').lower() != 'tf-gradlint')\n"
    "from flake8.main.cli import main\n"
    "sys.exit(main())\n"
)

TEMPLATE = '''"""Generated training module {index}."""
import tensorflow as tf
import keras


class Model{index}(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense1 = keras.layers.Dense({width}, activation="relu")
        self.dense2 = keras.layers.Dense(1)

    def call(self, x):
        return self.dense2(self.dense1(x))


model = Model{index}()
optimizer = keras.optimizers.Adam(1e-3)


def train_step_{index}(x, y, clip={clip}):
    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = tf.reduce_mean(tf.square(pred - y))
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [tf.clip_by_norm(g, clip) if g is not None else None for g in grads]
    grads, norm = tf.clip_by_global_norm(grads, 5.0)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss, norm


def evaluate_{index}(dataset):
    total = 0.0
    for step, (x, y) in enumerate(dataset):
        pred = model(x, training=False)
        total += float(tf.reduce_mean(tf.square(pred - y)))
        if step > {steps}:
            break
    return total / max(1, step)
'''


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def count_lines(root: Path) -> tuple[int, int]:
    files = lines = 0
    for path in root.rglob("*.py"):
        files += 1
        with open(path, "rb") as handle:
            lines += handle.read().count(b"\n")
    return files, lines


def generate_corpus(root: Path, files: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        blocks = [TEMPLATE.format(index=f"{index}_{part}", width=8 + part, clip=1.0 + part, steps=10 + part)
                  for part in range(6)]
        (root / f"train_{index}.py").write_text("\n\n".join(blocks))


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def compare(corpus: Path, repeats: int, bin_dir: Path) -> dict[str, float]:
    hide = Path(tempfile.mkdtemp()) / "flake8_without_gradlint.py"
    hide.write_text(HIDE_GRADLINT)
    commands = {
        # --no-cache: these rows measure linting (the cache has its own table below)
        "gradlint check --jobs 1": [str(bin_dir / "gradlint"), "check", "--no-cache", "--jobs", "1", str(corpus)],
        "gradlint check (all cores)": [str(bin_dir / "gradlint"), "check", "--no-cache", str(corpus)],
        "flake8 --select=GRD": [sys.executable, "-m", "flake8", "--select=GRD", str(corpus)],
        "flake8 (gradlint installed)": [sys.executable, "-m", "flake8", str(corpus)],
        "flake8 (gradlint hidden)": [sys.executable, str(hide), str(corpus)],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(repeats):
        order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for name in order:
            samples[name].append(timed(commands[name]))
    shutil.rmtree(hide.parent, ignore_errors=True)
    return {name: statistics.median(values) for name, values in samples.items()}


def ruff_command() -> list[str] | None:
    if shutil.which("ruff"):
        return [shutil.which("ruff")]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    return None


def cache_comparison(corpus: Path, repeats: int, bin_dir: Path) -> None:
    """Cold (empty cache) vs warm (filled cache) `gradlint check`, interleaved, beside ruff on the same tree."""
    work = Path(tempfile.mkdtemp(prefix="gradlint-cache-"))
    gradlint = [str(bin_dir / "gradlint"), "check", "--isolated"]
    warm_dir = work / "warm"
    subprocess.run(gradlint + ["--cache-dir", str(warm_dir), str(corpus)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)  # fill the warm cache once
    commands = {"gradlint check, cold cache": None,
                "gradlint check, warm cache": gradlint + ["--cache-dir", str(warm_dir), str(corpus)],
                "gradlint check --no-cache": gradlint + ["--no-cache", str(corpus)]}
    ruff = ruff_command()
    if ruff is not None:
        ruff_cache = work / "ruff-cache"
        base = ruff + ["check", "--isolated", "--select", "E,F,W,B", "--exit-zero", "--quiet"]
        subprocess.run(base + ["--cache-dir", str(ruff_cache), str(corpus)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        commands["ruff check, cold (--no-cache)"] = base + ["--no-cache", str(corpus)]
        commands["ruff check, warm cache"] = base + ["--cache-dir", str(ruff_cache), str(corpus)]
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(repeats):
        order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for name in order:
            command = commands[name]
            if command is None:  # a fresh, empty cache each time
                command = gradlint + ["--cache-dir", str(work / f"cold-{repeat}"), str(corpus)]
            samples[name].append(timed(command))
    shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    files, lines = count_lines(corpus)
    cold = medians["gradlint check, cold cache"]
    print(f"\nresult cache, {corpus}: {files} files, {lines:,} lines (all cores)")
    print("| command | median s | vs gradlint cold |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {seconds / cold:.2f}x |")
    print(f"warm / cold: {medians['gradlint check, warm cache'] / cold:.3f}x (target <= 0.10x)")
    if ruff is None:
        print("ruff is not installed: no ruff rows")


def print_table(title: str, corpus: Path, medians: dict[str, float]) -> None:
    files, lines = count_lines(corpus)
    baseline = medians["flake8 (gradlint installed)"]
    print(f"\n{title}: {files} files, {lines:,} lines")
    print(f"| command | median s | vs plain flake8 |")
    print(f"|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {seconds / baseline:.2f}x |")
    overhead = medians["flake8 (gradlint installed)"] / medians["flake8 (gradlint hidden)"]
    print(f"plugin cost for flake8 users (installed / hidden): {overhead:.3f}x (target <= 1.2x)")
    print(f"gradlint check vs plain flake8: {medians['gradlint check --jobs 1'] / baseline:.3f}x with one "
          f"process, {medians['gradlint check (all cores)'] / baseline:.3f}x on all cores (target < 1x)")


def measure_phases(corpus: Path) -> tuple[dict[str, float], int, int]:
    """Seconds per phase over every file of ``corpus``, measured in this process: (totals, lines, findings)."""
    import libcst as cst

    from gradlint.prefilter import might_have_gradient_code
    from gradlint.rules import ALL_RULES
    from gradlint.semantic import build_model
    from gradlint.source import decode

    # as the engine calls it (a tree whose build_model takes no source text generates none either)
    takes_source = "source" in inspect.signature(build_model).parameters
    totals = {"read+prefilter": 0.0, "parse (libcst)": 0.0, "semantic model": 0.0, "rules": 0.0,
              "positions (files with findings)": 0.0}
    lines = findings = 0
    for path in sorted(corpus.rglob("*.py")):
        start = time.perf_counter()
        data = path.read_bytes()
        lines += data.count(b"\n")
        passes = might_have_gradient_code(data)
        text = decode(data)
        parsed = time.perf_counter()
        totals["read+prefilter"] += parsed - start
        if not passes:
            continue
        module = cst.parse_module(text)
        built = time.perf_counter()
        totals["parse (libcst)"] += built - parsed
        model = build_model(module, source=text) if takes_source else build_model(module)
        modelled = time.perf_counter()
        totals["semantic model"] += modelled - built
        reports = []
        for rule in ALL_RULES:
            reports.extend(rule().check(model))
        checked = time.perf_counter()
        totals["rules"] += checked - modelled
        if reports:
            findings += len(reports)
            for report in reports:
                model.position(report.node)
            totals["positions (files with findings)"] += time.perf_counter() - checked
    return totals, lines, findings


def phase_breakdown(corpus: Path) -> None:
    """Where time goes on gradient-heavy code, measured in-process for every file."""
    totals, lines, findings = measure_phases(corpus)
    total = sum(totals.values())
    print(f"\nTF-heavy corpus, one process: {lines:,} lines in {total:.2f} s = {lines / total:,.0f} lines/s "
          f"({findings} findings)")
    print("| phase | s | share |")
    print("|---|---:|---:|")
    for name, seconds in totals.items():
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")


def probe(tree: Path, corpus: Path) -> dict[str, float]:
    """One measurement of ``tree``'s gradlint on ``corpus``, in a fresh process importing it from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run([sys.executable, __file__, "--probe", str(corpus)], cwd=str(tree), env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare_trees(baseline: Path, corpus: Path, repeats: int) -> None:
    """This tree against ``baseline`` on the same corpus, interleaved; medians of lines/s."""
    here = Path(__file__).resolve().parents[1]
    samples: dict[str, list[dict[str, float]]] = {"this tree": [], "baseline": []}
    for repeat in range(repeats):
        order = [("this tree", here), ("baseline", baseline)]
        for name, tree in (order if repeat % 2 == 0 else reversed(order)):
            samples[name].append(probe(tree, corpus))
    print(f"\nside by side on the TF-heavy corpus ({repeats} interleaved repeats, medians); baseline: {baseline}")
    print("| tree | lines/s (whole pipeline) | semantic model s | parse s |")
    print("|---|---:|---:|---:|")
    medians = {}
    for name, runs in samples.items():
        medians[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        m = medians[name]
        print(f"| {name} | {m['lines_per_second']:,.0f} | {m['semantic model']:.2f} | {m['parse (libcst)']:.2f} |")
    ratio = medians["this tree"]["lines_per_second"] / medians["baseline"]["lines_per_second"]
    model_ratio = medians["this tree"]["semantic model"] / medians["baseline"]["semantic model"]
    print(f"lines/s this tree / baseline: {ratio:.3f} (target >= 0.90); semantic model time: {model_ratio:.3f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="tensorflow + keras sources instead of keras alone")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heavy-files", type=int, default=120, help="files in the generated TF-heavy corpus")
    parser.add_argument("--cache", action="store_true", help="measure only the result cache")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare the TF-heavy lines/s with")
    parser.add_argument("--only-model", action="store_true", help="skip the CLI and flake8 tables")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.probe is not None:
        totals, lines, findings = measure_phases(args.probe)
        totals["lines_per_second"] = lines / sum(totals.values())
        print(json.dumps(totals))
        return 0
    if args.only_model:
        heavy = Path(tempfile.mkdtemp(prefix="gradlint-heavy-"))
        generate_corpus(heavy, args.heavy_files)
        phase_breakdown(heavy)
        if args.baseline is not None:
            compare_trees(args.baseline.resolve(), heavy, args.repeats)
        shutil.rmtree(heavy, ignore_errors=True)
        return 0
    bin_dir = Path(sys.executable).parent
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, repeats={args.repeats} (interleaved)")
    if args.cache:
        cache_comparison(package_dir("keras"), args.repeats, bin_dir)
        return 0

    if args.full:
        # one tree holding both packages' Python sources (discovery does not follow directory symlinks)
        real = Path(tempfile.mkdtemp(prefix="gradlint-real-"))
        for name in ("tensorflow", "keras"):
            shutil.copytree(package_dir(name), real / name,
                            ignore=shutil.ignore_patterns("*.so", "*.so.*", "*.a", "*.pyc"))
        title = "installed tensorflow + keras sources"
    else:
        real = package_dir("keras")
        title = "installed keras sources"
    print_table(title, real, compare(real, args.repeats, bin_dir))

    heavy = Path(tempfile.mkdtemp(prefix="gradlint-heavy-"))
    generate_corpus(heavy, args.heavy_files)
    print_table("generated TF-heavy corpus (every file has gradient code)", heavy,
                compare(heavy, args.repeats, bin_dir))
    phase_breakdown(heavy)
    if args.baseline is not None:
        compare_trees(args.baseline.resolve(), heavy, args.repeats)
    shutil.rmtree(heavy, ignore_errors=True)
    cache_comparison(package_dir("keras"), args.repeats, bin_dir)
    if args.full:
        shutil.rmtree(real, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
