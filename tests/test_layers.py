"""The layering of the package: the library never imports the CLI or experiments, and loading
policies and harness does not load stable-baselines3 (the CLI starts fast)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import growenv
from growenv.cli import build_parser
from growenv.policies import POLICIES, policy_specs

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
