"""One DAG growth decision over the whole search space: growenv vs gromo 0.1.0, side by side.

Setting: the paper's teacher-student task (``make_task("teacher_student")``: teacher 20 -> 50
-> 50 -> 1, SELU, skip from the input to the second hidden state; 2,048 train, 1,024 stats
(gromo's dev set), 1,024 val samples). Graphs (float32, the same weights in both libraries,
checked by comparing outputs):

* ``grown``: grown from the empty graph by ``--grow-steps`` growenv decisions (10 neurons);
* ``student``: ``in -> h1 (10) -> out`` with a skip ``in -> out``, trained for 300 Adam steps
  (the shape the paper's students reach mid-run).

One decision, per library:

* **growenv**: statistics on the train split (``bottleneck``: one forward+backward, every
  solve), every expansion's candidate with 10 neurons (clipped to the rank), every
  candidate's gamma search on the val split (:func:`amplitude_search_many`, the default
  32-point grid), the best by the val loss at its gamma.
* **growenv, fitted** (``fit="nonlinear"``): the same, with every new node's and widening's
  10 neurons fitted to its residual with the activation (the paper's objective; Gauss-Newton
  steps from the statistics pass's samples, :mod:`growenv.nets.dag.neuron_fit`).
* **gromo**: its whole-space step with its defaults (``neurons=10`` as the paper;
  ``neuron_epochs=100``, ``neuron_lrate=1e-3``, ``neuron_batch_size=256``): every action of
  ``dag.define_next_actions()``, ``dag.calculate_bottleneck`` on the train split, each
  action's neurons (or edge) trained by AdamW on the bottleneck, its amplitude factor by
  ``find_amplitude_factor`` (line search on the dev split), ``Expansion.evaluate`` (train,
  dev, val), ``choose_growth_best_action`` (least val loss). gromo 0.1.0's
  ``execute_expansions(amplitude_factor=True)`` raises ``UnboundLocalError`` (it discards
  ``find_amplitude_factor``'s return value), so the bench calls, per action,
  ``execute_expansions([a], amplitude_factor=False, evaluate=False)`` then those same public
  methods in the order ``execute_expansions`` intends. gromo keeps every candidate in one
  graph at once; with two unrelated hidden nodes ``u``, ``v`` it offers both ``u -> v`` and
  ``v -> u`` and its ``extended_forward`` then fails on the cycle (``NetworkXUnfeasible``), so
  the bench removes each candidate after evaluating it (``Expansion.delete``) and picks the
  least val loss itself (``choose_growth_best_action``'s rule; its clean-up is not timed).

Timing: ``--rounds`` rounds; in each, both libraries decide on each graph, in alternating
order (ABBA over rounds); the median per library and the ratio of medians are reported. The
statistics-vs-plain ratio alternates ``--repeats`` calls of ``dag_statistics`` and of a plain
forward + ``loss.backward()`` (weight gradients) on the same net and train batch, per round;
the median of the per-round ratios of medians is reported.

Usage::

    python experiments/bench_dag.py [--rounds 3] [--threads 1] [--repeats 21]
        [--out results/bench_dag.json] [--force] [--quick]

``--quick``: 256 train / 256 val samples, 1 round, 3 repeats, growenv only (a smoke test in
seconds, not a measurement). ``--no-gromo``: growenv and the statistics ratio only.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from growenv.data.tasks import make_task
from growenv.nets.dag import (
    IN,
    OUT,
    GrowingDAG,
    amplitude_search_many,
    apply_growth,
    bottleneck,
    dag_statistics,
)

NEURONS = 10


# ------------------------------------------------------------------------------ data
def load_task(quick: bool):
    kw = {"n_train": 256, "n_stats": 256, "n_val": 256, "n_test": 16} if quick else {}
    task = make_task("teacher_student", **kw)
    return {
        "train": (task.train.x, task.train.y),
        "dev": (task.stats.x, task.stats.y),
        "val": (task.val.x, task.val.y),
    }


# --------------------------------------------------------------------------- growenv
def growenv_decision(
    net: GrowingDAG, data: dict, neurons: int = NEURONS, fit: str = "tiny"
) -> dict:
    """Statistics, every solve (``fit="nonlinear"``: and every neuron fit), every gamma
    search, the best by the held-out loss."""
    x, y = data["train"]
    xv, yv = data["val"]
    kw = {"fit": "nonlinear", "neurons": neurons} if fit == "nonlinear" else {}
    report = bottleneck(net, x, y, **kw)
    cands = [e.candidate(neurons) for e in report.expansions]
    results = amplitude_search_many(net, cands, xv, yv)
    losses = torch.stack([r.losses.min() for r in results])
    best = int(torch.argmin(losses))
    return {
        "report": report,
        "candidates": cands,
        "results": results,
        "best": best,
        "key": report.expansions[best].key,
        "gamma": float(results[best].gamma),
        "val_loss": float(losses[best]),
        "num_candidates": len(cands),
    }


def grown_graph(data: dict, steps: int, seed: int = 0) -> GrowingDAG:
    torch.manual_seed(seed)
    net = GrowingDAG(20, 1)
    for _ in range(steps):
        d = growenv_decision(net, data)
        apply_growth(net, d["candidates"][d["best"]], d["gamma"])
    return net


def student_graph(data: dict, steps: int = 300, seed: int = 0) -> GrowingDAG:
    g = torch.Generator().manual_seed(seed)
    net = GrowingDAG(20, 1, {"h1": 10}, [(IN, "h1"), ("h1", OUT), (IN, OUT)], generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = data["train"]
    for i in range(steps):
        b = slice((i * 256) % x.shape[0], (i * 256) % x.shape[0] + 256)
        opt.zero_grad()
        ((net(x[b]) - y[b]) ** 2).sum(-1).mean().backward()
        opt.step()
    return net


# ----------------------------------------------------------------------------- gromo
def to_gromo(net: GrowingDAG, epochs: int | None = None):
    """gromo's ``GrowingGraphNetwork`` with ``net``'s graph and weights (outputs checked).

    gromo puts a bias on edges (``use_bias``; none on a new node's out-edge): node ``v``'s
    bias goes to its first biased in-edge, the others get zero.
    """
    from gromo.containers.growing_graph_network import GrowingGraphNetwork

    kw = {} if epochs is None else {"neuron_epochs": epochs}
    g = GrowingGraphNetwork(net.in_features, net.out_features, torch.nn.MSELoss(), NEURONS, **kw)
    dag = g.dag
    name = {IN: dag.root, OUT: dag.end}
    name.update({v: str(i + 1) for i, v in enumerate(net.hidden_nodes)})
    if (IN, OUT) not in net.edges:
        dag.remove_edge(dag.root, dag.end)
    todo = [e for e in net.edges if e != (IN, OUT)]
    for v in net.hidden_nodes:  # topological order: v's first in-edge source exists
        u = net.in_edges(v)[0]
        t = net.out_edges(v)[0]
        attrs = {"type": "linear", "size": net.nodes[v], "activation": "selu"}
        dag.add_node_with_two_edges(name[u], name[v], name[t], node_attributes=attrs)
        todo = [e for e in todo if e not in ((u, v), (v, t))]
    for u, v in todo:
        dag.add_direct_edge(name[u], name[v])
    with torch.no_grad():
        for v in list(net.nodes)[1:]:
            biased = False
            for u in net.in_edges(v):
                m = dag.get_edge_module(name[u], name[v])
                m.layer.weight.copy_(net.weight(u, v))
                if m.layer.bias is not None:
                    m.layer.bias.copy_(net.bias(v) if not biased else 0.0)
                    biased = True
            if not biased and bool(net.bias(v).any()):
                raise ValueError(f"node {v!r}: no biased in-edge in gromo for its bias")
    x = torch.randn(64, net.in_features)
    with torch.no_grad():
        torch.testing.assert_close(g(x), net(x), rtol=1e-4, atol=1e-5)
    return g


def _loader(split, batch_size: int = 256):
    ds = torch.utils.data.TensorDataset(*split)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


def gromo_decision(g, data: dict) -> dict:
    """gromo's whole-space decision (see the module docstring)."""
    train, dev, val = (_loader(data[k], g.neuron_batch_size) for k in ("train", "dev", "val"))
    dag = g.dag
    actions = dag.define_next_actions()
    bott, inputs = dag.calculate_bottleneck(actions, train, loss_fn=g.loss_fn)
    for a in actions:
        g.execute_expansions([a], bott, inputs, amplitude_factor=False, evaluate=False)
        if a.metrics.get("skip", False):
            continue
        mask = {"nodes": [a.expanding_node], "edges": a.new_edges}
        factor = g.find_amplitude_factor(dev, mask)
        g.set_scaling_factor(factor)
        a.metrics["scaling_factor"] = factor
        a.evaluate(dag, train, dev, val, g.loss_fn)
        a.delete()  # all candidates in one graph can close a cycle (module docstring)
    evaluated = [a for a in actions if "loss_val" in a.metrics]
    c = min(evaluated, key=lambda a: a.metrics["loss_val"])  # choose_growth_best_action's rule
    return {
        "key": (str(c.type), c.previous_nodes, c.expanding_node, c.next_nodes),
        "val_loss": float(c.metrics["loss_val"]),
        "num_candidates": len(actions),
        "steps_per_candidate": g.neuron_epochs * len(train),
    }


# ---------------------------------------------------------------------- stats / plain
def plain_pass(net: GrowingDAG, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    ((net(x) - y) ** 2).sum().backward()


def stats_pass(net: GrowingDAG, x: torch.Tensor, y: torch.Tensor) -> None:
    dag_statistics(net, x, y)


def macs(net: GrowingDAG, n: int) -> dict:
    """Multiply-adds of one plain forward+backward and of the statistics pass."""
    p = net.macs()
    d = sum(w for v, w in net.nodes.items() if v != OUT) + 1  # X = [activations; 1]
    o = sum(w for v, w in net.nodes.items() if v != IN)  # V: every pre-activation
    plain = 3 * n * p  # forward, grad wrt inputs, grad wrt weights
    # forward + backward to every pre-activation (no weight gradients; the first edge out of
    # `in` needs none either, ignored here) + X^T X + X^T G
    stats = 2 * n * p + n * d * d + n * d * o
    return {"plain": plain, "statistics": stats, "ratio": stats / plain, "D+1": d, "O": o}


# -------------------------------------------------------------------------- harness
def clock(fn, *args):
    """``(seconds, fn(*args))``."""
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = load_task(args.quick)
    graphs = {
        "grown": grown_graph(data, args.grow_steps),
        "student": student_graph(data, 50 if args.quick else 300),
    }
    load_before = os.getloadavg()
    out: dict = {"machine": machine(), "quick": args.quick, "rounds": args.rounds, "graphs": {}}
    for gname, net in graphs.items():
        times: dict[str, list[float]] = {"growenv": [], "growenv-fit": []}
        if args.gromo:
            times["gromo"] = []
        ratios: list[float] = []
        decisions: dict = {}
        x, y = data["train"]
        for r in range(args.rounds):
            order = ["growenv", "growenv-fit", "gromo"]
            order = [lib for lib in (order if r % 2 == 0 else order[::-1]) if lib in times]
            for lib in order:
                if lib.startswith("growenv"):
                    fit = "nonlinear" if lib == "growenv-fit" else "tiny"
                    sec, box = clock(growenv_decision, net, data, NEURONS, fit)
                    times[lib].append(sec)
                    decisions[lib] = {k: box[k] for k in ("key", "gamma", "val_loss")}
                    decisions[lib]["num_candidates"] = box["num_candidates"]
                else:
                    g = to_gromo(copy.deepcopy(net))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        sec, box = clock(gromo_decision, g, data)
                    times[lib].append(sec)
                    decisions[lib] = {k: str(v) if k == "key" else v for k, v in box.items()}
            plain, stats = [], []
            for i in range(args.repeats):
                pair = [(plain, plain_pass), (stats, stats_pass)]
                for acc, fn in pair if i % 2 == 0 else pair[::-1]:
                    acc.append(clock(fn, net, x, y)[0])
            ratios.append(statistics.median(stats) / statistics.median(plain))
        med = {k: statistics.median(v) for k, v in times.items()}
        out["graphs"][gname] = {
            "describe": net.describe(),
            "decisions": decisions,
            "seconds": times,
            "median_seconds": med,
            "gromo_over_growenv": med["gromo"] / med["growenv"] if args.gromo else None,
            "gromo_over_growenv_fit": med["gromo"] / med["growenv-fit"] if args.gromo else None,
            "statistics_over_plain": statistics.median(ratios),
            "statistics_over_plain_per_round": ratios,
            "macs": macs(net, x.shape[0]),
        }
        print(f"--- {gname}\n{net.describe()}", flush=True)
        line = f"growenv {med['growenv'] * 1e3:.1f} ms ({decisions['growenv']['num_candidates']} "
        line += f"candidates), fitted {med['growenv-fit'] * 1e3:.1f} ms"
        if args.gromo:
            line += (
                f", gromo {med['gromo']:.2f} s ({decisions['gromo']['num_candidates']}"
                f" candidates): {med['gromo'] / med['growenv']:.0f}x, "
                f"{med['gromo'] / med['growenv-fit']:.0f}x fitted"
            )
        print(f"{line}; statistics / plain {statistics.median(ratios):.2f}", flush=True)
    out["loadavg_before"], out["loadavg_after"] = load_before, os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=21, help="statistics/plain calls per round")
    p.add_argument("--grow-steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/bench_dag.json"))
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--quick", action="store_true", help="seconds; a smoke test, not a bench")
    p.add_argument("--no-gromo", action="store_true", help="growenv and statistics only")
    args = p.parse_args(argv)
    args.gromo = not (args.quick or args.no_gromo)
    if args.quick:
        args.rounds, args.repeats = 1, 3
    if args.out.exists() and not args.force:
        p.error(f"--out {args.out} exists (use --force to overwrite)")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_dag.py")
