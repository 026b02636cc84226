"""Load a script of ``experiments/`` as a module (the scripts are not a package), and check
how one stops on bad arguments."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py``, executed once per call and registered in ``sys.modules``
    under ``name`` (dataclasses and pickling look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def usage_error_line(
    main: Callable[[list[str]], object], argv: list[str], out: Path, capsys
) -> str:
    """Run a script's ``main`` with ``argv`` and ``--out out``, which must stop with status 2
    (a usage error) before creating ``out``; return the last line it printed to stderr."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(out)])
    assert exc.value.code == 2
    assert not out.exists()
    return capsys.readouterr().err.strip().splitlines()[-1]
