"""Every hand-written growth policy on the default teacher-student task, plus the oracle.

Policies (``growenv.policies``): ``greedy`` (TINY MaxEigenValue), ``greedy-loss`` (AmplitudeFactor),
``round-robin`` (Naive), ``random``, ``bic`` (Douka et al.'s BIC criterion), ``annealing``
(Metropolis acceptance of random proposals) and ``periodic`` (every site every 4 steps), all
with their default settings. The task is the default teacher (20 -> 50 -> 50 -> 1, SELU,
skip from the input to the second hidden state, 4,701 parameters); the student starts at
width 1 and grows 4 neurons per step. The **oracle** trains the teacher's own architecture
from a fresh initialisation for as many optimizer steps as a full episode
(``train_steps * (max_steps + 1)``): the reference Douka et al. compare growth with (they
report growth costing 1.7x the oracle's energy).

Usage::

    python experiments/policies_teacher.py [--seeds 10] [--workers 2] [--out DIR] [--force]

Prints a markdown table (final test loss with mean, IQM and 95 % bootstrap CIs over seeds,
paired difference to greedy, parameters, compute and compute relative to the oracle) and
writes ``results.csv``, ``summary.json`` and ``policies_teacher.png`` under ``--out``
(default ``results/policies_teacher``; refuses a non-empty directory without ``--force``).
About 1 minute with the defaults on 2 idle CPU cores (3-4 minutes when the cores are
busy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from growenv.harness.bench import parse_seeds, run_bench  # noqa: E402
from growenv.harness.plots import plot_task  # noqa: E402
from growenv.harness.summary import check_out_dir, fmt, summarize, write_results  # noqa: E402
from growenv.policies import POLICIES as REGISTRY  # noqa: E402

# every hand-written policy of the registry, in its order
POLICIES = tuple(name for name, entry in REGISTRY.items() if not entry.learned)


def _ci(stats: dict, key: str = "mean") -> str:
    low, high = stats["ci_mean" if key == "mean" else "ci_iqm"]
    return f"{fmt(stats[key])} [{fmt(low)}, {fmt(high)}]"


def table(summary: dict) -> str:
    """Markdown table of the final metrics per policy (the oracle last)."""
    cols = [
        "policy",
        "n",
        "test loss: mean [95% CI]",
        "test loss: IQM [95% CI]",
        "Δ test loss vs greedy [95% CI]",
        "params",
        "compute (MACs)",
        "compute / oracle",
    ]
    oracle = summary.get("oracle", {}).get("metrics", {}).get("compute", {}).get("mean")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for policy, entry in summary.items():
        m = entry["metrics"]
        d = m["test_loss"]["diff_to_reference"]
        compute = m["compute"]["mean"]
        cells = [
            policy,
            str(entry["n"]),
            _ci(m["test_loss"]),
            _ci(m["test_loss"], "iqm"),
            "-" if d is None else f"{fmt(d['diff'])} [{fmt(d['low'])}, {fmt(d['high'])}]",
            fmt(m["params"]["mean"]),
            fmt(compute),
            "-" if not oracle else f"{compute / oracle:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="10", help="N, A-B or a,b,c (default 10)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--out", default="results/policies_teacher")
    parser.add_argument("--force", action="store_true", help="overwrite results in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_out_dir(args.out, args.force)
        seeds = parse_seeds(args.seeds)
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]

    env_kwargs = {"train_steps": args.train_steps, "max_steps": args.max_steps}
    start = time.perf_counter()
    rows = run_bench(
        ["teacher_student"],
        policies,
        seeds,
        env_kwargs,
        workers=args.workers,
        oracle=True,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    summary = summarize(rows, reference="greedy")
    config = {"seeds": seeds, "env_kwargs": env_kwargs, "policies": policies, "oracle": True}
    paths = write_results(args.out, rows, summary, config, force=args.force)
    paths.append(
        plot_task(
            rows,
            Path(args.out) / "policies_teacher.png",
            title=f"teacher-student: mean over {len(seeds)} seeds, 95% bootstrap band; "
            "star: oracle (teacher architecture from scratch)",
        )
    )
    print(
        f"teacher_student (default teacher, 4,701 parameters), train_steps={args.train_steps}, "
        f"max_steps={args.max_steps}, 4 neurons per growth, {len(seeds)} seeds\n"
    )
    print(table(summary["teacher_student"]))
    print(f"\nrun time {seconds:.0f} s with {args.workers} workers; wrote")
    print("\n".join(f"  {p}" for p in paths))
    return 0


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(run_main(main, "policies_teacher.py"))
