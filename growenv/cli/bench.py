"""``growenv bench``: its options and the run that writes the results (parsing only; the
jobs are :func:`growenv.harness.bench.run_bench`)."""

from __future__ import annotations

import argparse
import sys

from growenv.cli.options import (
    add_env_options,
    add_run_options,
    agent_settings,
    check_lockstep,
    check_policy,
    check_task,
    env_settings,
    parse_seeds,
    policies_help,
    positive_int,
    split_list,
    use_threads,
    user_input,
)
from growenv.env.config import TASK_CHOICES
from growenv.errors import UserError
from growenv.harness.bench import BACKENDS, run_bench
from growenv.harness.plots import plot_results
from growenv.harness.ppo_training import PPOConfig, check_test_tasks
from growenv.harness.ray_backend import INSTALL_HINT, require_ray, usable_cpus
from growenv.harness.summary import check_out_dir, format_table, summarize, write_results
from growenv.policies import POLICIES, policy_entry
from growenv.policies.ppo import BEST_MODEL_FILE, run_settings

__all__ = ["add_bench_parser", "bench_main"]

DEFAULT_TASK = "teacher_student"
DEFAULT_POLICIES = "greedy,greedy-loss,round-robin,random"
DEFAULT_SEEDS = "0-9"
LOCKSTEP = tuple(entry.spec for entry in POLICIES.values() if entry.lockstep)


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "bench",
        help="compare growth policies over tasks and seeds (CSV, JSON, table, plots)",
        description="Run every (task, policy, seed) growth episode in parallel worker "
        "processes and summarise the final losses with means, IQMs and 95% bootstrap "
        "confidence intervals over seeds, and the paired difference to the reference policy.",
    )
    # the old plural spellings stay as hidden aliases (registered first: same defaults)
    p.add_argument("--tasks", dest="tasks", default=DEFAULT_TASK, help=argparse.SUPPRESS)
    p.add_argument(
        "--task",
        dest="tasks",
        metavar="TASK[,TASK...]",
        default=DEFAULT_TASK,
        help="task, or comma-separated tasks: " + ", ".join(TASK_CHOICES),
    )
    p.add_argument("--policies", dest="policies", default=DEFAULT_POLICIES, help=argparse.SUPPRESS)
    p.add_argument(
        "--policy",
        dest="policies",
        metavar="POLICY[,POLICY...]",
        default=DEFAULT_POLICIES,
        help="policy, or comma-separated policies: " + policies_help(),
    )
    p.add_argument(
        "--seed",
        default=None,
        metavar="SEEDS",
        help="seeds: S (that seed), A-B (A..B) or a,b,c (default: 0-9)",
    )
    p.add_argument("--seeds", default=None, help=argparse.SUPPRESS)  # old: N means 0..N-1
    add_env_options(p, {})
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        default=None,
        help="worker processes (default: 1); --backend ray: the CPUs of the local Ray it "
        "starts (default: all of this machine's)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: this machine's worker processes; ray: Ray tasks on a local Ray or, with "
        f"--address, a cluster (needs {INSTALL_HINT}; docs/distributed.md)",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="with --backend ray: the running Ray cluster to join (HOST:PORT printed by "
        "`ray start --head`, or auto); without it a local Ray is started",
    )
    p.add_argument(
        "--vec",
        choices=("auto", "lockstep", "single"),
        default="auto",
        help="lockstep: run a policy's seeds in batched LockstepVecEnvs; single: one GrowthEnv "
        "per episode; auto: lockstep where the policy allows it (" + ", ".join(LOCKSTEP) + ")",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="add the teacher-architecture oracle row (teacher-student tasks)",
    )
    p.add_argument(
        "--reference", default="greedy", metavar="POLICY", help="policy the differences refer to"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="results directory (results.csv, summary.json, plots); without it the table is "
        "printed and nothing is written",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish the bench in --out: skip the episodes it holds, run the others",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the results in a non-empty --out (the previous bench's files are removed)",
    )
    add_run_options(p)
    p.set_defaults(func=bench_main)
    return p


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seed is not None and args.seeds is not None:
        raise UserError("--seed: expected --seed or the old --seeds, not both")
    if args.seeds is not None:
        return parse_seeds(args.seeds, "--seeds", count=True)
    return parse_seeds(args.seed if args.seed is not None else DEFAULT_SEEDS)


