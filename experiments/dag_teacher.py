"""Douka et al. (ESANN 2025)'s teacher-student experiment: DAG students grown from the empty
graph by three strategies, against the teacher's architecture trained from scratch (oracle).

Setting (``make_task("teacher_student", seed=s)``, one teacher and data set per seed ``s``,
shared by every strategy of that seed): teacher 20 -> 50 -> 50 -> 1, SELU, skip from the
input to the second hidden state (4,701 parameters). The paper splits the training data
into three equal parts: *train-opt* (statistics: here the task's ``train`` split), *train-ls*
(amplitude search: ``stats``) and *train-gr* (selection: ``val``), ``--samples`` each;
*inter-train* = train-opt + train-ls; the reported loss is on the noise-free ``test`` split.

Students start from the empty graph (``in``, ``out``, no edge). ``--growths`` times: one
statistics pass on train-opt (:func:`growenv.nets.dag.bottleneck`), the strategy's decision
(:mod:`growenv.policies.dag_strategies`, 10 neurons per growth clipped to the rank), growth
at the chosen amplitude (optimizer state kept), then ``--epochs`` epochs of intermediate
training on inter-train. Strategies: ``whole`` (whole search space), ``restricted``
(bottleneck-restricted space), ``bic_restricted`` (BIC + restricted; no growth when the
BIC would not improve). Oracle: the teacher's graph (``in -> h1 (50) -> h2 (50) -> out``
plus ``in -> h2``; 4,651 parameters: one bias per node, the teacher's skip has its own) from
a random init, ``growths x epochs`` epochs. Optimizer (all runs): Adam, ``lr`` 1e-3,
minibatches of 256 (the paper: SGD, 100 epochs per growth; its learning rate and batch size
are not given; SGD with ``lr`` 0.05 and momentum 0.9 diverged on a grown net whose new
neurons had weights of magnitude ~16, see the docs page). A run whose test loss stops being
finite is marked ``diverged`` and stopped (NaN loss, no compute afterwards; summaries skip
NaN).

Compute (MACs): training ``3 x forward MACs x samples`` per step; decisions by the cost
model of :mod:`growenv.policies.dag_strategies` (statistics, solves, gamma searches,
selection). Energy: ``E [Wh] = MACs x P / R / 3600`` with ``R`` the MAC/s of a dense
float32 256 x 256 matmul on one thread of this CPU (measured at start, best of 5) and ``P``
the per-core power (``--watts-per-core``, default 280 W TDP / 64 cores of an AMD EPYC, the
VM does not name the model). Wall-clock seconds of decisions and training are recorded too.

Usage::

    python experiments/dag_teacher.py [--seeds 10] [--growths 10] [--epochs 50]
        [--samples 1000] [--out results/dag_teacher] [--force] [--quick]
        [--figure docs/figures/dag_teacher.png]

``--quick``: 2 seeds, 2 growths x 2 epochs, 128 samples per split (seconds; a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from growenv.cli.options import int_at_least, positive_int
from growenv.data.tasks import make_task
from growenv.harness.stats import bootstrap_ci, iqm
from growenv.nets.dag import IN, OUT, GrowingDAG, apply_growth, bottleneck, fit_neurons
from growenv.policies import dag_strategies as ds
from growenv.training import evaluate, make_optimizer, train_steps

STRATEGIES = ("whole", "restricted", "bic_restricted")
RUNS = (*STRATEGIES, "oracle")
LABELS = {
    "whole": "whole search space",
    "restricted": "bottleneck restricted",
    "bic_restricted": "BIC + restricted",
    "oracle": "oracle (teacher's graph)",
}
STYLES = {"whole": "-", "restricted": "--", "bic_restricted": ":", "oracle": "-"}
NEURONS = 10
BATCH = 256
OPTIMIZER = {"name": "adam", "lr": 1e-3}


# ----------------------------------------------------------------------- energy model
def dense_macs_per_second(size: int = 256, repeats: int = 5) -> float:
    """MAC/s of a dense float32 ``size^3`` matmul on one thread (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 20)
    return size**3 / best


