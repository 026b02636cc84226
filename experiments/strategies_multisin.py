"""Where to grow on multi-sin: the TINY slides' strategy comparison (accuracy vs parameters).

The TINY slides compare three rules for choosing the layer that grows:

* **Naive**: every layer in turn (``round-robin``);
* **MaxEigenValue**: the largest first-order gain ``d + sigma'(0) sum lambda_k^2``
  (``greedy``);
* **AmplitudeFactor**: the largest real loss drop after the amplitude line search
  (``greedy-loss``).

Each grows 4 neurons per step from width 1 (2 hidden layers), trains ``--train-steps``
optimizer steps between growths, for ``--max-steps`` steps, on ``--seeds`` seeds (student
initialisation and minibatches; the data set is fixed).

The task is ``multi_sin`` (``y = argmax_k sin(k * sum_j x_j)``, 10 classes) with
``--in-features 2`` by default: with the builder's default 50 inputs, ``sum_j x_j`` has
standard deviation 7 and the label oscillates so fast in it that a fixed 2 x 128 SELU MLP
trained 2,000 Adam steps on the 4,096 training samples stays at 11-13 % test accuracy
(chance: 10 %; it overfits to 85 % training accuracy), so no strategy could be told apart;
with 2 inputs (std 1.4) the same net reaches ~55 %.

Usage::

    python experiments/strategies_multisin.py [--seeds 10] [--workers 2] [--out DIR] [--force]

Prints a markdown table (final test accuracy and loss with 95 % bootstrap CIs over seeds,
paired differences to MaxEigenValue) and writes ``results.csv``, ``summary.json`` and
``strategies_multisin.png`` (test accuracy and loss vs parameters and compute) under
``--out`` (default ``results/strategies_multisin``; refuses a non-empty directory without
``--force``). About 1 minute with the defaults on 2 idle CPU cores (3-4 minutes when
the cores are busy).
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

STRATEGIES = {"round-robin": "Naive", "greedy": "MaxEigenValue", "greedy-loss": "AmplitudeFactor"}


def _ci(stats: dict, scale: float = 1.0) -> str:
    low, high = stats["ci_mean"]
    return f"{fmt(scale * stats['mean'])} [{fmt(scale * low)}, {fmt(scale * high)}]"


def _diff(stats: dict, scale: float = 1.0) -> str:
    d = stats["diff_to_reference"]
    if d is None:
        return "-"
    return f"{fmt(scale * d['diff'])} [{fmt(scale * d['low'])}, {fmt(scale * d['high'])}]"


def table(summary: dict) -> str:
    """Markdown table of the final metrics per strategy."""
    cols = [
        "strategy (TINY)",
        "policy",
        "n",
        "test acc % [95% CI]",
        "Δ acc vs MaxEigenValue (pts)",
        "test acc IQM %",
        "test loss [95% CI]",
        "params",
        "compute (MACs)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for policy, entry in summary.items():
        m = entry["metrics"]
        acc = m["test_accuracy"]
        cells = [
            STRATEGIES.get(policy, policy),
            policy,
            str(entry["n"]),
            _ci(acc, 100),
            _diff(acc, 100),
            fmt(100 * acc["iqm"]),
            _ci(m["test_loss"]),
            fmt(m["params"]["mean"]),
            fmt(m["compute"]["mean"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="10", help="N, A-B or a,b,c (default 10)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--in-features", type=int, default=2)
    parser.add_argument("--out", default="results/strategies_multisin")
    parser.add_argument("--force", action="store_true", help="overwrite results in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_out_dir(args.out, args.force)
        seeds = parse_seeds(args.seeds)
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))

    env_kwargs = {
        "task_kwargs": {"in_features": args.in_features},
        "train_steps": args.train_steps,
        "max_steps": args.max_steps,
    }
    start = time.perf_counter()
    rows = run_bench(
        ["multi_sin"],
        list(STRATEGIES),
        seeds,
        env_kwargs,
        workers=args.workers,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    summary = summarize(rows, reference="greedy")
    config = {"seeds": seeds, "env_kwargs": env_kwargs, "policies": list(STRATEGIES)}
    paths = write_results(args.out, rows, summary, config, force=args.force)
    paths.append(
        plot_task(
            rows,
            Path(args.out) / "strategies_multisin.png",
            ys=("test_accuracy", "test_loss"),
            title=f"multi-sin ({args.in_features} inputs): where to grow, mean over "
            f"{len(seeds)} seeds, 95% bootstrap band",
            labels={p: f"{name} ({p})" for p, name in STRATEGIES.items()},
        )
    )
    print(
        f"multi_sin, in_features={args.in_features}, train_steps={args.train_steps}, "
        f"max_steps={args.max_steps}, 4 neurons per growth, {len(seeds)} seeds\n"
    )
    print(table(summary["multi_sin"]))
    print(f"\nrun time {seconds:.0f} s with {args.workers} workers; wrote")
    print("\n".join(f"  {p}" for p in paths))
    return 0


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(run_main(main, "strategies_multisin.py"))
