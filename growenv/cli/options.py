"""The one vocabulary of the ``growenv`` commands: shared options, parsing and input checks.

``grow``, ``bench`` and ``train`` take the same options for the same things:

* the environment settings ``--task``, ``--steps``, ``--neurons``, ``--train-steps``,
  ``--device``, ``--threads`` and ``--env-kwargs`` (:func:`add_env_options`,
  :func:`add_run_options`; a flag overrides the ``--env-kwargs`` key of the same setting only
  when it is given; a key given both ways with different values is an error);
* ``--seed`` (one seed; ``bench`` also takes a list or a range), ``--debug`` (tracebacks
  instead of one-line errors), ``--no-progress``.

Every check here raises :class:`growenv.errors.UserError` with one line that names the
argument and what was expected; :func:`growenv.cli.main` prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from growenv.env.config import TASK_CHOICES, EnvConfig
from growenv.errors import UserError
from growenv.harness.episodes import check_policy_fits
from growenv.policies import Policy, make_policy, policy_entry, policy_specs
from growenv.policies.ppo import agent_file, check_model_file, run_settings
from growenv.threads import DEFAULT_THREADS, set_threads

__all__ = [
    "ENV_FLAGS",
    "MAX_SEEDS",
    "HelpFormatter",
    "Parser",
    "add_env_options",
    "add_run_options",
    "agent_settings",
    "check_device",
    "check_lockstep",
    "check_policy",
    "check_task",
    "env_settings",
    "format_seeds",
    "nonnegative_int",
    "parse_json_object",
    "parse_seeds",
    "policies_help",
    "positive_int",
    "split_list",
    "lockstep_obstacle",
    "use_threads",
    "user_input",
]

MAX_SEEDS = 10_000
"""Most seeds one ``bench`` takes: enough for any confidence interval, and a bound that
turns a slip (``--seeds 100000``) into one line instead of hours of jobs."""

# env setting -> the flag that sets it (the flags every command shares)
ENV_FLAGS = {
    "task": "--task",
    "max_steps": "--steps",
    "neurons_per_growth": "--neurons",
    "train_steps": "--train-steps",
    "device": "--device",
    "threads": "--threads",
}
_ENV_FIELDS = tuple(f.name for f in dataclasses.fields(EnvConfig))


# --------------------------------------------------------------------------- parser


class HelpFormatter(argparse.HelpFormatter):
    """Help with every option's default shown (``(default: ...)``), unless the help text
    says it already or the option has none (flags, ``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or text == argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: --x: ...``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``message`` as one line (no usage block) and exit with status 2."""
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an int >= ``minimum`` (the error names what was expected and what was
    given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
"""argparse type: an int >= 1 (the error names what was expected)."""
nonnegative_int = int_at_least(0)
"""argparse type: an int >= 0 (seeds, optimizer steps)."""


def add_env_options(p: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """The environment settings every command takes (``--steps``, ``--neurons``,
    ``--train-steps``, ``--device``, ``--env-kwargs``); ``defaults`` are the command's own
    settings (shown in the help; EnvConfig's for the others). ``--task`` is the command's."""
    shown = {**dataclasses.asdict(EnvConfig()), **defaults}
    g = p.add_argument_group(
        "environment settings",
        "GrowthEnv arguments (docs/environment.md). A flag overrides --env-kwargs' key of "
        "the same setting; giving one both ways with different values is an error.",
    )
    g.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        default=None,
        help=f"growth decisions per episode (max_steps; default: {shown['max_steps']})",
    )
    g.add_argument(
        "--neurons",
        type=positive_int,
        metavar="N",
        default=None,
        help="neurons added per growth (neurons_per_growth; default: "
        f"{shown['neurons_per_growth']})",
    )
    g.add_argument(
        "--train-steps",
        type=nonnegative_int,
        metavar="N",
        default=None,
        help=f"optimizer steps after each decision (train_steps; default: {shown['train_steps']})",
    )
    g.add_argument(
        "--device",
        default=None,
        metavar="DEV",
        help="torch device of the networks and data: cpu, cuda, cuda:1, mps (device; "
        f"default: {shown['device']})",
    )
    g.add_argument(
        "--env-kwargs",
        default=None,
        metavar="JSON",
        help="more GrowthEnv arguments as a JSON object, e.g. '{\"max_params\": 800}'",
    )


def add_run_options(p: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """``--threads``, ``--debug`` and (when the command shows one) ``--no-progress``."""
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads of this process and of the env's work (threads; tiny nets: "
        f"more threads rarely help and collapse on busy cores; default: {DEFAULT_THREADS})",
    )
    if progress:
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of every error (bad input too) instead of one line",
    )


# --------------------------------------------------------------------------- checks


@contextlib.contextmanager
def user_input(argument: str) -> Iterator[None]:
    """Turn the library's validation errors raised in the block into one-line
    :class:`UserError` s naming ``argument`` (for checks of input before any work)."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        message = str(err)  # the library's UserErrors (a ValueError) name its argument
        if not message.startswith("-"):  # unless it names the command's option already
            message = f"{argument}: {message}"
        raise UserError(message) from err


def check_device(value: Any, argument: str = "--device") -> str:
    """``value`` as a canonical torch device string, if it exists on this machine."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(
            f"{argument}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"{argument}: expected an available device, got {value!r}: CUDA is not "
                "available here (use 'cpu')"
            )
        if device.index is not None and device.index >= count:
            raise UserError(f"{argument}: expected a CUDA device index < {count}, got {value!r}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(
                f"{argument}: expected an available device, got {value!r}: MPS is "
                "not available here (use 'cpu')"
            )
    elif device.type != "cpu":
        raise UserError(f"{argument}: expected 'cpu', 'cuda[:N]' or 'mps', got {value!r}")
    return str(device)


def check_task(name: Any, argument: str = "--task") -> str:
    """``name`` if it is a task of :class:`~growenv.env.growth_env.GrowthEnv`."""
    if name not in TASK_CHOICES:
        raise UserError(f"{argument}: expected one of {', '.join(TASK_CHOICES)}, got {name!r}")
    return name


def check_policy(spec: str, settings: Mapping[str, Any], argument: str = "--policy") -> Policy:
    """Build the policy of ``spec`` (checked against the registry) and return it; a learned
    one (``ppo:PATH``) is loaded, so a missing or damaged file or one trained on envs with
    another ``max_sites`` than ``settings``' is reported before any work."""
    with user_input(argument):
        entry = policy_entry(spec)
    obstacle = entry.net_obstacle(settings.get("net", EnvConfig.net))
    if obstacle is not None:
        raise UserError(f"{argument}: {obstacle}")
    if not entry.learned:
        with user_input(argument):
            return make_policy(spec)
    path = Path(spec.partition(":")[2])
    if not path.exists():
        raise UserError(
            f"{argument}: {spec!r}: expected a trained agent (run directory or model.zip), "
            f"but {str(path)!r} does not exist"
        )
    zip_path = agent_file(path)
    if zip_path.is_file():
        check_model_file(zip_path, f"{argument}: {spec!r}")
    try:
        policy = make_policy(spec)
    except (ValueError, TypeError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise UserError(f"{argument}: {spec!r}: cannot load the agent: {err}") from err
    with user_input(f"{argument} {spec}"):
        check_policy_fits(
            policy, {k: v for k, v in settings.items() if k not in AGENT_ENV_EXCLUDED}
        )
    return policy


AGENT_ENV_EXCLUDED = ("task", "task_kwargs", "device", "threads")
"""Env settings of a run's ``config.json`` that an evaluation does not take from it: the
tasks are the evaluation's (test tasks), the device and threads this machine's."""


def agent_settings(
    specs: Sequence[str], given: Mapping[str, Any], argument: str = "--policy"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The env settings of an evaluation of learned policies with their runs' own settings.

    Every ``ppo:RUN`` whose run has a ``config.json`` contributes its saved ``env_kwargs``
    (observation layout, ``max_sites``, ``net``, neuron settings, budgets, ...; not
    :data:`AGENT_ENV_EXCLUDED`); the settings ``given`` (flags, ``--env-kwargs``) override
    them on purpose.

    Returns
    -------
    settings, taken
        All settings, and those taken from the runs (to say so).

    Raises
    ------
    UserError
        One line, when two agents were trained with different values of a setting that is
        not given (the bench runs every policy on the same envs).
    """
    taken: dict[str, Any] = {}
    source: dict[str, str] = {}
    for spec in specs:
        with user_input(argument):
            learned = policy_entry(spec).learned
        if not learned:
            continue
        with user_input(f"{argument} {spec}"):
            saved = run_settings(spec.partition(":")[2]) or {}
        for key, value in (saved.get("env_kwargs") or {}).items():
            if key in AGENT_ENV_EXCLUDED or key in given:
                continue
            if key in taken and taken[key] != value:
                raise UserError(
                    f"{argument}: {source[key]} and {spec} were trained with {key}="
                    f"{taken[key]!r} and {value!r}; give {key} (a flag or --env-kwargs) to "
                    "evaluate both on the same envs"
                )
            taken[key], source[key] = value, spec
    return {**taken, **given}, taken


def parse_json_object(text: str | None, argument: str = "--env-kwargs") -> dict[str, Any]:
    """The JSON object ``text`` (``{}`` for ``None``); its keys must be GrowthEnv arguments."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{argument}: expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise UserError(f"{argument}: expected a JSON object, got {text!r}")
    unknown = [k for k in value if k not in _ENV_FIELDS]
    if unknown:
        raise UserError(
            f"{argument}: unknown key {unknown[0]!r}; expected GrowthEnv arguments: "
            f"{', '.join(_ENV_FIELDS)}"
        )
    return value


def lockstep_obstacle(settings: Mapping[str, Any]) -> str | None:
    """Why ``--vec lockstep`` cannot batch envs of ``settings`` (``None`` when it can)."""
    return EnvConfig.from_kwargs(**settings).lockstep_obstacle()


def check_lockstep(settings: Mapping[str, Any]) -> None:
    """Refuse ``--vec lockstep`` for envs the lockstep env cannot batch."""
    obstacle = lockstep_obstacle(settings)
    if obstacle is not None:
        raise UserError(f"--vec: expected auto or single here: {obstacle}")


def use_threads(settings: Mapping[str, Any]) -> None:
    """Set this process's torch threads to the env settings' ``threads`` (``--threads``;
    default :data:`growenv.threads.DEFAULT_THREADS`; ``None`` leaves torch's count)."""
    set_threads(settings.get("threads", DEFAULT_THREADS))


def env_settings(
    args: argparse.Namespace, base: Mapping[str, Any] | None = None, *, task: bool = True
) -> dict[str, Any]:
    """The env settings of a command: ``base``, then ``--env-kwargs``, then the flags given.

    Parameters
    ----------
    args
        Parsed options of :func:`add_env_options` (and ``--task`` when ``task``).
    base
        The command's own defaults (e.g. ``train``'s ``DEFAULT_ENV_KWARGS``).
    task
        The command's ``--task`` is one env setting (``grow``, ``train``); ``bench`` passes
        its task list separately (``False``) and refuses ``task`` in ``--env-kwargs``.

    Raises
    ------
    UserError
        For bad JSON, an unknown key, a flag that contradicts ``--env-kwargs``, a bad task or
        device, or a value that :class:`~growenv.env.config.EnvConfig` refuses.
    """
    extra = parse_json_object(args.env_kwargs)
    settings = {**(base or {}), **extra}
    if not task and "task" in extra:
        raise UserError("--env-kwargs: expected no 'task' key; give tasks with --task")
    for key, flag in ENV_FLAGS.items():
        if key == "task" and not task:
            continue
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if key in extra and extra[key] != value:
            raise UserError(
                f"{flag}: {value!r} contradicts --env-kwargs {key}={extra[key]!r}; give it once"
            )
        settings[key] = value
    if task and isinstance(settings.get("task"), str):
        check_task(settings["task"], "--task" if "task" not in extra else "--env-kwargs task")
    if "device" in settings:
        argument = "--device" if "device" not in extra else "--env-kwargs device"
        settings["device"] = check_device(settings["device"], argument)
    with user_input("--env-kwargs"):
        EnvConfig(**settings)
    return settings


# --------------------------------------------------------------------------- seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """A short description of ``seeds``: ``"0-99999 (100000 seeds)"``, ``"1, 5, 9"``."""
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]} ({len(seeds)} seeds)"
    if len(seeds) <= 8:
        return ", ".join(map(str, seeds))
    return f"{', '.join(map(str, seeds[:4]))}, ..., {seeds[-1]} ({len(seeds)} seeds)"


def parse_seeds(text: str, argument: str = "--seed", *, count: bool = False) -> list[int]:
    """Seeds from ``"S"`` (that seed; with ``count``: ``0..S-1``, the old ``--seeds N``),
    ``"A-B"`` (A..B inclusive) or ``"a,b,c"``; all ``>= 0``, at most :data:`MAX_SEEDS`.

    Raises
    ------
    UserError
        One line, naming ``argument``; a long range is described, never listed.
    """
    text = str(text).strip()
    expected = "N (seeds 0..N-1)" if count else "S"
    seeds: list[int] | None = None
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            lo, hi, n = (min(seeds), max(seeds), len(seeds)) if seeds else (0, 0, 0)
        elif (match := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", text)) is not None:
            lo, hi = int(match[1]), int(match[2])
            n = hi - lo + 1
        else:
            value = int(text)
            lo, hi, n = (0, value - 1, value) if count else (value, value, 1)
    except ValueError:
        raise UserError(
            f"{argument}: expected {expected}, A-B (a range) or a,b,c (a list), got {text!r}"
        ) from None
    if n < 1 or lo < 0:
        raise UserError(f"{argument}: expected at least one seed, all >= 0, got {text!r}")
    if n > MAX_SEEDS:
        raise UserError(
            f"{argument}: expected at most {MAX_SEEDS} seeds, got {n} ({lo}-{hi}); a bench "
            "of that size is many CPU-days"
        )
    return seeds if seeds is not None else list(range(lo, hi + 1))


def split_list(text: str) -> list[str]:
    """``"greedy, random"`` as ``["greedy", "random"]``; empty items dropped."""
    return [item.strip() for item in str(text).split(",") if item.strip()]


def policies_help() -> str:
    """The registered policies for help texts."""
    return ", ".join(policy_specs())
