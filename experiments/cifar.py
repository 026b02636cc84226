"""Growth strategies on CIFAR images with growing conv nets: heuristics, learned agents and
static baselines at equal parameters, with seeds and bootstrap confidence intervals.

Usage (defaults: the CIFAR-10 subset in ../shared/data, 5 seeds, 2 workers; about 45 minutes
on a 2-core CPU, training the three agents included):

    OMP_NUM_THREADS=1 python experiments/cifar.py [--data-dir DIR] [--seeds 5] [--workers 2]
    python experiments/cifar.py --full --data-dir ~/data/cifar-10-batches-py --device cuda

What it runs, all on the same seeds and with the same env settings (a GrowingConvNet of three
3x3 conv stages, stride 1, 2, 2, starting at 4 channels each; 12 growth decisions with 50 Adam
steps on augmented minibatches after each; 4 channels per growth; a parameter budget that
every policy shares):

1. every heuristic policy through ``growenv bench`` (greedy, greedy-loss, round-robin, random,
   annealing, BIC, periodic);
2. learned agents (MaskablePPO), trained two ways, each with its training cost recorded:
   (a) ``ppo-digits``: trained on the cheap scikit-learn digits task (MLP with as many hidden
       layers as the conv net has stages, so the agent has seen as many growth sites, and the
       same ``max_sites``, which fixes the observation and action sizes), evaluated on CIFAR
       unchanged: the observation is scale-free and per site;
   (b) ``ppo-cifar``: trained on CIFAR episodes themselves with a small budget, from random
       weights, and ``ppo-digits+cifar``: the digits agent fine-tuned on as many CIFAR
       episodes;
3. static baselines at equal parameters: greedy's final architecture (per seed) trained from
   scratch for as many optimizer steps as an episode (``greedy-arch``), and a plain small CNN
   (3 x conv-ReLU-maxpool, global pooling, linear head) whose width gives about greedy's mean
   parameter count (``small-cnn``).

Writes ``results.csv`` (one row per policy, seed and step), ``summary.json``, ``table.md``
(final test accuracy: IQM and mean with 95% bootstrap CIs over seeds, paired difference to
greedy, parameters, compute = training + statistics + search + evaluation MACs) and
``cifar.png`` (test accuracy vs parameters and vs compute). Trained agents go to
``--agents-dir`` and are reused when present (never overwritten; their training cost is read
back from ``training.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from growenv.harness.baselines import fixed_widths_row, small_cnn_row, small_cnn_width
from growenv.harness.bench import parse_seeds, run_bench
from growenv.harness.plots import plot_task
from growenv.harness.ppo_training import PPOConfig, train
from growenv.harness.summary import (
    check_out_dir,
    final_rows,
    fmt,
    format_paired,
    summarize,
    value,
    write_results,
)

HEURISTICS = ["greedy", "greedy-loss", "round-robin", "random", "annealing", "bic", "periodic"]
SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar-10-subset"

PROFILES: dict[str, dict[str, Any]] = {
    # 2-core CPU, the 6,187-image subset: ~45 min in all (measured parts: docs/experiments/cifar.md)
    "default": {
        "env": {
            "net": "conv",
            "hidden_layers": 3,
            "start_width": 4,
            "max_sites": 4,
            "neurons_per_growth": 4,
            "train_steps": 50,
            "batch_size": 64,
            "max_steps": 12,
            "max_params": 6000,
            "augment": True,
        },
        "cheap": {"timesteps": 30_000, "n_envs": 32, "max_params": 3000, "train_steps": 25},
        "cifar": {"timesteps": 768, "n_envs": 2, "n_steps": 48, "batch_size": 48},
    },
    # full CIFAR-10 (50,000 / 10,000 images) on one GPU
    "full": {
        "env": {
            "net": "conv",
            "hidden_layers": 4,
            "start_width": 8,
            "max_sites": 4,
            "neurons_per_growth": 16,
            "train_steps": 400,
            "batch_size": 128,
            "max_steps": 20,
            "max_params": 400_000,
            "augment": True,
        },
        "cheap": {"timesteps": 100_000, "n_envs": 64, "max_params": 6000, "train_steps": 25},
        "cifar": {"timesteps": 4_096, "n_envs": 4, "n_steps": 128, "batch_size": 128},
    },
    # seconds: the end-to-end test on a tiny archive
    "smoke": {
        "env": {
            "net": "conv",
            "hidden_layers": 2,
            "start_width": 2,
            "max_sites": 4,
            "neurons_per_growth": 2,
            "train_steps": 2,
            "batch_size": 16,
            "max_steps": 2,
            "max_params": 2000,
            "augment": True,
        },
        "cheap": {"timesteps": 64, "n_envs": 4, "max_params": 3000, "train_steps": 2},
        "cifar": {"timesteps": 8, "n_envs": 2, "n_steps": 4, "batch_size": 8},
    },
}


def cifar_env_kwargs(profile: dict[str, Any], data_dir: str | None, device: str) -> dict:
    """GrowthEnv settings of the CIFAR episodes (without ``task``)."""
    return {**profile["env"], "task_kwargs": {"data_dir": data_dir}, "device": device}


def cheap_env_kwargs(profile: dict[str, Any]) -> dict:
    """Digits (MLP) episodes for agent (a): as many hidden layers (= growth sites) as the conv
    net has stages and the same ``max_sites``, so observations and actions line up."""
    env = profile["env"]
    return {
        "task": "digits",
        "hidden_layers": env["hidden_layers"],
        "start_width": 1,
        "max_sites": env["max_sites"],
        "neurons_per_growth": 4,
        "train_steps": profile["cheap"]["train_steps"],
        "max_steps": env["max_steps"],
        "max_params": profile["cheap"]["max_params"],
    }


def train_agent(
    path: Path, config: PPOConfig, label: str, init_from: Path | None = None
) -> dict[str, Any]:
    """Train into ``path`` (from ``init_from``'s weights if given) unless a trained agent is
    already there; return its cost."""
    if (path / "model.zip").exists():
        print(f"[{label}] reusing the agent in {path}", flush=True)
    else:
        print(f"[{label}] training {config.total_timesteps} env steps ...", flush=True)
        train(config, path, progress_bar=sys.stderr.isatty(), init_from=init_from)
    cost = json.loads((path / "training.json").read_text())
    saved = json.loads((path / "config.json").read_text())
    extra = {"init_from": cost["init_from"]} if "init_from" in cost else {}
    return {
        **extra,
        "path": str(path),
        "seconds": cost["seconds"],
        "timesteps": cost["timesteps"],
        "n_envs": saved["n_envs"],
        "vec": saved["vec"],
        "env_kwargs": saved["env_kwargs"],
    }


def baseline_rows(env_kwargs: dict, seeds: list[int], greedy_rows: list[dict]) -> list[dict]:
    """greedy's final architecture from scratch, and a plain CNN of greedy's mean size."""
    finals = final_rows(greedy_rows)[("cifar10", "greedy")]
    kwargs = {**env_kwargs, "task": "cifar10"}
    rows = []
    for s in seeds:
        rows.append(fixed_widths_row(kwargs, s, finals[s]["widths"], policy="greedy-arch"))
    target = float(np.mean([value(finals[s], "params") for s in seeds]))
    width = small_cnn_width(target, 3, 10)
    rows += [small_cnn_row(kwargs, s, width) for s in seeds]
    return rows


def accuracy_table(rows: list[dict], summary: dict, policies: list[str]) -> str:
    """Final test accuracy per policy: IQM and mean with 95% CIs (from ``summary``, as
    :func:`~growenv.harness.summary.summarize` gives it for ``rows``), paired Δ to greedy."""
    summary = summary["cifar10"]
    finals = final_rows(rows)
    greedy = {s: value(r, "test_accuracy") for s, r in finals[("cifar10", "greedy")].items()}
    lines = [
        "| policy | n | test acc IQM [95% CI] | test acc mean [95% CI] | "
        "Δ acc vs greedy: mean [95% CI] | Δ acc vs greedy: IQM [95% CI] | params | "
        "compute (MACs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for policy in policies:
        m = summary[policy]["metrics"]
        acc = m["test_accuracy"]
        iqm_ci = f"{acc['iqm']:.3f} [{acc['ci_iqm'][0]:.3f}, {acc['ci_iqm'][1]:.3f}]"
        mean_ci = f"{acc['mean']:.3f} [{acc['ci_mean'][0]:.3f}, {acc['ci_mean'][1]:.3f}]"
        if policy == "greedy":
            d_mean = d_iqm = "-"
        else:
            mine = {s: value(r, "test_accuracy") for s, r in finals[("cifar10", policy)].items()}
            d_mean = format_paired(mine, greedy, "mean")
            d_iqm = format_paired(mine, greedy, "iqm")
        lines.append(
            f"| {policy} | {summary[policy]['n']} | {iqm_ci} | {mean_ci} | {d_mean} | {d_iqm} | "
            f"{m['params']['mean']:.0f} | {fmt(m['compute']['mean'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        default=os.environ.get("GROWENV_DATA") or (str(SUBSET) if SUBSET.exists() else None),
        help="CIFAR-10 in the official python layout (default: GROWENV_DATA, else the subset "
        "in ../shared/data/cifar-10-subset)",
    )
    p.add_argument("--seeds", default="5", help="N (0..N-1), A-B or a,b,c (default 5)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device of the CIFAR episodes")
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--full", action="store_true", help="same as --profile full (GPU, CIFAR-10)")
    p.add_argument("--out", default=None, help="default results/cifar (results/cifar_<profile>)")
    p.add_argument("--agents-dir", default=None, help="default <out>_agents; reused if present")
    p.add_argument("--skip-ppo", action="store_true", help="heuristics and baselines only")
    p.add_argument("--force", action="store_true", help="overwrite results in a non-empty --out")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error(
            "--data-dir: no CIFAR-10 data found (GROWENV_DATA is unset and there is no "
            "../shared/data/cifar-10-subset); see docs/experiments/cifar.md"
        )
    if args.full:
        args.profile = "full"
    name = "cifar" if args.profile == "default" else f"cifar_{args.profile}"
    out = Path(args.out or f"results/{name}")
    agents_dir = Path(args.agents_dir or f"{out}_agents")
    from growenv.data.tasks import cifar10

    try:
        check_out_dir(out, args.force)
        seeds = parse_seeds(args.seeds)
        task = cifar10(args.data_dir, flatten=False)  # a missing or bad file fails here
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        p.error(str(err))
    profile = PROFILES[args.profile]
    env_kwargs = cifar_env_kwargs(profile, args.data_dir, args.device)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    rows = run_bench(["cifar10"], HEURISTICS, seeds, env_kwargs, args.workers, vec="single")
    timings["heuristics"] = time.perf_counter() - t0
    policies = list(HEURISTICS)
    agents: dict[str, dict[str, Any]] = {}
    if not args.skip_ppo:
        cheap = PPOConfig(
            env_kwargs=cheap_env_kwargs(profile),
            total_timesteps=profile["cheap"]["timesteps"],
            n_envs=profile["cheap"]["n_envs"],
            vec="lockstep",
            eval_every=0,
            checkpoint_every=10**9,
        )
        agents["ppo-digits"] = train_agent(agents_dir / "ppo_digits", cheap, "ppo-digits")
        cifar_cfg = profile["cifar"]
        on_cifar = PPOConfig(
            env_kwargs={**env_kwargs, "task": "cifar10"},
            total_timesteps=cifar_cfg["timesteps"],
            n_envs=cifar_cfg["n_envs"],
            vec="subproc",
            n_steps=cifar_cfg["n_steps"],
            n_epochs=10,
            batch_size=cifar_cfg["batch_size"],
            device="cpu",
            seed=10_000,  # episodes other than the evaluation seeds
            eval_every=0,
            checkpoint_every=10**9,
        )
        agents["ppo-cifar"] = train_agent(agents_dir / "ppo_cifar", on_cifar, "ppo-cifar")
        agents["ppo-digits+cifar"] = train_agent(
            agents_dir / "ppo_digits_cifar",
            on_cifar,
            "ppo-digits+cifar",
            init_from=agents_dir / "ppo_digits",
        )
        t0 = time.perf_counter()
        for label, agent in agents.items():
            spec = f"ppo:{Path(agent['path']) / 'model.zip'}"
            found = run_bench(["cifar10"], [spec], seeds, env_kwargs, args.workers, vec="single")
            for row in found:
                row["policy"] = label
                rows.append(row)
            policies.append(label)
        timings["ppo evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    greedy_rows = [r for r in rows if r["policy"] == "greedy"]
    rows += baseline_rows(env_kwargs, seeds, greedy_rows)
    policies += ["greedy-arch", "small-cnn"]
    timings["baselines"] = time.perf_counter() - t0
    timings["total (this run)"] = time.perf_counter() - t_start

    summary = summarize(rows)
    table = accuracy_table(rows, summary, policies)
    n_train, n_test = len(task.train) + len(task.val) + len(task.stats), len(task.test)
    data_name = "CIFAR-10" if n_train >= 50_000 else "CIFAR-10 subset"
    header = (
        f"{data_name} ({n_train:,} train / {n_test:,} test images), {len(seeds)} seeds; "
        f"final test accuracy after {profile['env']['max_steps']} growth decisions"
    )
    costs = "\n".join(
        f"- {label}: {a['timesteps']} env steps ({a['vec']}, {a['n_envs']} envs), "
        f"{a['seconds']:.0f} s of training"
        + (" (fine-tuning ppo-digits)" if "init_from" in a else "")
        for label, a in agents.items()
    )
    text = f"{header}\n\n{table}\n"
    if costs:
        text += f"\nTraining cost of the learned agents:\n{costs}\n"
    text += "\nWall time of this run: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    print("\n" + text)
    config = {
        "profile": args.profile,
        "env_kwargs": env_kwargs,
        "seeds": seeds,
        "policies": policies,
        "agents": agents,
        "timings_seconds": timings,
        "data": header,
    }
    paths = write_results(out, rows, summary, config, force=args.force)
    (out / "table.md").write_text(text + "\n")
    labels = {p: p for p in policies}
    plot = plot_task(
        rows,
        out / "cifar.png",
        ys=["test_accuracy"],
        xs=("params", "compute"),
        title=f"{data_name}: mean over {len(seeds)} seeds, 95% bootstrap band",
        labels=labels,
    )
    print("\nwrote " + ", ".join(str(x) for x in [*paths, out / "table.md", plot]))
    return 0


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    raise SystemExit(run_main(main, "cifar.py"))
