"""``growenv train``: its options and the call of :func:`growenv.harness.ppo_training.train`
(``--algo ppo``) or :func:`growenv.learners.value.train_value_agent` (``--algo dqn`` /
``bandit``) (parsing only)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from growenv.cli.options import (
    add_env_options,
    add_run_options,
    check_device,
    check_lockstep,
    env_settings,
    lockstep_obstacle,
    nonnegative_int,
    parse_json_object,
    positive_int,
    use_threads,
    user_input,
)
from growenv.env.config import TASK_CHOICES
from growenv.errors import UserError
from growenv.harness.ppo_training import (
    CONFIG_FILE,
    DEFAULT_ENV_KWARGS,
    PPOConfig,
    model_to_load,
    train,
)
from growenv.policies.ppo import MODEL_FILE

__all__ = ["ALGOS", "add_train_parser", "train_main", "vec_kind"]

ALGOS = ("ppo", "dqn", "bandit", "rollout")
# --algo dqn / bandit / rollout options: (flag, ValueConfig field, type, help)
VALUE_OPTIONS = (
    ("--gamma", "gamma", float, "discount of the bootstrapped return (default: 1, undiscounted)"),
    ("--n-step", "n_step", positive_int, "steps of the bootstrapped return (default: 3)"),
    ("--reward-shift", "reward_shift", float, "constant added to every reward (default: 0)"),
    ("--reward-mode", "reward_mode", str, "step, terminal (0, then the sum) or paired"),
    ("--reward-reference", "reward_reference", str, "paired: minus this heuristic's rewards"),
    ("--learning-rate", "lr", float, "Adam's learning rate (default: 1e-3)"),
    ("--buffer-size", "buffer_size", positive_int, "replay capacity in transitions"),
    ("--learning-starts", "learning_starts", nonnegative_int, "env steps before updates"),
    ("--train-freq", "train_freq", positive_int, "env steps per update (default: 2)"),
    ("--gradient-steps", "gradient_steps", positive_int, "gradient steps per update (default: 1)"),
    ("--target-update", "target_update", positive_int, "updates between target-net copies"),
    ("--hidden", "hidden", str, "hidden sizes of the shared slot scorer, e.g. 64,64"),
    (
        "--action-set",
        "action_set",
        str,
        "all, slots (every valid slot), best-per-kind (DAG: each kind's best slot) or "
        "best-per-kind-skip (and skip)",
    ),
    ("--demo-policy", "demo_policy", str, "a heuristic whose episodes start the learner (DQfD)"),
    ("--demo-episodes", "demo_episodes", nonnegative_int, "its episodes (default: 0, none)"),
    ("--demo-pretrain", "demo_pretrain", nonnegative_int, "updates on them before acting"),
    (
        "--rollout-base",
        "rollout_base",
        str,
        "rollout: what follows each labelled action (round-robin, greedy, or never: no growth)",
    ),
)

VEC_CHOICES = ("auto", "lockstep", "single")
LEGACY_VEC = ("subproc", "dummy")  # train's old --vec values: SB3's vector envs
RUN_FILES = (MODEL_FILE, CONFIG_FILE)  # a directory holding either holds a run


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``growenv train``."""
    p = subparsers.add_parser(
        "train",
        help="train a growth agent (MaskablePPO, double DQN, a contextual bandit or rollouts)",
        description="Train sb3-contrib's MaskablePPO (--algo ppo), a double DQN, a "
        "contextual bandit or a rollout learner over per-expansion features (--algo dqn / "
        "bandit / rollout) on GrowthEnv over a task distribution (a new teacher every "
        "episode), with checkpoints, CSV logs and an evaluation against greedy on held-out "
        "teachers.",
    )
    p.add_argument(
        "--algo",
        choices=ALGOS,
        default="ppo",
        help="ppo: MaskablePPO; dqn: n-step double DQN with reward shifting; bandit: the "
        "same shared slot scorer regressed on one-step rewards; rollout: regressed on the "
        "advantages of rollouts of a heuristic (approximate policy iteration; default: ppo)",
    )
    for flag, field, kind, text in VALUE_OPTIONS:
        help = f"--algo dqn/bandit/rollout: {text}"
        p.add_argument(flag, dest=field, type=kind, default=None, help=help)
    p.add_argument(
        "--no-double", action="store_true", help="--algo dqn: the target net's max (no double DQN)"
    )
    p.add_argument("--out", required=True, help="run directory (model.zip, config.json, logs)")
    p.add_argument(
        "--task",
        default=None,
        help="task: " + ", ".join(TASK_CHOICES) + f" (default: {DEFAULT_ENV_KWARGS['task']})",
    )
    p.add_argument(
        "--timesteps",
        type=positive_int,
        default=None,
        metavar="N",
        help="env steps of the whole run, summed over the --n-envs envs (a resumed run "
        f"trains what it lacks of them; default: {PPOConfig.total_timesteps})",
    )
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="N",
        help="env steps between checkpoints (at most this much is lost to a kill; Ctrl-C and "
        f"SIGTERM save first; default: {PPOConfig.checkpoint_every})",
    )
    p.add_argument(
        "--eval-every",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="env steps between held-out evaluations against greedy (0: none; default: "
        f"{PPOConfig.eval_every})",
    )
    p.add_argument(
        "--eval-tasks",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help=f"held-out selection teachers per evaluation (default: {PPOConfig.eval_tasks})",
    )
    p.add_argument(
        "--n-envs",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"parallel environments (default: {PPOConfig.n_envs})",
    )
    p.add_argument(
        "--vec",
        choices=VEC_CHOICES + LEGACY_VEC,
        metavar="{" + ",".join(VEC_CHOICES) + "}",
        default=None,
        help="lockstep: all envs as one batched LockstepVecEnv; single: one GrowthEnv per env "
        "(SB3's DummyVecEnv, or SubprocVecEnv with --subproc); auto: lockstep where the env "
        "allows it (MLPs without augmentation), else single (default: auto)",
    )
    p.add_argument(
        "--subproc",
        action="store_true",
        help="with --vec single: each env in its own process (SB3's SubprocVecEnv)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=None, help="training seed (default: 0)")
    add_env_options(p, DEFAULT_ENV_KWARGS)
    p.add_argument(
        "--policy-device",
        default=None,
        help="torch device of the policy network (default: --device)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN",
        help="continue a run: its directory (newest checkpoint; its settings, unless given "
        "here) or a checkpoint .zip; alone, the run in --out",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="trained agent (run directory or model.zip) to fine-tune from, with this run's "
        "settings (same max_sites)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing run in --out (its files are removed first)",
    )
    add_run_options(p)
    p.set_defaults(func=train_main)


def vec_kind(vec: str, subproc: bool, env_kwargs: dict) -> str:
    """``PPOConfig.vec`` (``lockstep``, ``subproc`` or ``dummy``) of the ``--vec`` choice."""
    if vec in LEGACY_VEC:
        return vec
    if subproc and vec != "single":
        raise UserError(f"--subproc: expected --vec single, got --vec {vec}")
    if vec == "lockstep":
        check_lockstep(env_kwargs)
    if vec == "auto":
        vec = "single" if lockstep_obstacle(env_kwargs) else "lockstep"
    if vec == "single":
        return "subproc" if subproc else "dummy"
    return vec


def _model(value: str, argument: str) -> Path:
    """The model a run starts from (the library's :func:`model_to_load`), as a one-line
    error naming ``argument``."""
    with user_input(argument):
        return model_to_load(value, argument)


def _run_settings(resume: str, out: Path) -> PPOConfig | None:
    """The settings of the run a resume continues (its ``config.json``), if it has one."""
    path = Path(resume)
    run = path if path.is_dir() else out
    if not (run / CONFIG_FILE).is_file():
        return None
    with user_input(f"--resume: {run / CONFIG_FILE}"):
        data = json.loads((run / CONFIG_FILE).read_text())
        data.pop("sessions", None)
        return PPOConfig.from_json(data)


def _given(value, default):
    return default if value is None else value


def train_main(args: argparse.Namespace) -> int:
    """Run ``growenv train`` with parsed ``args``; returns the exit status.

    A resumed run keeps the settings of its ``config.json`` except those given as options.

    Raises
    ------
    UserError
        For bad input, before any training starts.
    """
    if getattr(args, "algo", "ppo") != "ppo":
        return _value_main(args)
    given = [flag for flag, field, _, _ in VALUE_OPTIONS if getattr(args, field) is not None]
    if given or getattr(args, "no_double", False):
        flag = given[0] if given else "--no-double"
        raise UserError(f"{flag}: expected --algo dqn, bandit or rollout, got --algo ppo")
    if args.resume is not None and args.init_from is not None:
        raise UserError("--resume: expected --resume (continue a run) or --init-from, not both")
    if args.resume is not None and args.force:
        raise UserError("--resume: expected --resume (continue a run) or --force, not both")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: expected a run directory, but {out} is a file")
    resume = None if args.resume is None else args.resume or args.out
    if resume is not None:
        _model(resume, "--resume")
    if args.init_from is not None:
        _model(args.init_from, "--init-from")
    if resume is None and not args.force and any((out / f).exists() for f in RUN_FILES):
        raise UserError(
            f"--out: expected a new run directory, but {out} holds a run; pass --resume to "
            "continue it, --force to replace it, or choose another directory"
        )
    base = (_run_settings(resume, out) if resume is not None else None) or PPOConfig()
    env_kwargs = env_settings(args, base.env_kwargs)
    policy_device = base.device
    if args.device is not None or "device" in parse_json_object(args.env_kwargs):
        policy_device = env_kwargs["device"]  # --device: the policy network's too
    if args.policy_device is not None:
        policy_device = check_device(args.policy_device, "--policy-device")
    vec = base.vec if args.vec is None and resume is not None else args.vec or "auto"
    config = dataclasses.replace(
        base,
        env_kwargs=env_kwargs,
        total_timesteps=_given(args.timesteps, base.total_timesteps),
        n_envs=_given(args.n_envs, base.n_envs),
        vec=vec_kind(vec, args.subproc, env_kwargs),
        seed=_given(args.seed, base.seed),
        device=policy_device,
        checkpoint_every=_given(args.checkpoint_every, base.checkpoint_every),
        eval_every=_given(args.eval_every, base.eval_every),
        eval_tasks=_given(args.eval_tasks, base.eval_tasks),
    )
    with user_input("--env-kwargs"):
        config.validate()
    use_threads(env_kwargs)
    path = train(
        config,
        args.out,
        resume=resume,
        force=args.force,
        progress_bar=not args.no_progress,
        init_from=args.init_from,
    )
    print(f"saved {path}")
    return 0


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(h) for h in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"--hidden: expected sizes >= 1 separated by commas, got {text!r}")
    return sizes