def watt_hours(macs: float, rate: float, watts: float) -> float:
    """``macs x watts / rate / 3600``: energy of ``macs`` MACs at ``rate`` MAC/s drawing
    ``watts``."""
    return macs * watts / rate / 3600.0


# -------------------------------------------------------------------------- one run
def teacher_graph(generator: torch.Generator) -> GrowingDAG:
    """The teacher's architecture as a DAG, randomly initialised."""
    edges = [(IN, "h1"), ("h1", "h2"), (IN, "h2"), ("h2", OUT)]
    return GrowingDAG(20, 1, {"h1": 50, "h2": 50}, edges, generator=generator)


def _train_epochs(net, opt, inter, test, epochs, gen, curve: dict) -> bool:
    """``epochs`` epochs on ``inter``; appends test loss, params and MACs per epoch. Returns
    False (and sets ``curve["diverged"]``) as soon as the test loss is not finite."""
    x, y = inter
    steps = math.ceil(x.shape[0] / BATCH)
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_steps(net, opt, x, y, "mse", steps, BATCH, gen)
        curve["train_seconds"] += time.perf_counter() - t0
        curve["train_macs"].append(3 * net.macs() * steps * min(BATCH, x.shape[0]))
        curve["test_loss"].append(float(evaluate(net, *test, "mse")[0]))
        curve["params"].append(ds.parameter_count(net))
        if not math.isfinite(curve["test_loss"][-1]):
            curve["diverged"] = True
            return False
    return True


def run_one(strategy: str, seed: int, cfg: dict) -> dict:
    """One student (or the oracle) on the task of ``seed``."""
    task = make_task(
        "teacher_student",
        seed=seed,
        n_train=cfg["samples"],
        n_stats=cfg["samples"],
        n_val=cfg["samples"],
        n_test=cfg["test_samples"],
    )
    opt_split, ls_split, gr_split = (
        (task.train.x, task.train.y),
        (task.stats.x, task.stats.y),
        (task.val.x, task.val.y),
    )
    inter = (torch.cat([task.train.x, task.stats.x]), torch.cat([task.train.y, task.stats.y]))
    test = (task.test.x, task.test.y)
    gen = torch.Generator().manual_seed(seed)
    opt_kw = {k: v for k, v in OPTIMIZER.items() if k != "name"}
    curve: dict[str, Any] = {
        "test_loss": [],
        "params": [],
        "train_macs": [],
        "decision_macs": [],
        "train_seconds": 0.0,
        "decision_seconds": 0.0,
        "decisions": [],
        "diverged": False,
    }
    total = cfg["growths"] * cfg["epochs"]
    if strategy == "oracle":
        net = teacher_graph(gen)
        opt = make_optimizer(net, OPTIMIZER["name"], **opt_kw)
        _train_epochs(net, opt, inter, test, total, gen, curve)
        curve["decision_macs"] = [0] * len(curve["test_loss"])
    else:
        net = GrowingDAG(20, 1)
        opt = make_optimizer(net, OPTIMIZER["name"], **opt_kw)
        decide = ds.STRATEGIES[strategy]
        for step in range(cfg["growths"]):
            t0 = time.perf_counter()
            nonlinear = cfg["fit"] == "nonlinear"
            report = bottleneck(net, *opt_split, keep_samples=nonlinear)
            if nonlinear:  # fit the neurons of the expansions the strategy looks at
                looked = report.expansions
                if strategy != "whole":
                    node = ds.max_bottleneck_node(report)
                    looked = ds.restricted_expansions(net, report, node)
                fit_neurons(net, report, looked, NEURONS, seed=1000 * seed + step)
            # the strategies' cost model counts each looked-at expansion's fit in its solve
            d = decide(net, report, ls_split, gr_split, neurons=NEURONS)
            grown = None
            if d.grows:
                apply_growth(net, d.candidate, d.gamma, opt)
                grown = list(d.expansion.key)
            curve["decision_seconds"] += time.perf_counter() - t0
            lams = [float(e.eigenvalues[0]) for e in report.expansions if e.eigenvalues.numel()]
            curve["decisions"].append(
                {
                    "expansion": grown,
                    "lambda1_max": max(lams, default=0.0),
                    "psi": {v: float(r.bottleneck) for v, r in report.nodes.items()},
                    "neurons": d.candidate.num_neurons if d.grows else 0,
                    "gamma": d.gamma,
                    "select_loss": d.loss,
                    "considered": d.considered,
                    "macs": d.compute.as_dict(),
                    **{k: v for k, v in d.info.items() if isinstance(v, str | float | int)},
                }
            )
            n0 = len(curve["test_loss"])
            ok = _train_epochs(net, opt, inter, test, cfg["epochs"], gen, curve)
            dec = [0] * (len(curve["test_loss"]) - n0)
            dec[0] = d.compute.total
            curve["decision_macs"].extend(dec)
            if not ok:
                break
    missing = total - len(curve["test_loss"])  # after a divergence: NaN loss, no compute
    curve["test_loss"] += [float("nan")] * missing
    curve["params"] += curve["params"][-1:] * missing
    curve["train_macs"] += [0] * missing
    curve["decision_macs"] += [0] * missing
    curve["final_params"] = ds.parameter_count(net)
    curve["final_graph"] = {"nodes": net.nodes, "edges": [list(e) for e in net.edges]}
    return curve


