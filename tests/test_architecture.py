"""The layout holds: imports run one way, no import loops, no stage imports another, no module over 400 lines.

Layers, top to bottom (a module may import its own layer or any layer below it):

    flows.cli -> flows (Prefect) -> augment.graph -> augment.stages -> augment.core -> contracts
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400
CONTRACTS = {"augment.version", "augment.safe_text", "augment.errors", "augment.registry", "augment.atomic", "augment.runtime", "augment.png",
             "augment.config", "augment.config_file", "augment.summary", "augment.rundir"}


def layer(module: str) -> int:
    if module in CONTRACTS:
        return 0
    if module.startswith("augment.core"):
        return 1
    if module.startswith("augment.stages"):
        return 2
    if module in ("augment", "augment.graph", "augment.plan", "augment.recipe"):
        return 3
    if module == "flows.cli":
        return 5
    if module == "flows" or module.startswith("flows."):
        return 4
    raise AssertionError(f"{module}: not assigned to a layer; add it to tests/test_architecture.py")


def modules() -> dict[str, Path]:
    out = {}
    for package in ("augment", "flows"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from augment import rundir` imports the module augment.rundir
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def test_imports_run_one_way():
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in import_graph().items() for d in sorted(deps) if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_a_stage_never_imports_another_stage():
    graph = import_graph()
    stages = [m for m in graph if m.startswith("augment.stages.")]
    crossing = [f"{m} imports {d}" for m in stages for d in graph[m] if d.startswith("augment.stages.")]
    assert not crossing, "\n".join(crossing)


def test_no_import_loops():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                loop = path[path.index(d):] + [d] if d in path else [m, d]
                pytest.fail("import loop: " + " -> ".join(loop))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def core_group(module: str) -> str | None:
    """The group (augment.core's sub-package) of a module inside core; None outside core."""
    parts = module.split(".")
    return parts[2] if module.startswith("augment.core.") else None


def test_every_core_module_is_in_a_group_and_groups_import_one_way():
    """augment.core's groups, in augment.core.GROUPS' order: a group imports only itself and the groups
    before it (base first, report last); no module sits in core outside a group."""
    from augment.core import GROUPS

    loose = [m for m in modules() if m.startswith("augment.core.") and core_group(m) is None]
    assert not loose, f"modules outside a group of augment.core: {loose}"
    assert {core_group(m) for m in modules() if core_group(m)} == set(GROUPS)
    upward = [f"{m} ({core_group(m)}) imports {d} ({core_group(d)})" for m, deps in import_graph().items() if core_group(m)
              for d in sorted(deps) if core_group(d) and GROUPS.index(core_group(d)) > GROUPS.index(core_group(m))]
    assert not upward, "\n".join(upward)


# Modules on the deepest import chain from the CLI, module-level and function-level imports (issue 32:
# at most 8). The four levels above core are the CLI, the flow (or plan), the graph and a stage, so
# what a stage imports from core is at most four deep with the contracts under it: composing core
# modules (the gate, the feature spaces, the GAN's training, the report's text) sit on primitives
# that import only contracts (the engine, the albumentations module, the checkpoint files).
MAX_CHAIN = 8


def deepest_chain(graph: dict[str, set[str]], start: str = "flows.cli") -> list[str]:
    """The longest import chain from `start` (the graph has no loops: test_no_import_loops)."""
    memo: dict[str, list[str]] = {}

    def longest(m: str) -> list[str]:
        if m not in memo:
            memo[m] = [m] + max((longest(d) for d in sorted(graph[m])), key=len, default=[])
        return memo[m]

    return longest(start)


def test_the_deepest_import_chain_from_the_cli_is_short():
    chain = deepest_chain(import_graph())
    assert len(chain) <= MAX_CHAIN, f"{len(chain)} modules deep: " + " -> ".join(chain)


def test_no_library_module_is_over_400_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_checks_catch_what_they_guard(tmp_path, monkeypatch):
    """The checks above are not vacuous: a planted upward import and a planted loop are found."""
    graph = import_graph()
    assert graph["augment.graph"] >= {"augment.stages.gan", "augment.rundir"}  # imports are seen at all
    graph["augment.rundir"] = graph["augment.rundir"] | {"augment.graph"}  # contracts -> graph: upward, a loop
    monkeypatch.setattr(__import__(__name__), "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="augment.rundir .layer 0. imports augment.graph"):
        test_imports_run_one_way()
    with pytest.raises(pytest.fail.Exception, match="import loop: .*augment.rundir"):
        test_no_import_loops()
    graph = import_graph()
    graph["augment.core.base.tensors"] = graph["augment.core.base.tensors"] | {"augment.core.report.figures"}
    with pytest.raises(AssertionError, match="tensors .base. imports augment.core.report.figures .report."):
        test_every_core_module_is_in_a_group_and_groups_import_one_way()
    assert len(deepest_chain({"a": {"b"}, "b": {"c"}, "c": set()}, "a")) == 3


def test_every_name_a_config_accepts_is_in_one_registry_table():
    """The config's choices come from augment.registry; the code's own tables hold the same names."""
    from augment import registry
    from augment.config import BenchmarkConfig, ClassicalConfig, GanConfig, SmoteConfig
    from augment.core.transforms.augmentation import PRESETS
    from augment.core.smote.features import _KINDS as FEATURE_KINDS
    from augment.core.gan.diffaugment import POLICIES

    assert tuple(PRESETS) == registry.CLASSICAL_PRESETS
    assert tuple(POLICIES) == registry.DIFFAUGMENT_POLICIES
    assert tuple(FEATURE_KINDS) == tuple(registry.FEATURE_SPACES)
    for name in registry.FEATURE_SPACES:
        SmoteConfig(features=name)
    for name in (*registry.PROTOCOLS, "auto"):
        BenchmarkConfig(selection=name)
    for name in registry.CLASSICAL_PRESETS:
        ClassicalConfig(preset=name)
    for mode, entry in registry.GENERATORS.items():
        GanConfig(mode=mode, nz=max(entry.min_nz, 2))
    for table in ("GENERATOR_MODES", "INVERTIBLE_FEATURE_SPACES", "GeneratorMode"):
        assert not hasattr(registry, table), f"registry.{table}: a list nothing reads"


def test_the_version_is_the_packages():
    import tomllib

    from augment.version import __version__

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == __version__