def _value_main(args: argparse.Namespace) -> int:
    """``growenv train --algo dqn|bandit|rollout``: the value learner
    (:func:`~growenv.learners.value.train_value_agent`); a resumed run keeps its saved
    settings except those given."""
    from growenv.learners.value import (
        CHECKPOINT_FILE,
        ValueConfig,
        train_value_agent,
    )
    from growenv.learners.value import CONFIG_FILE as VALUE_CONFIG
    from growenv.learners.value import MODEL_FILE as VALUE_MODEL

    for flag, value in (
        ("--init-from", args.init_from),
        ("--checkpoint-every", args.checkpoint_every),
    ):
        if value is not None:
            raise UserError(f"{flag}: expected --algo ppo, got --algo {args.algo}")
    if args.subproc or args.vec in LEGACY_VEC:
        raise UserError(f"--vec: expected auto, single or lockstep with --algo {args.algo}")
    if args.resume is not None and args.force:
        raise UserError("--resume: expected --resume (continue a run) or --force, not both")
    out = Path(args.resume or args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: expected a run directory, but {out} is a file")
    base = ValueConfig(algo=args.algo)
    if args.resume is not None:
        if not (out / CHECKPOINT_FILE).is_file():
            raise UserError(f"--resume: expected a run directory with {CHECKPOINT_FILE}, got {out}")
        with user_input(f"--resume: {out / VALUE_CONFIG}"):
            base = ValueConfig.from_json(json.loads((out / VALUE_CONFIG).read_text()))
    env_kwargs = env_settings(args, base.env_kwargs)
    changes = {
        field: getattr(args, field)
        for _, field, _, _ in VALUE_OPTIONS
        if getattr(args, field) is not None
    }
    if "hidden" in changes:
        changes["hidden"] = _hidden(changes["hidden"])
    if args.no_double:
        changes["double"] = False
    vec = base.vec if args.vec in (None, "auto") else {"single": "dummy"}.get(args.vec, args.vec)
    if args.algo == "rollout" and vec != "dummy":
        raise UserError(f"--vec: expected auto or single with --algo rollout, got {args.vec}")
    device = env_kwargs.get("device", "cpu") if args.policy_device is None else args.policy_device
    config = dataclasses.replace(
        base,
        env_kwargs=env_kwargs,
        algo=args.algo,
        total_timesteps=_given(args.timesteps, base.total_timesteps),
        n_envs=_given(args.n_envs, base.n_envs),
        vec=vec,
        seed=_given(args.seed, base.seed),
        device=device,
        eval_every=_given(args.eval_every, base.eval_every),
        eval_tasks=_given(args.eval_tasks, base.eval_tasks),
        **changes,
    )
    with user_input("--env-kwargs"):
        try:
            config.validate()
        except ValueError as err:  # a setting given by its own option names that option
            field, _, rest = str(err).partition(": ")
            flag = {f: flag for flag, f, _, _ in VALUE_OPTIONS}.get(field)
            if flag is None:
                raise
            raise UserError(f"{flag}: {rest}") from err
    if args.resume is None and any((out / f).exists() for f in (VALUE_MODEL, VALUE_CONFIG)):
        if not args.force:
            raise UserError(
                f"--out: expected a new run directory, but {out} holds a run; pass --resume to "
                "continue it, --force to replace it, or choose another directory"
            )
        for name in (VALUE_MODEL, VALUE_CONFIG, CHECKPOINT_FILE, "best_model.pt", "progress.csv"):
            (out / name).unlink(missing_ok=True)
    use_threads(env_kwargs)
    path = train_value_agent(config, out, resume=args.resume is not None)
    print(f"saved {path}")
    return 0
