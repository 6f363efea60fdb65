"""The import graph of ``auditor/`` and ``gradlint/``, read with ``ast`` (no import is run): no
circle anywhere, and inside ``auditor/`` every import points down the pipeline's layers."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# auditor/ from the bottom up: a module may import only modules of lower layers. The data flow
# is one way: engines -> registry/probes -> recorder -> evaluation -> sinks; `watch` is the shell.
LAYERS = [
    ["auditor.records", "auditor.registry", "auditor.graph_stats"],
    ["auditor.findings"],
    ["auditor.runfile", "auditor.summary", "auditor.settings", "auditor.evaluation", "auditor.patching",
     "auditor.ring_buffer", "auditor.plot"],
    ["auditor.sinks", "auditor.report_command", "auditor.recorder", "auditor.probe"],
    ["auditor.engines.site"],
    ["auditor.engines.tensorflow", "auditor.engines.distribute", "auditor.engines.tf1_sessions"],
    ["auditor.engines.keras3", "auditor.engines.tf_keras", "auditor.engines.tf1", "auditor.engines.sonnet"],
    ["auditor.engines"],
    ["auditor.watch", "auditor.testing"],
    ["auditor"],
]
LAYER = {module: k for k, layer in enumerate(LAYERS) for module in layer}


def module_name(path: pathlib.Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def import_graph(packages=("auditor", "gradlint")) -> dict[str, set[str]]:
    """{module: modules of the same packages it imports}, function-level imports included;
    ``from package import name`` counts as importing ``package.name`` when that is a module."""
    files = {module_name(p): p for package in packages for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                subs = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in files]
                targets.update(subs)
                if len(subs) < len(node.names):
                    targets.add(source)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def circles(graph) -> list[list[str]]:
    found, done, stack = [], set(), []

    def visit(module):
        if module in stack:
            found.append(stack[stack.index(module):] + [module])
            return
        if module in done:
            return
        stack.append(module)
        for target in sorted(graph[module]):
            visit(target)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    return found


def test_no_import_circle_in_auditor_or_gradlint():
    assert circles(import_graph()) == []


def test_every_auditor_module_has_a_layer():
    graph = import_graph(("auditor",))
    assert sorted(set(graph) - set(LAYER)) == []
    assert sorted(set(LAYER) - set(graph)) == []  # the table names no module that is gone


def test_auditor_imports_point_down_the_layers():
    graph = import_graph(("auditor",))
    upward = [f"{a} (layer {LAYER[a]}) -> {b} (layer {LAYER[b]})"
              for a, targets in graph.items() for b in targets if LAYER[b] >= LAYER[a]]
    assert upward == []


def test_no_module_uses_another_modules_private_names():
    """``module._name`` where ``module`` is an auditor module imported by name."""
    graph = import_graph(("auditor",))
    files = {module_name(p): p for p in (ROOT / "auditor").rglob("*.py")}
    offences = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("auditor"):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in files:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif alias.name.startswith("_"):
                        offences.append(f"{module} imports {node.module}.{alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                offences.append(f"{module} uses {aliases[node.value.id]}.{node.attr}")
    assert offences == [] and graph


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder_finds_circles(edges, expected):
    assert circles(edges) == expected
