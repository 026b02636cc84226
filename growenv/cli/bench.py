"""``growenv bench``: its options and the run that writes the results (parsing only; the
jobs are :func:`growenv.harness.bench.run_bench`)."""

from __future__ import annotations

import argparse
import json
import sys

from growenv.harness.bench import parse_list, parse_seeds, run_bench
from growenv.harness.plots import plot_results
from growenv.harness.summary import check_out_dir, format_table, summarize, write_results
from growenv.policies import POLICIES, make_policy, policy_entry, policy_specs

__all__ = ["add_bench_parser", "bench_main"]


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "bench",
        help="compare growth policies over tasks and seeds (CSV, JSON, table, plots)",
        description="Run every (task, policy, seed) growth episode in parallel worker "
        "processes and summarise the final losses with means, IQMs and 95% bootstrap "
        "confidence intervals over seeds, and the paired difference to the reference policy.",
    )
    p.add_argument(
        "--tasks", default="teacher_student", help="comma-separated tasks (teacher_student, ...)"
    )
    p.add_argument(
        "--policies",
        default="greedy,greedy-loss,round-robin,random",
        help="comma-separated policies: " + ", ".join(policy_specs()),
    )
    p.add_argument("--seeds", default="10", help="N (seeds 0..N-1), A-B or a,b,c (default 10)")
    p.add_argument(
        "--env-kwargs",
        default="{}",
        help='GrowthEnv arguments as JSON, e.g. \'{"train_steps": 50, "max_steps": 12}\'',
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--vec",
        choices=("auto", "lockstep", "single"),
        default="auto",
        help="lockstep: run a policy's seeds as one batched LockstepVecEnv; single: one env "
        "per episode; auto (default): lockstep where the policy allows it ("
        + ", ".join(entry.spec for entry in POLICIES.values() if entry.lockstep)
        + ")",
    )
    p.add_argument("--oracle", action="store_true", help="add the teacher-architecture oracle row")
    p.add_argument("--reference", default="greedy", help="policy the differences refer to")
    p.add_argument("--out", default=None, help="results directory (results.csv, summary.json)")
    p.add_argument("--force", action="store_true", help="overwrite results in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=bench_main)
    return p


def bench_main(args: argparse.Namespace) -> int:
    """Run ``growenv bench`` with parsed ``args``; returns the exit status."""
    try:
        tasks, policies = parse_list(args.tasks), parse_list(args.policies)
        seeds = parse_seeds(args.seeds)
        env_kwargs = json.loads(args.env_kwargs)
        if not isinstance(env_kwargs, dict):
            raise ValueError("--env-kwargs: expected a JSON object")
        if args.workers < 1:
            raise ValueError("--workers: expected an int >= 1")
        if args.out is not None:
            check_out_dir(args.out, args.force)
        for spec in policies:  # fail before running anything
            if not policy_entry(spec).learned:
                make_policy(spec)
    except (ValueError, FileExistsError) as err:
        print(f"growenv bench: error: {err}", file=sys.stderr)
        return 2
    try:
        rows = run_bench(
            tasks,
            policies,
            seeds,
            env_kwargs,
            args.workers,
            args.oracle,
            not args.no_progress,
            vec=args.vec,
        )
    except ValueError as err:
        print(f"growenv bench: error: {err}", file=sys.stderr)
        return 2
    summary = summarize(rows, reference=args.reference)
    print(format_table(summary, reference=args.reference))
    if args.out is not None:
        config = {
            "tasks": tasks,
            "policies": policies,
            "seeds": seeds,
            "env_kwargs": env_kwargs,
            "oracle": args.oracle,
            "reference": args.reference,
        }
        paths = write_results(args.out, rows, summary, config, force=args.force)
        paths += plot_results(rows, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
