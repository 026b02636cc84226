"""``growenv train``: its options and the call of :func:`growenv.harness.ppo_training.train`
(parsing only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from growenv.cli.options import (
    add_env_options,
    add_run_options,
    check_device,
    env_settings,
    nonnegative_int,
    positive_int,
    user_input,
)
from growenv.env.config import TASK_CHOICES
from growenv.errors import UserError
from growenv.harness.ppo_training import DEFAULT_ENV_KWARGS, PPOConfig, train
from growenv.policies.ppo import MODEL_FILE
from growenv.threads import set_threads

__all__ = ["add_train_parser", "train_main", "vec_kind"]

VEC_CHOICES = ("auto", "lockstep", "single")
LEGACY_VEC = ("subproc", "dummy")  # train's old --vec values: SB3's vector envs


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``growenv train``."""
    p = subparsers.add_parser(
        "train",
        help="train a MaskablePPO growth agent",
        description="Train sb3-contrib's MaskablePPO on GrowthEnv over a task distribution "
        "(a new teacher every episode), with checkpoints, TensorBoard/CSV logs and an "
        "evaluation against greedy on held-out teachers.",
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
        default=PPOConfig.total_timesteps,
        help="environment steps to train for (summed over the --n-envs envs)",
    )
    p.add_argument(
        "--n-envs", type=positive_int, default=PPOConfig.n_envs, help="parallel environments"
    )
    p.add_argument(
        "--vec",
        choices=VEC_CHOICES + LEGACY_VEC,
        metavar="{" + ",".join(VEC_CHOICES) + "}",
        default="auto",
        help="lockstep: all envs as one batched LockstepVecEnv; single: one GrowthEnv per env "
        "(SB3's DummyVecEnv, or SubprocVecEnv with --subproc); auto: lockstep where the env "
        "allows it (MLPs without augmentation), else single",
    )
    p.add_argument(
        "--subproc",
        action="store_true",
        help="with --vec single: each env in its own process (SB3's SubprocVecEnv)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="training seed")
    add_env_options(p, DEFAULT_ENV_KWARGS)
    p.add_argument(
        "--policy-device",
        default=None,
        help="torch device of the policy network (default: --device)",
    )
    p.add_argument("--resume", default=None, help="checkpoint .zip to continue from")
    p.add_argument(
        "--init-from",
        default=None,
        help="trained agent (run directory or model.zip) to fine-tune from, with this run's "
        "settings (same max_sites)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    add_run_options(p)
    p.set_defaults(func=train_main)


def vec_kind(vec: str, subproc: bool, env_kwargs: dict) -> str:
    """``PPOConfig.vec`` (``lockstep``, ``subproc`` or ``dummy``) of the ``--vec`` choice."""
    if vec in LEGACY_VEC:
        return vec
    if subproc and vec != "single":
        raise UserError(f"--subproc: expected --vec single, got --vec {vec}")
    stackable = env_kwargs.get("net", "mlp") == "mlp" and not env_kwargs.get("augment", False)
    if vec == "lockstep" and not stackable:
        raise UserError("--vec: lockstep stacks MLPs without augmentation only; use single")
    if vec == "auto":
        vec = "lockstep" if stackable else "single"
    if vec == "single":
        return "subproc" if subproc else "dummy"
    return vec


def _check_path(value: str | None, argument: str) -> None:
    if value is None:
        return
    path = Path(value)
    zip_path = path / MODEL_FILE if path.is_dir() else path
    if not zip_path.is_file():
        raise UserError(f"{argument}: expected a model .zip or a run directory, no {zip_path}")


def train_main(args: argparse.Namespace) -> int:
    """Run ``growenv train`` with parsed ``args``; returns the exit status.

    Raises
    ------
    UserError
        For bad input, before any training starts.
    """
    env_kwargs = env_settings(args, DEFAULT_ENV_KWARGS)
    device = env_kwargs.get("device", "cpu")
    policy_device = device
    if args.policy_device is not None:
        policy_device = check_device(args.policy_device, "--policy-device")
    if args.resume is not None and args.init_from is not None:
        raise UserError("--resume: expected --resume (continue a run) or --init-from, not both")
    _check_path(args.resume, "--resume")
    _check_path(args.init_from, "--init-from")
    out = Path(args.out)
    if (out / MODEL_FILE).exists() and not args.force and args.resume is None:
        raise UserError(
            f"--out: expected a new run directory, but {out} holds a trained agent; pass "
            "--force to overwrite it or choose another directory"
        )
    config = PPOConfig(
        env_kwargs=env_kwargs,
        total_timesteps=args.timesteps,
        n_envs=args.n_envs,
        vec=vec_kind(args.vec, args.subproc, env_kwargs),
        seed=args.seed,
        device=policy_device,
    )
    with user_input("--env-kwargs"):
        config.validate()
    set_threads(args.threads)
    path = train(
        config,
        args.out,
        resume=args.resume,
        force=args.force,
        progress_bar=not args.no_progress,
        init_from=args.init_from,
    )
    print(f"saved {path}")
    return 0
