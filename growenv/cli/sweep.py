"""``growenv sweep``: train agents over configurations x seeds with Ray Tune (parsing only; the
sweep is :func:`growenv.harness.sweep.run_sweep`)."""

from __future__ import annotations

import argparse

from growenv.cli.options import add_run_options, positive_int, use_threads
from growenv.errors import UserError
from growenv.harness.ray_backend import INSTALL_HINT, require_ray
from growenv.harness.sweep import format_sweep, load_sweep, run_sweep

__all__ = ["add_sweep_parser", "sweep_main"]


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``growenv sweep``."""
    p = subparsers.add_parser(
        "sweep",
        help="train agents over learner/env configurations x seeds with Ray Tune (ASHA, resume)",
        description='Train an agent (MaskablePPO, or with "learner": "value" double DQN or '
        "the contextual bandit) for every configuration of CONFIG (a grid or random search "
        "over the learner's and the env's settings) and every training seed, as Ray Tune trials "
        "(each a normal run directory), stop weak trials early with ASHA on the held-out "
        "evaluation, and summarise each configuration's held-out score over its seeds (IQM, "
        f"95%% bootstrap CI). Needs {INSTALL_HINT}; see docs/distributed.md.",
    )
    p.add_argument("config", metavar="CONFIG", help="the sweep file (JSON; docs/distributed.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep's directory")
    p.add_argument("--resume", action="store_true", help="finish the interrupted sweep in --out")
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster to join (HOST:PORT or auto); without it a local Ray starts",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPUs of the local Ray (trials run at once; default: all)",
    )
    add_run_options(p)
    p.set_defaults(func=sweep_main)


def sweep_main(args: argparse.Namespace) -> int:
    """Run ``growenv sweep`` with parsed ``args``; returns the exit status.

    Raises
    ------
    UserError
        For bad input (Ray missing, a bad sweep file or --out), before any training.
    """
    require_ray("growenv sweep")
    if args.address is not None and args.workers is not None:
        raise UserError("--workers: expected --workers (a local Ray) or --address, not both")
    spec = load_sweep(args.config)
    use_threads({} if args.threads is None else {"threads": args.threads})
    summary = run_sweep(
        spec,
        args.out,
        resume=args.resume,
        address=args.address,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(format_sweep(summary), end="")
    print(f"\nwrote {args.out}/summary.json, {args.out}/summary.md")
    return 0
