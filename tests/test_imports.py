"""neoscale's import graph (read from the source, nothing imported): no circle, and no module
imports a command-line module (one with a ``__main__`` block: run, train, fit, prepare, ...),
whose floor is above every library module's."""

import ast
import pathlib

import neoscale

PACKAGE = pathlib.Path(neoscale.__file__).parent


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The neoscale modules ``path`` imports, at any depth (function-level imports included);
    ``from P import m`` names the module P.m when there is one, else P."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return {m for m in out if m in modules and m != name}


def import_graph() -> tuple[dict[str, set[str]], set[str]]:
    """(module -> the neoscale modules it imports, the command-line modules)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imported(path, set(paths)) for name, path in paths.items()}
    cli = {name for name, path in paths.items() if "__main__" in path.read_text()
           and any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
                   for n in ast.parse(path.read_text()).body)}
    return graph, cli


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_package_and_its_command_line_modules():
    graph, cli = import_graph()
    assert {"neoscale.run", "neoscale.train", "neoscale.fit", "neoscale.prepare"} <= cli
    assert "neoscale.scaling.points" in graph["neoscale.scaling.multiplier"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_no_module_imports_a_command_line_module():
    graph, cli = import_graph()
    upward = sorted(f"{name} -> {dep}" for name, deps in graph.items() for dep in deps & cli)
    assert upward == []
