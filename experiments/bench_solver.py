"""Time one full TINY growth step, growenv against gromo (the TINY authors' code).

A growth step is: the statistics pass over the batch, the solve for every site (best update
and new neurons), then the amplitude search for the best site's candidate. Both libraries
run on the same net (gromo's weights copied into growenv) and the same data; a plain
``loss.backward()`` of the summed MSE on the same net and batch is the reference.

gromo has no amplitude search for its GrowingMLP; the step uses its ``line_search``
(``gromo.utils.utils``) over ``set_scaling_factor`` + ``extended_forward`` exactly as its
``GrowingGraphNetwork.find_amplitude_factor`` does (>= 101 full forward passes with a host
read each, against growenv's 32 amplitudes evaluated in one batched pass).

Usage::

    python experiments/bench_solver.py [--device cpu|cuda] [--repeats 5] [--cases a b]
                                       [--out results/bench_solver.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import growenv  # noqa: E402
from growenv.harness.summary import check_out_file  # noqa: E402
from growenv.nets.mlp.report import solve  # noqa: E402

TARGET_SPEEDUP = 3.0  # growenv's full step at least 3x faster than gromo's
TARGET_STATS_RATIO = 1.5  # statistics pass at most 1.5x a plain forward+backward


@dataclass(frozen=True)
class Case:
    """A benchmark problem: ``samples`` rows, ``in -> hidden x depth -> out``."""

    name: str
    samples: int
    in_features: int
    hidden: int
    depth: int
    out_features: int

    @property
    def label(self) -> str:
        return (
            f"{self.name}: n={self.samples} {self.in_features}->"
            f"{self.hidden}x{self.depth}->{self.out_features}"
        )


CASES = {
    "a": Case("a", 8192, 64, 32, 3, 10),
    "b": Case("b", 8192, 64, 256, 3, 10),
}


class Timer:
    """Wall-clock laps, synchronising CUDA at every lap."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.laps: dict[str, float] = {}
        self._sync()
        self._last = time.perf_counter()

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def lap(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + 1e3 * (now - self._last)
        self._last = now


def median_laps(
    steps: dict[str, Callable[[Timer], None]],
    device: torch.device,
    repeats: int,
    warmup: int,
    rewarm: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """Median of every lap (ms) of every step, after ``warmup`` untimed rounds.

    The steps run interleaved (one of each per round), so that load changes on a shared
    machine hit all of them alike; the cheap steps named in ``rewarm`` run once untimed just
    before their timed run, so that each is timed in its own steady state (caches and
    allocator), not right after another workload.
    """
    for _ in range(warmup):
        for step in steps.values():
            step(Timer(device))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if name in rewarm:
                step(Timer(device))
            timer = Timer(device)
            step(timer)
            timer.laps["total"] = sum(timer.laps.values())
            runs[name].append(timer.laps)
    return {
        name: {key: statistics.median(run[key] for run in laps) for key in laps[0]}
        for name, laps in runs.items()
    }


def make_problem(case: Case, device: torch.device, seed: int):
    """gromo's GrowingMLP, a growenv net with the same weights, and teacher data."""
    from gromo.containers.growing_mlp import GrowingMLP as GromoMLP

    torch.manual_seed(seed)
    gromo_net = GromoMLP(
        case.in_features,
        case.out_features,
        case.hidden,
        case.depth,
        activation=nn.SELU(),
        device=device,
    )
    net = growenv.GrowingMLP(
        case.in_features, [case.hidden] * case.depth, case.out_features, device=device
    )
    with torch.no_grad():
        for l, layer in enumerate(gromo_net.layers):
            net.weights[l].copy_(layer.weight)
            net.biases[l].copy_(layer.bias)
    x = torch.randn(case.samples, case.in_features, device=device)
    teacher = torch.randn(case.in_features, case.out_features, device=device)
    y = torch.tanh(2 * x @ teacher / case.in_features**0.5)
    y = y + 0.1 * torch.randn_like(y)
    return gromo_net, net, x, y


def growenv_step(net: growenv.GrowingMLP, x: torch.Tensor, y: torch.Tensor, timer: Timer) -> None:
    """Statistics, solve of every site, amplitude search for the best site's candidate.

    Equal to ``growenv.bottleneck`` (statistics + solve) followed by the search, split in
    laps.
    """
    stats = growenv.compute_statistics(net, x, y, loss="mse")
    timer.lap("statistics")
    sites, _ = solve(stats, net.slope0, widths=net.hidden_widths)
    timer.lap("solve")
    best = int(torch.stack([s.first_order_gain for s in sites]).argmax())
    result = growenv.amplitude_search(net, sites[best].candidate(), x, y, loss="mse")
    float(result.gamma)  # the chosen amplitude reaches the host, as gromo's does
    timer.lap("amplitude")


def gromo_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: Timer) -> int:
    """gromo's statistics, ``compute_optimal_updates``, best layer and line search.

    Returns the number of loss evaluations of the line search.
    """
    from gromo.utils.utils import line_search

    loss_fn = nn.MSELoss(reduction="sum")
    n = x.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.init_computation()
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        model.update_computation()
        timer.lap("statistics")
        model.compute_optimal_updates()
        model.reset_computation()
        model.select_best_update()
        timer.lap("solve")
        evaluations = 0

        def simulate_loss(factor: float) -> float:
            nonlocal evaluations
            evaluations += 1
            model.set_scaling_factor(factor)
            with torch.no_grad():
                return loss_fn(model.extended_forward(x), y).item() / n

        line_search(simulate_loss)
        timer.lap("amplitude")
        for layer in model.layers:  # back to the unmodified net for the next repeat
            layer.delete_update()
    return evaluations


def fwd_bwd_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, timer: Timer) -> None:
    """The reference: forward, summed MSE, ``loss.backward()`` (parameter gradients)."""
    net.zero_grad(set_to_none=True)
    loss = (net(x) - y).pow(2).sum()
    loss.backward()
    timer.lap("fwd_bwd")