def _check_oracle(tasks: list[str]) -> None:
    without = [t for t in tasks if "teacher" not in t]
    if len(without) == len(tasks):
        raise UserError(
            f"--oracle: expected a teacher-student task (the oracle trains the teacher's "
            f"architecture), got {', '.join(tasks)}"
        )
    if without:
        print(
            f"growenv bench: --oracle: no oracle row for {', '.join(without)} (no teacher)",
            file=sys.stderr,
        )


def _check_agent(spec: str, policy, tasks: list[str], env_kwargs: dict) -> None:
    """Say which model ``ppo:RUN`` loads; refuse test tasks that share a teacher with the
    run's training or selection tasks (one line)."""
    path = getattr(policy, "path", None)
    saved = run_settings(path) if path is not None else None
    if path is not None and path.name == BEST_MODEL_FILE:
        best = (saved or {}).get("best", {})
        print(
            f"growenv bench: {spec} loads {path} (best held-out selection score "
            f"{best.get('agent_over_greedy', float('nan')):.4f} at {best.get('timesteps', '?')} "
            f"steps); ppo:{path.with_name('model.zip')} for the last model",
            file=sys.stderr,
        )
    if saved is None:
        return
    with user_input(f"--policy {spec}"):
        if policy_entry(spec).name == "dqn":  # a value-based run (growenv.learners.value)
            from growenv.learners.value import ValueConfig

            config = ValueConfig.from_json(saved)
        else:
            config = PPOConfig.from_json(saved)
        for task in tasks:
            check_test_tasks(config, task, env_kwargs.get("task_kwargs"))


def bench_main(args: argparse.Namespace) -> int:
    """Run ``growenv bench`` with parsed ``args``; returns the exit status.

    Raises
    ------
    UserError
        For bad input, before any work starts.
    """
    tasks, policies = split_list(args.tasks), split_list(args.policies)
    if not tasks:
        raise UserError(f"--task: expected one or more tasks, got {args.tasks!r}")
    if not policies:
        raise UserError(f"--policy: expected one or more policies, got {args.policies!r}")
    for task in tasks:
        check_task(task)
    seeds = _seeds(args)
    env_kwargs = env_settings(args, task=False)
    if args.oracle:
        _check_oracle(tasks)
    env_kwargs, taken = agent_settings(policies, env_kwargs)
    if taken:
        shown = ", ".join(f"{k}={v!r}" for k, v in taken.items())
        print(
            f"growenv bench: env settings of the agents' runs (config.json): {shown} "
            "(a flag or --env-kwargs overrides them)",
            file=sys.stderr,
        )
    for spec in policies:  # fail before running anything (a PPO file is loaded once here)
        policy = check_policy(spec, env_kwargs)
        if policy_entry(spec).learned:
            _check_agent(spec, policy, tasks, env_kwargs)
    if args.vec == "lockstep":
        check_lockstep(env_kwargs)
        bad = [spec for spec in policies if not policy_entry(spec).lockstep]
        if bad:
            raise UserError(
                f"--vec: expected auto or single for {', '.join(bad)}: lockstep runs only "
                f"policies that read nothing but observations ({', '.join(LOCKSTEP)})"
            )
    if args.address is not None and args.backend != "ray":
        raise UserError(f"--address: expected --backend ray with it, got --backend {args.backend}")
    if args.backend == "ray":
        require_ray()
        if args.address is not None and args.workers is not None:
            raise UserError("--workers: expected --workers (a local Ray) or --address, not both")
    if args.out is not None:
        if args.resume and args.force:
            raise UserError("--resume: expected --resume (finish a bench) or --force, not both")
        with user_input("--out"):
            check_out_dir(args.out, args.force, args.resume)
    elif args.resume:
        raise UserError("--resume: expected --out DIR, the bench to finish")
    else:
        print(
            "growenv bench: no --out: the table is printed, no result files are written",
            file=sys.stderr,
        )
    use_threads(env_kwargs)
    rows = run_bench(
        tasks,
        policies,
        seeds,
        env_kwargs,
        args.workers or (usable_cpus() if args.backend == "ray" else 1),
        args.oracle,
        not args.no_progress,
        vec=args.vec,
        out=args.out,
        resume=args.resume,
        force=args.force,
        backend=args.backend,
        address=args.address,
    )
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
        paths = write_results(args.out, rows, summary, config)
        paths += plot_results(rows, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