# ---------------------------------------------------------------------------- summary
def _ci(values: list[float]) -> tuple[float, float, float]:
    """IQM and 95 % bootstrap CI of the finite values."""
    v = [x for x in values if math.isfinite(x)]
    lo, hi = bootstrap_ci(v, "iqm")
    return float(iqm(v)), lo, hi


def summarise(results: dict, rate: float, watts: float) -> dict:
    """Per strategy: IQM and 95 % bootstrap CIs over seeds of the final test loss, the final
    parameters and the energy; paired ratios against whole-space and the oracle."""
    seeds = sorted(int(s) for s in results["oracle"])
    rows: dict[str, Any] = {}
    energy: dict[str, dict[int, float]] = {}
    for name in RUNS:
        runs = [results[name][str(s)] for s in seeds]
        macs = [sum(r["train_macs"]) + sum(r["decision_macs"]) for r in runs]
        dec = [sum(r["decision_macs"]) for r in runs]
        wh = [watt_hours(m, rate, watts) for m in macs]
        energy[name] = dict(zip(seeds, wh, strict=True))
        rows[name] = {
            "final_test_loss": _ci([r["test_loss"][-1] for r in runs]),
            "final_params": _ci([r["final_params"] for r in runs]),
            "total_macs": _ci(macs),
            "decision_macs": _ci(dec),
            "energy_wh": _ci(wh),
            "wall_seconds": _ci([r["train_seconds"] + r["decision_seconds"] for r in runs]),
            "growths": _ci([sum(d["expansion"] is not None for d in r["decisions"]) for r in runs]),
            "diverged": sum(r["diverged"] for r in runs),
        }
    wall = {
        name: {s: results[name][str(s)]["train_seconds"] + results[name][str(s)][
            "decision_seconds"] for s in seeds}
        for name in RUNS
    }  # fmt: skip
    ratios, wall_ratios, loss_diffs = {}, {}, {}
    for a, b in (("restricted", "whole"), ("bic_restricted", "whole"), ("whole", "oracle"),
                 ("restricted", "oracle"), ("bic_restricted", "oracle")):  # fmt: skip
        ratios[f"{a}/{b}"] = _ci([energy[a][s] / energy[b][s] for s in seeds])
        wall_ratios[f"{a}/{b}"] = _ci([wall[a][s] / wall[b][s] for s in seeds])
    final = {n: {s: results[n][str(s)]["test_loss"][-1] for s in seeds} for n in RUNS}
    for a, b in (("restricted", "whole"), ("bic_restricted", "whole"), ("oracle", "whole"),
                 ("oracle", "restricted")):  # fmt: skip
        loss_diffs[f"{a} - {b}"] = _ci([final[a][s] - final[b][s] for s in seeds])
    return {
        "seeds": seeds,
        "rows": rows,
        "energy_ratios": ratios,
        "wall_clock_ratios": wall_ratios,
        "test_loss_differences": loss_diffs,
    }