def run_case(case: Case, device: torch.device, repeats: int, warmup: int, seed: int) -> dict:
    gromo_net, net, x, y = make_problem(case, device, seed)
    evaluations = gromo_step(gromo_net, x, y, Timer(device))
    steps = {
        "growenv": lambda t: growenv_step(net, x, y, t),
        "fwd_bwd": lambda t: fwd_bwd_step(net, x, y, t),
        "gromo": lambda t: gromo_step(gromo_net, x, y, t),
    }
    laps = median_laps(steps, device, repeats, warmup, rewarm=("growenv", "fwd_bwd"))
    ge, gr, fb = laps["growenv"], laps["gromo"], laps["fwd_bwd"]
    return {
        "case": case.label,
        "growenv_stats_ms": ge["statistics"],
        "growenv_solve_ms": ge["solve"],
        "growenv_amplitude_ms": ge["amplitude"],
        "growenv_step_ms": ge["total"],
        "gromo_stats_ms": gr["statistics"],
        "gromo_solve_ms": gr["solve"],
        "gromo_amplitude_ms": gr["amplitude"],
        "gromo_line_search_evaluations": evaluations,
        "gromo_step_ms": gr["total"],
        "speedup": gr["total"] / ge["total"],
        "speedup_without_amplitude": (gr["statistics"] + gr["solve"])
        / (ge["statistics"] + ge["solve"]),
        "fwd_bwd_ms": fb["fwd_bwd"],
        "stats_over_fwd_bwd": ge["statistics"] / fb["fwd_bwd"],
    }


def print_tables(rows: list[dict]) -> None:
    head = (
        f"{'case':<32} {'growenv stats':>13} {'growenv step':>12} {'gromo step':>10} "
        f"{'speedup':>7} {'fwd+bwd':>8} {'stats/fwd+bwd':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['case']:<32} {r['growenv_stats_ms']:>13.2f} {r['growenv_step_ms']:>12.2f} "
            f"{r['gromo_step_ms']:>10.2f} {r['speedup']:>6.1f}x {r['fwd_bwd_ms']:>8.2f} "
            f"{r['stats_over_fwd_bwd']:>12.2f}x"
        )
    print(
        f"targets: speedup >= {TARGET_SPEEDUP:.0f}x, stats/fwd+bwd <= {TARGET_STATS_RATIO}x"
        " (all times ms, medians)"
    )
    print()
    head = (
        f"{'breakdown (ms)':<32} {'stats':>8} {'solve':>8} {'amplitude':>10}   "
        f"{'gromo stats':>11} {'solve':>8} {'line search':>11} {'(evals)':>7}   "
        f"{'speedup w/o amplitude':>21}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['case']:<32} {r['growenv_stats_ms']:>8.2f} {r['growenv_solve_ms']:>8.2f} "
            f"{r['growenv_amplitude_ms']:>10.2f}   {r['gromo_stats_ms']:>11.2f} "
            f"{r['gromo_solve_ms']:>8.2f} {r['gromo_amplitude_ms']:>11.2f} "
            f"{r['gromo_line_search_evaluations']:>7d}   "
            f"{r['speedup_without_amplitude']:>20.2f}x"
        )
    print(
        "gromo: statistics = its init/update_computation protocol after loss.backward(); "
        "solve = compute_optimal_updates on every layer + select_best_update; line search = "
        "gromo.utils.utils.line_search over set_scaling_factor + extended_forward (no "
        "GrowingMLP method exists for it)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)
    if args.out is not None:
        check_out_file(args.out, args.force)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {name}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} after {args.warmup} warm-up runs"
    )
    rows = [run_case(CASES[c], device, args.repeats, args.warmup, args.seed) for c in args.cases]
    print_tables(rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "device": name, "threads": torch.get_num_threads()}
        meta.update(repeats=args.repeats, cases={c: asdict(CASES[c]) for c in args.cases})
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_solver.py")
