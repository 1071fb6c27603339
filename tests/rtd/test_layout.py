"""rtd's module layout (issue 15 items 5 and 6), read from the source's own imports: no
import cycle, `rtd train`'s validation loads no part of the eval stack, one thin command
module per command, and no source file over 450 lines."""

import ast
import re
from pathlib import Path

import typer

from rtd_cli.cli import app

PACKAGE = Path(__file__).resolve().parents[2] / "rtd-cli" / "src" / "rtd_cli"
#: What scores a benchmark; `rtd train` needs it only in a run that validates.
EVAL_STACK = {"rtd_cli.evaluate", "rtd_cli.features", "rtd_cli.gallery_loader",
              "rtd_cli.scoring", "rtd_cli.retrieval", "rtd_cli.metrics"}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The rtd_cli modules `path` imports (module level only, or also inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from rtd_cli import evaluate` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules and m != "rtd_cli"}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules, top_level_only) - {m} for m, p in modules.items()}


def test_no_import_cycles():
    graph = _graph(top_level_only=False)  # lazy imports too: a cycle through one is still one
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, dep])}"
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_train_validation_imports_no_eval_stack():
    """`rtd train`'s check (run before its run folder exists) loads the modules that
    `import rtd_cli.train` loads: none of the eval stack (it loads in a validating run)."""
    graph = _graph(top_level_only=True)
    seen, todo = set(), ["rtd_cli.commands.train", "rtd_cli.train"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    assert "rtd_cli.datacheck" in seen  # the validation benchmark's annotations, read
    assert not seen & EVAL_STACK, sorted(seen & EVAL_STACK)


def test_one_command_module_per_command_and_cli_only_wires():
    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        module = command.callback.__module__
        assert module == f"rtd_cli.commands.{name.replace('-', '_')}", (name, module)
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assert defined == ["main"], defined


def test_no_source_file_over_450_lines():
    long = {
        p.name: n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long


def test_the_readme_method_map_names_functions_that_exist():
    """Each `rtd_cli/<file>.py:<function>` (or `Class.method`) of the README's method map
    is defined in that file, so the map cannot drift from the code."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    section = readme.split("## Method map", 1)[1].split("\n## ", 1)[0]
    refs = re.findall(r"`rtd_cli/([\w/]+\.py):([\w.]+)`", section)
    assert len(refs) >= 10, refs
    for path, name in refs:
        tree = ast.parse((PACKAGE / path).read_text())
        scope = tree.body
        for part in name.split("."):
            found = [n for n in scope if getattr(n, "name", None) == part]
            assert found, f"README method map: {path}:{name} is not defined"
            scope = found[0].body
