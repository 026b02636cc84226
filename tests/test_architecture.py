"""Rules of the house: no import cycles among the package's modules, the TINY maths imports nothing
above it, a net family never imports another family, the library never imports the CLI or the
experiments, loading policies, harness and CLI does not load stable-baselines3 (the CLI starts
fast), nothing but running on Ray imports Ray (an optional extra), the CLI help lists the policy
registry, and the distribution installs one top-level package."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import growenv
from growenv.cli import build_parser
from growenv.policies import POLICIES, policy_specs

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "growenv"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """Project modules ``module`` imports, anywhere in its body (function-level imports
    count: a cycle through a deferred import is still a cycle of the design)."""
    found: set[str] = set()
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            # "from growenv.nets import mlp" imports the submodule growenv.nets.mlp
            names = [f"{target}.{a.name}" for a in node.names] + [target]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    # package __init__ modules only re-export (importing ``a.b.c`` runs ``a/__init__`` by
    # Python's rules, not by design): the search is over the modules that do the work
    inner = {
        m: {t for t in ts if MODULES[t].name != "__init__.py"}
        for m, ts in GRAPH.items()
        if MODULES[m].name != "__init__.py"
    }
    assert find_cycle(inner) is None


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for t in GRAPH[m]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_tiny_maths_imports_nothing_above_it():
    allowed = {"growenv", "growenv.threads"}
    assert closure("growenv.tiny") <= allowed


@pytest.mark.parametrize("family", ["mlp", "conv", "dag"])
def test_a_family_never_imports_another(family):
    others = {
        p.name for p in (PACKAGE / "nets").iterdir() if p.is_dir() and p.name != "__pycache__"
    } - {family}
    prefix = f"growenv.nets.{family}"
    for m in (m for m in MODULES if m.startswith(prefix)):
        for t in GRAPH[m]:
            assert not any(t.startswith(f"growenv.nets.{o}") for o in others), (m, t)


def test_the_distribution_installs_only_growenv():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["growenv*"]
    top_level = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top_level <= {"growenv", "tests"}


LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(growenv.__path__, "growenv.")
    if not m.name.startswith("growenv.cli")
)


def _loaded_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_no_library_module_imports_the_cli_or_experiments():
    loaded = _loaded_after(LIBRARY)
    assert "growenv.policies.ppo" in loaded and "growenv.harness.ppo_training" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "experiments"}
    assert not {m for m in loaded if m == "growenv.cli" or m.startswith("growenv.cli.")}


def test_policies_harness_and_cli_load_without_stable_baselines3():
    # the lockstep env (a stable-baselines3 VecEnv) is imported only when a job uses it
    modules = [m for m in LIBRARY if m.startswith(("growenv.policies", "growenv.harness"))]
    loaded = _loaded_after([*modules, "growenv.cli"])
    assert "growenv.harness.bench" in loaded and "growenv.cli.train" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("stable_baselines3", "sb3_contrib")}


def test_the_library_the_cli_and_a_local_bench_never_import_ray():
    # Ray is an optional extra (".[ray]"): only --backend ray and sweep import it, when run
    loaded = _loaded_after([*LIBRARY, "growenv.cli"])
    assert "growenv.harness.ray_backend" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "ray"}
    code = (
        "import sys\n"
        "from growenv.harness.bench import run_bench\n"
        "run_bench(['teacher_student'], ['greedy'], [0], {'max_steps': 1, 'train_steps': 1,"
        " 'task_kwargs': {'n_train': 64, 'n_stats': 32, 'n_val': 32, 'n_test': 32}},"
        " progress=False)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "growenv.harness.bench" in out.stdout.split()
    assert not {m for m in out.stdout.split() if m.split(".")[0] == "ray"}


def test_cli_help_lists_every_registered_policy():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    bench = {a.dest: a.help for a in sub.choices["bench"]._actions}
    grow = {a.dest: a.help for a in sub.choices["grow"]._actions}
    for spec in policy_specs():
        assert spec in bench["policies"] and spec in grow["policy"]
    lockstep = bench["vec"].rsplit("(", 1)[1]
    for entry in POLICIES.values():
        assert (entry.spec in lockstep) == entry.lockstep
