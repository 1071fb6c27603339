"""The modules of tldr_cli import each other without a cycle, and no module hides an import
of another inside a function (the only exception: the command modules, `tldr_cli.commands`,
import their workflow in the command body, so `tldr --help` does not load torch models,
open_clip and openai)."""

import ast
from pathlib import Path

import tldr_cli

PACKAGE = Path(tldr_cli.__file__).parent
LAZY_COMMAND_IMPORTS = {"commands"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(tldr_cli modules imported at module level, those imported inside a function)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "tldr_cli":
                names = [f"tldr_cli.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        mods = {n.split(".")[1] for n in names if n.startswith("tldr_cli.")}
        (top if node in tree.body else nested).update(mods)
    return top, nested


def _graph() -> dict[str, set[str]]:
    """Module -> its imports; the command modules count as one node, `commands`."""
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}
    tops, nested = zip(*(_imports(p) for p in (PACKAGE / "commands").glob("*.py")), strict=True)
    graph["commands"] = (set().union(*tops) - {"commands"}, set().union(*nested) - {"commands"})
    return graph


def test_no_function_hides_an_import_of_another_module():
    hidden = {m: sorted(n) for m, (_, n) in _graph().items() if n and m not in LAZY_COMMAND_IMPORTS}
    assert not hidden


def test_the_import_graph_has_no_cycle():
    graph = {m: top | nested for m, (top, nested) in _graph().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module) :], module]))
        if module in done or module not in graph:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert {"erm", "pipeline", "retrain", "features"} <= set(graph)