def _fmt(t: tuple[float, float, float], spec: str = ".3g") -> str:
    return f"{t[0]:{spec}} [{t[1]:{spec}}, {t[2]:{spec}}]"


def table(summary: dict) -> str:
    """Markdown table of :func:`summarise` (IQM [95 % CI])."""
    lines = [
        "| run | final test MSE | final params | growths | total MACs | decision MACs | "
        "energy (Wh) | diverged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        r = summary["rows"][name]
        lines.append(
            f"| {LABELS[name]} | {_fmt(r['final_test_loss'], '.4f')} | "
            f"{_fmt(r['final_params'], '.0f')} | {_fmt(r['growths'], '.1f')} | "
            f"{_fmt(r['total_macs'])} | {_fmt(r['decision_macs'])} | "
            f"{_fmt(r['energy_wh'], '.2e')} | {r['diverged']} |"
        )
    lines += ["", "| energy ratio (paired by seed) | IQM [95 % CI] |", "|---|---|"]
    for k, v in summary["energy_ratios"].items():
        lines.append(f"| {k} | {_fmt(v)} |")
    lines += ["", "| wall-clock ratio (paired by seed) | IQM [95 % CI] |", "|---|---|"]
    for k, v in summary["wall_clock_ratios"].items():
        lines.append(f"| {k} | {_fmt(v)} |")
    lines += ["", "| final test MSE difference (paired by seed) | IQM [95 % CI] |", "|---|---|"]
    for k, v in summary["test_loss_differences"].items():
        lines.append(f"| {k} | {_fmt(v, '.4f')} |")
    return "\n".join(lines)


def figure(results: dict, summary: dict, rate: float, watts: float, path: Path) -> None:
    """Test loss, cumulative energy and parameters vs epochs (mean and 95 % bootstrap CI of
    the mean over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    seeds = [str(s) for s in summary["seeds"]]
    for name in RUNS:
        runs = [results[name][s] for s in seeds]
        loss = np.array([r["test_loss"] for r in runs])
        macs = np.array([np.cumsum(np.add(r["train_macs"], r["decision_macs"])) for r in runs])
        wh = watt_hours(macs, rate, watts)
        params = np.array([r["params"] for r in runs])
        epochs = np.arange(1, loss.shape[1] + 1)
        step = max(1, len(epochs) // 100)
        for ax, vals in zip(axes, (loss, wh, params), strict=True):
            idx = np.arange(0, len(epochs), step)
            mean = np.nanmean(vals, 0)
            ci = np.array([bootstrap_ci(vals[:, i], "mean", n_boot=500) for i in idx])
            (line,) = ax.plot(epochs, mean, STYLES[name], label=LABELS[name])
            ax.fill_between(epochs[idx], ci[:, 0], ci[:, 1], alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="training epochs", ylabel="test MSE", yscale="log", title="(a) loss")
    axes[1].set(xlabel="training epochs", ylabel="cumulative energy (Wh)", yscale="log",
                title="(b) cumulative energy (training + growth decisions)")  # fmt: skip
    axes[2].set(xlabel="training epochs", ylabel="parameters", yscale="log",
                title="(c) parameters")  # fmt: skip
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict:
    """All runs, the summary, the files under ``args.out``."""
    torch.set_num_threads(args.threads)
    cfg = {
        "growths": args.growths,
        "epochs": args.epochs,
        "samples": args.samples,
        "test_samples": args.test_samples,
        "fit": args.fit,
    }
    rate = dense_macs_per_second()
    results: dict[str, dict[str, Any]] = {name: {} for name in RUNS}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for name in RUNS:
            results[name][str(seed)] = run_one(name, seed, cfg)
            r = results[name][str(seed)]
            print(
                f"seed {seed} {name:<15} test {r['test_loss'][-1]:.5f} params "
                f"{r['final_params']:>5} decisions {r['decision_seconds']:.1f}s train "
                f"{r['train_seconds']:.1f}s  [{time.perf_counter() - t0:.0f}s]",
                flush=True,
            )
    summary = summarise(results, rate, args.watts_per_core)
    out = {
        "config": {
            **cfg,
            "seeds": args.seeds,
            "neurons": NEURONS,
            "batch_size": BATCH,
            "optimizer": OPTIMIZER,
            "threads": args.threads,
            "watts_per_core": args.watts_per_core,
            "dense_macs_per_second": rate,
            "energy_formula": "Wh = MACs * watts_per_core / dense_macs_per_second / 3600",
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "wall_seconds": time.perf_counter() - t0,
        },
        "summary": summary,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=1))
    (args.out / "table.md").write_text(table(summary) + "\n")
    figure(results, summary, rate, args.watts_per_core, args.figure or args.out / "dag_teacher.png")
    print(table(summary))
    return out


def rebuild(path: Path, figure_path: Path | None) -> dict:
    """Summary, ``table.md`` and figure again from a finished run's ``results.json``."""
    if not path.is_file():
        raise SystemExit(f"--from-results: expected a results.json file, got {str(path)!r}")
    out = json.loads(path.read_text())
    cfg = out["config"]
    rate, watts = cfg["dense_macs_per_second"], cfg["watts_per_core"]
    out["summary"] = summarise(out["results"], rate, watts)
    path.write_text(json.dumps(out, indent=1))
    (path.parent / "table.md").write_text(table(out["summary"]) + "\n")
    figure(
        out["results"], out["summary"], rate, watts, figure_path or path.parent / "dag_teacher.png"
    )
    print(table(out["summary"]))
    return out


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=positive_int, default=10)
    p.add_argument("--growths", type=positive_int, default=10, help="growth steps per student")
    p.add_argument(
        "--epochs", type=positive_int, default=50, help="training epochs after each growth"
    )
    p.add_argument(
        "--samples", type=int_at_least(2), default=1000, help="samples per training split"
    )
    p.add_argument("--test-samples", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--fit",
        choices=("nonlinear", "tiny"),
        default="nonlinear",
        help="new neurons: fitted with the activation (the paper's objective) or TINY's "
        "linearised closed form",
    )
    p.add_argument("--watts-per-core", type=float, default=280.0 / 64)
    p.add_argument("--out", type=Path, default=Path("results/dag_teacher"))
    p.add_argument("--figure", type=Path, default=None, help="default: OUT/dag_teacher.png")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--quick", action="store_true", help="a smoke test in seconds")
    p.add_argument(
        "--from-results",
        type=Path,
        default=None,
        help="rebuild the summary, table and figure of a finished run's results.json",
    )
    args = p.parse_args(argv)
    if args.from_results is not None:
        return rebuild(args.from_results, args.figure)
    if args.quick:
        args.seeds, args.growths, args.epochs = 2, 2, 2
        args.samples, args.test_samples = 128, 128
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        p.error(f"--out {args.out} exists and is not empty (use --force to overwrite)")
    return run(args)


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(lambda: main(sys.argv[1:]), "dag_teacher.py")
