"""The package's import graph: no cycles and no arrow from a lower layer up to a higher one.

Every `import` in plmscale/ counts, also those inside functions (a lazy import is still a dependency: it
only hides the cycle until the call). A future cycle or upward import fails here, not in review.
"""

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "plmscale"

# Lowest first; a module may import its own layer and the layers below it. A module belongs to the layer of
# the longest name prefix listed. Why this order (it is what the code does, checked by the tests below):
# - base: leaf modules every stage shares;
# - config: loading and validating the config; the training recipe fills the config's recipe keys, so it
#   sits with config, below the grid that resolves it per run;
# - data and model: the data stages and the network; neither reads the config nor the other. run_metrics (the
#   metrics.json contract: written by train, read by the grid's lr calibration, scaling, export and plots) sits
#   here, not in base, because it writes through plmscale.data.atomic;
# - grid: run specs from the config (shapes, resources, recipes per run);
# - train: trains one run spec on data shards with the model; the launcher (train.launch) is here;
# - scaling: fits the runs' metrics; the closed loop plans new runs with the grid;
# - export: loads trained runs (train.checkpoint) for export, score and generate;
# - plots: figures of fits and runs;
# - cli: the `plmscale` command, one module per subcommand, calling any layer.
LAYERS = [
    ("base", ["plmscale", "plmscale.errors", "plmscale.alphabet", "plmscale.arithmetic", "plmscale.categorical",
              "plmscale.logging_setup", "plmscale.provenance"]),
    ("config", ["plmscale.config", "plmscale.recipe"]),
    ("data, model", ["plmscale.data", "plmscale.model", "plmscale.run_metrics"]),
    ("grid", ["plmscale.grid"]),
    ("train", ["plmscale.train"]),
    ("scaling", ["plmscale.scaling"]),
    ("design", ["plmscale.design"]),
    ("export", ["plmscale.export"]),
    ("evaluate", ["plmscale.evaluate"]),
    ("plots", ["plmscale.plots"]),
    ("cli", ["plmscale.cli"]),
]


def _module_files() -> dict:
    """Dotted module name -> file; a package is named by its __init__.py."""
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _known_module(name: str) -> str:
    """The plmscale module an import of `name` loads: the name itself, or the package that defines it."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imported_modules(module: str, path: Path) -> set:
    """The plmscale modules `module` imports anywhere in its file. `from plmscale.x import name` counts as
    plmscale.x.name when that is a module, else as plmscale.x (importing a package imports its __init__)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            imported |= {_known_module(a.name) for a in node.names if a.name.split(".")[0] == "plmscale"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            if source.split(".")[0] != "plmscale":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                imported.add(submodule if submodule in MODULES else _known_module(source))
    imported.discard(module)
    return imported


def import_graph() -> dict:
    return {module: _imported_modules(module, path) for module, path in MODULES.items()}


def layer_of(module: str) -> int:
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of tests/test_architecture.py LAYERS: add it where it belongs"
    return max(matches)[1]


def strongly_connected_components(graph: dict) -> list:
    """Tarjan's algorithm, iterative (the package is small, but recursion limits are not worth thinking about)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_lazy_and_submodule_imports():
    """The walker itself: an import inside a function counts, and `from package import submodule` names the
    submodule, not the package."""
    graph = import_graph()
    assert "plmscale.train.loop" in graph["plmscale.train"]  # `from plmscale.train.loop import train_run`
    assert "plmscale.recipe" in graph["plmscale.config"]  # `from plmscale import recipe as recipes`
    assert "plmscale.train.loop" in graph["plmscale.cli.train"]  # imported inside main()


def test_no_import_cycles():
    cycles = [c for c in strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_no_import_from_a_higher_layer():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(import_graph().items()) for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert not upward, "imports from a higher layer:\n  " + "\n  ".join(upward)


def test_a_cycle_and_an_upward_import_are_found():
    """The checks fail on what they look for (a check that never fails proves nothing)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [c for c in strongly_connected_components(graph) if len(c) > 1] == [["a", "b", "c"]]
    assert layer_of("plmscale.grid.spec") < layer_of("plmscale.train.loop")
    assert layer_of("plmscale.config") < layer_of("plmscale.grid")
