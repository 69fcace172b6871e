"""The package's module-level imports form no cycle, and the layers point one way (issue 20):
naming.py and model.py are leaves, store/ never reaches up into upload/, runtime/, health/,
the receiver, the agent or the CLI, and only the entry point imports cli/. Imports inside
functions (lazy, for memory or start-up time) are not edges of the cycle check; the layer
rules count them too (and those under ``if TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "belabox_metrics"


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph(*, everywhere: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules it imports: at module level, or (``everywhere``)
    anywhere in it."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in (ast.walk(tree) if everywhere else tree.body):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("belabox_metrics"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("belabox_metrics"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_module_level_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_naming_is_a_leaf() -> None:
    assert import_graph()["belabox_metrics.naming"] == set()


def test_naming_and_model_are_leaves_even_lazily() -> None:
    graph = import_graph(everywhere=True)
    assert graph["belabox_metrics.naming"] == set()
    assert graph["belabox_metrics.model"] == set()


def reaches_into(graph: dict[str, set[str]], inside: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted((module, dep) for module, deps in graph.items() if module.startswith(inside)
                  for dep in deps if dep.startswith(forbidden))


ABOVE_THE_STORE = tuple(f"belabox_metrics.{room}" for room in
                        ("upload", "runtime", "health", "receiver", "agent", "cli", "collectors"))


def test_the_store_never_imports_the_layers_above_it() -> None:
    assert reaches_into(import_graph(everywhere=True), "belabox_metrics.store", ABOVE_THE_STORE) == []


def test_only_the_entry_point_imports_the_cli() -> None:
    outside = {module: deps for module, deps in import_graph(everywhere=True).items()
               if not module.startswith("belabox_metrics.cli") and module != "belabox_metrics.__main__"}
    assert reaches_into(outside, "belabox_metrics", ("belabox_metrics.cli",)) == []


def test_the_layer_check_finds_an_upward_import() -> None:
    graph = {"belabox_metrics.store.queue": {"belabox_metrics.upload.encode"}, "belabox_metrics.upload.x": set()}
    assert reaches_into(graph, "belabox_metrics.store", ABOVE_THE_STORE) == [
        ("belabox_metrics.store.queue", "belabox_metrics.upload.encode")]
