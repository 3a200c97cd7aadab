"""The import graph of trustgate: no cycles, and each layer imports only the layers beneath it.

Every import counts, whether at module level, inside a function, or under `TYPE_CHECKING`: a cycle hidden
from the interpreter is still a cycle in the design. A new module must be given a layer here, which is the
moment to decide where it belongs (the README's layout section says the same in words).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("webhook", "controller")

# Lowest first. A module may import its own layer and every layer listed before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("webhook.codes", "webhook.logs", "webhook.strictjson", "webhook.references", "webhook.results",
                    "webhook.scratch", "webhook.cache", "webhook.pki", "webhook.validation", "webhook.artifacts",
                    "webhook.metrics", "webhook.registry.network")),
    ("policy model", ("webhook.policy.models", "webhook.policy.matching", "webhook.policy.notation_identity")),
    ("trust material", ("webhook.trust", "webhook.gpgkeys", "webhook.rekor", "webhook.timestamp")),
    ("payload formats", ("webhook.simple_signing",)),
    ("registry", ("webhook.registry.*",)),
    ("signature sources", ("webhook.sources.*",)),
    ("verifiers", ("webhook.verifiers.*",)),
    ("configuration", ("webhook.config", "webhook.policy.compile", "webhook.policy.scope", "webhook.bundle")),
    ("decision", ("webhook.pipeline", "webhook.admission")),
    ("serving", ("webhook.tls", "webhook.app", "webhook.serving", "webhook.cluster", "webhook.events")),
    ("controller", ("controller.*",)),
    ("command line", ("webhook.cli", "webhook.__main__")),
)


def module_names() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module and the project modules it imports (a `from package import module` names the module)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            target = pending.pop()
            if target in on_path:
                return [*path[path.index(target):], target]
            if target not in done:
                stack.append((target, sorted(graph[target])))
                path.append(target)
                on_path.add(target)
    return None


def layer_of(module: str, layers: Sequence[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    matches = [index for index, (_, patterns) in enumerate(layers)
               if any(fnmatchcase(module, pattern) for pattern in patterns)]
    return matches[0] if matches else None


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                found.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    return found


GRAPH = import_graph(module_names())


def test_the_import_graph_has_no_cycle() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_every_module_has_a_layer() -> None:
    packages = {name for name, path in module_names().items() if path.name == "__init__.py"}
    unplaced = [name for name in GRAPH if name not in packages and layer_of(name) is None]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_each_layer_imports_only_the_layers_beneath_it() -> None:
    assert upward_imports(GRAPH) == []


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / "webhook"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from webhook.high import H\n")
    (package / "high.py").write_text("def later():\n    from webhook import low\n    import webhook.sub.leaf\n")
    (package / "sub" / "leaf.py").write_text("from ..low import x\nfrom . import sibling\n")
    (package / "sub" / "sibling.py").write_text("")
    modules = {".".join(path.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): path
               for path in package.rglob("*.py")}
    graph = import_graph(modules)
    assert graph["webhook.low"] == {"webhook.high"}
    assert graph["webhook.high"] == {"webhook.low", "webhook.sub.leaf"}
    assert graph["webhook.sub.leaf"] == {"webhook.low", "webhook.sub.sibling"}
    cycle = find_cycle(graph)
    assert cycle is not None and {"webhook.high", "webhook.low"} <= set(cycle)


@pytest.mark.parametrize(("graph", "cyclic"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": set(), "b": {"c"}, "c": {"b"}}, True),
])
def test_cycles_are_found(graph: dict[str, set[str]], cyclic: bool) -> None:
    cycle = find_cycle(graph)
    assert (cycle is not None) == cyclic
    if cycle:
        assert cycle[0] == cycle[-1] and all(b in graph[a] for a, b in itertools.pairwise(cycle))


def test_an_upward_import_is_reported() -> None:
    assert upward_imports({"webhook.registry.client": {"webhook.verifiers.base"}}) == [
        "webhook.registry.client (registry) imports webhook.verifiers.base (verifiers)"]
