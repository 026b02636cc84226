"""``growenv train``: its options and the call of :func:`growenv.harness.ppo_training.train`
(parsing only)."""

from __future__ import annotations

import argparse
import json

from growenv.harness.ppo_training import DEFAULT_ENV_KWARGS, VEC_KINDS, PPOConfig, train

__all__ = ["add_train_parser", "train_main"]


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
    p.add_argument("--timesteps", type=int, default=PPOConfig.total_timesteps)
    p.add_argument("--n-envs", type=int, default=PPOConfig.n_envs)
    p.add_argument(
        "--vec",
        choices=VEC_KINDS,
        default="lockstep",
        help="lockstep (default): all envs as one batched model; subproc/dummy: SB3's",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device of the policy network (the envs': --env-kwargs '{\"device\": ...}')",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-kwargs", default=None, help="JSON dict overriding the env settings")
    p.add_argument("--resume", default=None, help="checkpoint .zip to continue from")
    p.add_argument(
        "--init-from",
        default=None,
        help="trained agent (run directory or model.zip) to fine-tune from, with this run's "
        "settings (same max_sites)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_main)


def train_main(args: argparse.Namespace) -> int:
    """Run ``growenv train`` with parsed ``args``; returns the exit status."""
    env_kwargs = dict(DEFAULT_ENV_KWARGS)
    if args.env_kwargs:
        try:
            extra = json.loads(args.env_kwargs)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--env-kwargs: not valid JSON ({err})") from err
        if not isinstance(extra, dict):
            raise SystemExit("--env-kwargs: expected a JSON object")
        env_kwargs.update(extra)
    config = PPOConfig(
        env_kwargs=env_kwargs,
        total_timesteps=args.timesteps,
        n_envs=args.n_envs,
        vec=args.vec,
        seed=args.seed,
        device=args.device,
    )
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
