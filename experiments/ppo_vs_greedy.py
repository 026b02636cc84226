"""Learned growth (MaskablePPO) vs greedy vs random on held-out tasks, at equal budgets.

Usage: OMP_NUM_THREADS=1 python experiments/ppo_vs_greedy.py [--timesteps 60000] [--seeds 20]
       python experiments/ppo_vs_greedy.py --model results/ppo_vs_greedy/agent --out DIR
       (reuse a trained agent; an --out that holds results is refused without --force)

1. Trains MaskablePPO on the teacher-student distribution (a new teacher every episode:
   depth 2, widths 10-80, teacher seeds < 10^6) in a LockstepVecEnv, unless --model is given.
2. Evaluates the agent, greedy (TINY MaxEigenValue) and random growth, each on the same
   seeds, with the same env settings (12 decisions, 25 optimizer steps after each, 4 neurons
   per growth, a parameter budget) on held-out tasks:
   - held-out teachers: teacher seeds >= 10^6 (never seen), same size range;
   - unseen sizes: teacher seeds >= 10^6, depth 2-3, widths 80-160;
   - multi-sin (2 inputs, 10 classes; with the slides' 50 inputs no growth strategy gets
     above chance with this budget, see experiments/strategies_multisin.py);
   - scikit-learn digits (larger budget: 64 inputs).
3. Prints final validation/test loss per policy (mean, IQM, 95% bootstrap CI over seeds) and
   the paired difference to greedy (IQM and mean, with 95% bootstrap CIs); saves
   results.csv, summary.json and a plot of test loss vs parameters.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from growenv.harness.bench import run_bench
from growenv.harness.ppo_training import DEFAULT_ENV_KWARGS, PPOConfig, train
from growenv.harness.stats import bootstrap_ci, iqm
from growenv.harness.summary import check_out_dir, check_out_file, format_paired, write_results
from growenv.policies.ppo import MODEL_FILE, run_settings

HELD_OUT = list(range(10**6, 10**6 + 10_000))
TABLE_FILE, PLOT_FILE = "table.md", "test_loss_vs_params.png"  # under --out, beside eval/
SETTINGS = {
    "held-out teachers": {
        "task": "teacher_student_distribution",
        "task_kwargs": {"seeds": HELD_OUT},
    },
    "unseen sizes": {
        "task": "teacher_student_distribution",
        "task_kwargs": {"seeds": HELD_OUT, "depth": [2, 3], "width": [80, 160]},
    },
    "multi-sin": {"task": "multi_sin", "task_kwargs": {"in_features": 2}},
    "digits": {"task": "digits", "max_params": 3000},
}


def evaluate(model: Path, seeds: list[int], policies: list[str]) -> list[dict]:
    """Every policy on the agent's own env settings (its run's config.json), with the
    last model of the run (``model.zip``; ``ppo:RUN`` would load the best checkpoint, chosen
    on teachers 10^6.., which overlap HELD_OUT)."""
    rows = []
    saved = (run_settings(model) or {}).get("env_kwargs", DEFAULT_ENV_KWARGS)
    skip = ("task", "task_kwargs", "device", "threads")
    base = {k: v for k, v in saved.items() if k not in skip}
    agent = model / MODEL_FILE if model.is_dir() else model
    for name, setting in SETTINGS.items():
        kwargs = {**base, **setting}
        task = kwargs.pop("task")
        specs = [f"ppo:{agent}" if p == "ppo" else p for p in policies]
        for row in run_bench([task], specs, seeds, kwargs, progress=False, vec="lockstep"):
            row["task"] = name
            row["policy"] = "ppo" if row["policy"].startswith("ppo:") else row["policy"]
            rows.append(row)
    return rows


def final_values(rows: list[dict], metric: str) -> dict[tuple[str, str], dict[int, float]]:
    last: dict[tuple[str, str, int], dict] = {}
    for r in rows:
        key = (r["task"], r["policy"], r["seed"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    out: dict[tuple[str, str], dict[int, float]] = {}
    for (task, policy, seed), r in last.items():
        out.setdefault((task, policy), {})[seed] = float(r[metric])
    return out


def table(rows: list[dict], policies: list[str]) -> str:
    val, test = final_values(rows, "val_loss"), final_values(rows, "test_loss")
    params = final_values(rows, "params")
    lines = [
        "| task | policy | n | final val loss: IQM [95% CI] | test loss: mean [95% CI] | "
        "Δ val vs greedy: IQM [95% CI] | Δ val vs greedy: mean [95% CI] | params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in SETTINGS:
        for policy in policies:
            v, t = val[(task, policy)], test[(task, policy)]
            vs = np.array(list(v.values()))
            ts = np.array(list(t.values()))
            ci_v = bootstrap_ci(vs, "iqm")
            ci_t = bootstrap_ci(ts, "mean")
            if policy == "greedy":
                d_iqm = d_mean = "-"
            else:
                g = val[(task, "greedy")]
                d_iqm = format_paired(v, g, "iqm", digits=4)
                d_mean = format_paired(v, g, "mean", digits=4)
            lines.append(
                f"| {task} | {policy} | {len(vs)} | {iqm(vs):.4f} [{ci_v[0]:.4f}, {ci_v[1]:.4f}] "
                f"| {ts.mean():.4f} [{ci_t[0]:.4f}, {ci_t[1]:.4f}] | {d_iqm} | {d_mean} "
                f"| {np.mean(list(params[(task, policy)].values())):.0f} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, policies: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(SETTINGS), 3.4))
    FigureCanvasAgg(fig)
    for i, task in enumerate(SETTINGS):
        ax = fig.add_subplot(1, len(SETTINGS), i + 1)
        for policy in policies:
            sel = [r for r in rows if r["task"] == task and r["policy"] == policy]
            steps = sorted({r["step"] for r in sel})
            p = [np.mean([r["params"] for r in sel if r["step"] == s]) for s in steps]
            loss = [np.mean([r["test_loss"] for r in sel if r["step"] == s]) for s in steps]
            ax.plot(p, loss, marker=".", label=policy)
        ax.set_title(task)
        ax.set_xlabel("parameters (mean over seeds)")
        ax.set_yscale("log")
        if i == 0:
            ax.set_ylabel("test loss")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=PPOConfig.total_timesteps)
    parser.add_argument("--n-envs", type=int, default=PPOConfig.n_envs)
    parser.add_argument("--n-steps", type=int, default=PPOConfig.n_steps, help="per env")
    parser.add_argument("--lr", type=float, default=PPOConfig.learning_rate)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="a trained agent to evaluate instead")
    parser.add_argument("--out", default="results/ppo_vs_greedy")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    # results are never overwritten without --force: checked before training (minutes)
    check_out_dir(out / "eval", args.force)
    for name in (TABLE_FILE, PLOT_FILE):
        check_out_file(out / name, args.force)
    policies = ["ppo", "greedy", "random"]
    if args.model is None:
        config = PPOConfig(
            total_timesteps=args.timesteps,
            n_envs=args.n_envs,
            n_steps=args.n_steps,
            learning_rate=args.lr,
            vec="lockstep",
            seed=args.train_seed,
            eval_every=args.timesteps // 4,
        )
        start = time.perf_counter()
        model = train(config, out / "agent", force=args.force)
        train_seconds = time.perf_counter() - start
        print(f"trained {args.timesteps} steps in {train_seconds:.0f} s -> {model}")
        model_dir = out / "agent"
    else:
        model_dir = Path(args.model)
        train_seconds = json.loads((model_dir / "training.json").read_text())["seconds"]
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    rows = evaluate(model_dir, seeds, policies)
    eval_seconds = time.perf_counter() - start
    text = table(rows, policies)
    print(text)
    print(f"training {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s")
    write_results(
        out / "eval", rows, {}, {"seeds": seeds, "model": str(model_dir)}, force=args.force
    )
    (out / TABLE_FILE).write_text(
        text + f"\n\ntraining {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s\n"
    )
    plot(rows, out / PLOT_FILE, policies)


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "ppo_vs_greedy.py")
