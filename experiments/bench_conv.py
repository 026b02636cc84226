"""Conv TINY statistics + solve: growenv vs gromo (the TINY authors' code), time and memory.

Cases (same weights and data for every implementation; SELU; batch 128; 3x3 kernels):

* ``pair``: one CIFAR-sized layer pair, 16 -> 16 -> 16 channels on 32x32 maps, padding 1,
  then average pooling and a linear head (10 outputs).
* ``net``: a whole small net, 3 x 32 x 32 images -> 16 -> 16 -> 32 (stride 2) -> 32
  (stride 2) -> pooled linear head (10).

Implementations, each run in its own subprocess, ``--rounds`` times interleaved (the ratio to
the plain pass is taken per round and the median over rounds reported; gromo runs in the
first round only). Per process, time = median of the timed repeats after an untimed warm-up
on 2 images that loads every kernel and one untimed full-batch call (the first full-size
allocations page-fault: the plain pass's first calls take up to 2x longer); memory = peak
RSS growth over the RSS after the 2-image warm-up, i.e. the extra memory of a full-batch
call, from ``getrusage(RUSAGE_SELF).ru_maxrss``:

* ``plain``: forward + ``MSELoss(sum).backward()`` of the same layers (weight gradients),
* ``growenv``: ``growenv.nets.conv.growth.conv_bottleneck`` (one forward+backward to the
  pre-activations, the statistics of every layer and site, the solve of every site),
* ``gromo``: its protocol for every layer (``init_computation``, forward,
  ``loss.backward()``, ``update_computation``, ``compute_optimal_updates``), with its
  ``FullConv2dGrowingModule`` (or ``RestrictedConv2dGrowingModule``); its mask tensor is
  built in the warm-up and cached; ``--gromo-repeats`` timed calls.

``growenv`` gets the 128 images as one batch, so it takes the projected route (``N`` from the
residual gradient, no cross term ``C``); ``growenv (batch_size=B)`` streams them in batches
of B (same statistics, with ``P`` and ``C``).

Targets (full kernel, pair, on the 2-core CPU): growenv <= 3x plain, >= 20x faster than
gromo, <= 1/10 of gromo's extra peak memory.

Usage::

    python experiments/bench_conv.py [--cases pair net] [--kernels full restricted]
        [--repeats 7] [--rounds 3] [--gromo-repeats 1] [--threads N]
        [--malloc default|keep] [--interleave CALLS] [--train-steps K]
        [--out results/bench_conv.json] [--force]

``--interleave CALLS`` adds, per round, one process that alternates the plain pass and
growenv (ABBA, ``CALLS`` each): the same drift of the machine's speed for both, a steadier
ratio (time only). Use it with ``--malloc keep``: with glibc's defaults each pass page-faults
in what the other freed, which slows the plain pass more than when it runs alone.
``--train-steps K`` adds, per round, one process that runs the statistics pass as a growth
run does: ``--repeats`` cycles of K plain passes (training steps) then one growenv call, the
ratio of their medians (the heap of a training process: with glibc's defaults, the plain
passes page-fault there too).

On shared cores, OpenMP/MKL threads that wait for a descheduled peer make every kernel
slow (the more kernels, the worse): compare implementations at the same ``--threads``.
With glibc's default malloc, large freed blocks go back to the OS and every call
page-faults its temporaries back in; ``--malloc keep`` keeps them in every worker (plain,
growenv and gromo alike), as PyTorch's CPU tuning advice does with jemalloc or tcmalloc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_VS_PLAIN = 3.0
TARGET_SPEEDUP = 20.0
TARGET_MEMORY = 0.1
BATCH = 128

# name -> (in channels, image size, [(out channels, stride)], out features)
CASES = {
    "pair": (16, 32, [(16, 1), (16, 1)], 10),
    "net": (3, 32, [(16, 1), (16, 1), (32, 2), (32, 2)], 10),
}


def make_problem(case: str, seed: int = 0):
    """Weights (conv and head), images and targets, from a seeded generator."""
    c_in, size, stages, out = CASES[case]
    g = torch.Generator().manual_seed(seed)
    params, fan_in = [], c_in
    for c, _ in stages:
        bound = 1.0 / (fan_in * 9) ** 0.5
        params.append(((torch.rand(c, fan_in, 3, 3, generator=g) * 2 - 1) * bound, torch.zeros(c)))
        fan_in = c
    params.append((torch.randn(out, fan_in, generator=g) / fan_in**0.5, torch.zeros(out)))
    x = torch.randn(BATCH, c_in, size, size, generator=g)
    y = torch.randn(BATCH, out, generator=g)
    return params, x, y


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------- implementations
def plain_step(case: str, params, x, y):
    _, _, stages, _ = CASES[case]
    weights = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for w, b in params]

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        h = xb
        for (w, b), (_, stride) in zip(weights[:-1], stages, strict=True):
            h = F.selu(F.conv2d(h, w, b, stride, 1))
        out = F.linear(h.mean((-2, -1)), *weights[-1])
        loss = nn.functional.mse_loss(out, yb, reduction="sum")
        for w, b in weights:
            w.grad = b.grad = None
        loss.backward()

    return step


def growenv_step(case: str, params, x, y, kernel: str, batch_size: int | None = None):
    from growenv.nets.conv.growth import conv_bottleneck
    from growenv.nets.conv.net import GrowingConvNet

    c_in, size, stages, out = CASES[case]
    net = GrowingConvNet(
        c_in, [c for c, _ in stages], out, 3, [s for _, s in stages], 1, None, "selu", size
    )
    with torch.no_grad():
        for (w, b), pw, pb in zip(params, net.weights, net.biases, strict=True):
            pw.copy_(w)
            pb.copy_(b)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        report = conv_bottleneck(net, xb, yb, kernel=kernel, batch_size=batch_size)
        float(report.sites[0].first_order_gain)  # results on the host

    return step


def gromo_step(case: str, params, x, y, kernel: str):
    from gromo.modules import conv2d_growing_module as gm

    _, _, stages, out = CASES[case]
    cls = gm.FullConv2dGrowingModule if kernel == "full" else gm.RestrictedConv2dGrowingModule
    layers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, ((w, b), (_, stride)) in enumerate(zip(params[:-1], stages, strict=True)):
            layer = cls(
                w.shape[1], w.shape[0], 3, stride=stride, padding=1,
                post_layer_function=nn.SELU(), previous_module=layers[-1] if layers else None,
                name=f"conv{i}",
            )  # fmt: skip
            with torch.no_grad():
                layer.layer.weight.copy_(w)
                layer.layer.bias.copy_(b)
            if layers:
                layers[-1].next_module = layer
            layers.append(layer)
    head = nn.Linear(params[-1][0].shape[1], out)
    with torch.no_grad():
        head.weight.copy_(params[-1][0])
        head.bias.copy_(params[-1][1])
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for layer in layers:
                layer.init_computation()
            model.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb, reduction="sum")
            loss.backward()
            for layer in layers:
                layer.update_computation()
            for layer in layers:
                layer.compute_optimal_updates()
            float(layers[-1].first_order_improvement)
            for layer in layers:
                layer.reset_computation()

    return step


def _one_process(case: str, kernel: str, schedule: list[list[str]]) -> dict:
    """Run in a subprocess: the plain pass and growenv in one process, in the order
    ``schedule`` gives (one list of names per cycle), every call timed; the ratio of their
    medians. No memory figures: they share the process."""
    params, x, y = make_problem(case)
    steps = {
        "plain": plain_step(case, params, x, y),
        "growenv": growenv_step(case, params, x, y, kernel),
    }
    for step in steps.values():
        step(x[:2], y[:2])
        step(x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for cycle in schedule:
        for name in cycle:
            t0 = time.perf_counter()
            steps[name](x, y)
            times[name].append(time.perf_counter() - t0)
    plain, ours = statistics.median(times["plain"]), statistics.median(times["growenv"])
    return {
        "plain_seconds": plain,
        "growenv_seconds": ours,
        "ratio": ours / plain,
        "calls": len(schedule),
    }


def interleaved_worker(case: str, kernel: str, calls: int) -> dict:
    """The plain pass and growenv alternating ABBA, ``calls`` each, in one process.

    Both see the same heap and the same drift of the machine's speed, so their ratio is
    steadier than across processes.
    """
    order = ["plain", "growenv"]
    return _one_process(case, kernel, [order if i % 2 == 0 else order[::-1] for i in range(calls)])


def training_worker(case: str, kernel: str, cycles: int, steps: int) -> dict:
    """The statistics pass as a training run uses it: ``cycles`` times, ``steps`` plain
    passes (training steps), then one growenv call, in one process.

    The heap is the one a training process has: with glibc's defaults, the plain passes
    page-fault too (a process that only ever runs one of them keeps a luckier layout).
    """
    return _one_process(case, kernel, [["plain"] * steps + ["growenv"]] * cycles)


def worker(case: str, impl: str, kernel: str, repeats: int) -> dict:
    """Run in a subprocess: set up, measure the extra peak memory and the time of one call."""
    if impl == "interleaved":
        return interleaved_worker(case, kernel, repeats)
    if impl.startswith("training@"):
        return training_worker(case, kernel, repeats, int(impl.split("@")[1]))
    params, x, y = make_problem(case)
    if impl == "plain":
        step = plain_step(case, params, x, y)
    elif impl.startswith("growenv"):
        batch_size = int(impl.split("@")[1]) if "@" in impl else None
        step = growenv_step(case, params, x, y, kernel, batch_size)
    else:
        step = gromo_step(case, params, x, y, kernel)
    t0 = time.perf_counter()
    step(x[:2], y[:2])  # one-time set-up (kernels, gromo's cached mask tensor) on 2 images
    first = time.perf_counter() - t0
    base = rss_mb()
    if repeats > 1:  # one untimed full-batch call: the allocator's first page faults
        step(x, y)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "all_seconds": times,
        "warmup_seconds_2_images": first,
        "extra_peak_mb": rss_mb() - base,
        "threads": torch.get_num_threads(),
    }


# glibc malloc settings that keep freed memory in the process (``--malloc keep``): by default
# glibc unmaps large freed blocks and trims the heap, so every call page-faults its
# temporaries back in (zeroed by the kernel); PyTorch's CPU tuning guides recommend an
# allocator that keeps them (jemalloc, tcmalloc) or these settings
KEEP_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
}


def run_worker(
    case: str, impl: str, kernel: str, repeats: int, threads: int | None, malloc: str = "default"
) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, impl, kernel, str(repeats)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, **(KEEP_FREED_MEMORY if malloc == "keep" else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {case}/{impl}/{kernel} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rounds_summary(rs: list[dict]) -> str:
    """``R x plain (rounds: ...; plain T s, growenv T s)`` of one-process runs."""
    by_round = ", ".join(f"{r['ratio']:.2f}" for r in rs)
    plain = statistics.median(r["plain_seconds"] for r in rs)
    ours = statistics.median(r["growenv_seconds"] for r in rs)
    return (
        f"{statistics.median(r['ratio'] for r in rs):.2f}x plain (rounds: {by_round}; "
        f"plain {plain:.3f} s, growenv {ours:.3f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--kernels", nargs="+", default=["full"], choices=["full", "restricted"])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls (plain, growenv)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every implementation this many times, interleaved (gromo: once)",
    )
    parser.add_argument("--gromo-repeats", type=int, default=1)
    parser.add_argument("--skip-gromo", action="store_true")
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        help="also time plain and growenv alternately in one process (ABBA), this many "
        "calls each, once per round (0: no)",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="also time growenv inside a training loop: in one process, cycles of this many "
        "plain passes then one growenv call (--repeats cycles), once per round (0: no)",
    )
    parser.add_argument(
        "--stream",
        type=int,
        default=32,
        help="also time growenv streamed in batches of this size (0: no)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in every worker (default: torch's)"
    )
    parser.add_argument(
        "--malloc",
        choices=["default", "keep"],
        default="default",
        help="glibc malloc of every worker: its defaults, or keep freed memory (no page "
        "faults on reuse; the same for every implementation)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        case, impl, kernel, repeats = args.worker
        print(json.dumps(worker(case, impl, kernel, int(repeats))))
        return
    if args.out is not None:
        from growenv.harness.summary import check_out_file

        check_out_file(args.out, args.force)
    load_before = os.getloadavg()
    # every implementation runs once per round (its own process each time), plain first:
    # on shared cores the speed drifts by up to 2x within minutes, so each ratio to the
    # plain pass is taken within a round and the median over rounds is reported
    runs: dict[tuple[str, str, str], list[dict]] = {}
    interleaved: dict[tuple[str, str], list[dict]] = {}
    training: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for case in args.cases:
            jobs = [("plain", "-", "plain", args.repeats)]
            for kernel in args.kernels:
                jobs.append(("growenv", kernel, "growenv", args.repeats))
                if args.stream:
                    name = f"growenv (batch_size={args.stream})"
                    jobs.append((name, kernel, f"growenv@{args.stream}", args.repeats))
                if not args.skip_gromo and round_index == 0:  # slow: one round
                    jobs.append(("gromo", kernel, "gromo", args.gromo_repeats))
            for name, kernel, impl, repeats in jobs:
                res = run_worker(case, impl, kernel, repeats, args.threads, args.malloc)
                runs.setdefault((case, name, kernel), []).append(res)
            for kernel in args.kernels if args.interleave else []:
                res = run_worker(
                    case, "interleaved", kernel, args.interleave, args.threads, args.malloc
                )
                interleaved.setdefault((case, kernel), []).append(res)
            for kernel in args.kernels if args.train_steps else []:
                impl = f"training@{args.train_steps}"
                res = run_worker(case, impl, kernel, args.repeats, args.threads, args.malloc)
                training.setdefault((case, kernel), []).append(res)
    results = []
    for (case, name, kernel), rs in runs.items():
        plain = runs[(case, "plain", "-")]
        ratios = [r["seconds"] / p["seconds"] for r, p in zip(rs, plain, strict=False)]
        results.append(
            {
                "case": case,
                "impl": name,
                "kernel": kernel,
                "seconds": statistics.median(r["seconds"] for r in rs),
                "vs_plain": statistics.median(ratios),
                "vs_plain_by_round": ratios,
                "extra_peak_mb": statistics.median(r["extra_peak_mb"] for r in rs),
                "rounds": rs,
            }
        )
    by = {(r["case"], r["impl"], r["kernel"]): r for r in results}
    rows = [
        "| case | implementation | kernel | time (s) | x plain fwd+bwd | extra peak memory (MB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['case']} | {r['impl']} | {r['kernel']} | {r['seconds']:.3f} "
            f"| {r['vs_plain']:.2f} | {r['extra_peak_mb']:.0f} |"
        )
    checks = []
    for case in args.cases:
        for kernel in args.kernels:
            ours = by[(case, "growenv", kernel)]
            by_round = ", ".join(f"{v:.2f}" for v in ours["vs_plain_by_round"])
            line = (
                f"{case}/{kernel}: growenv = {ours['vs_plain']:.2f}x plain (rounds: {by_round}; "
                f"target <= {TARGET_VS_PLAIN:g})"
            )
            ref = by.get((case, "gromo", kernel))
            if ref is not None:
                speedup = ref["seconds"] / ours["seconds"]
                mem = ours["extra_peak_mb"] / max(ref["extra_peak_mb"], 1e-9)
                line += (
                    f", {speedup:.0f}x faster than gromo (target >= {TARGET_SPEEDUP:g}), "
                    f"{mem:.3f} of gromo's extra peak memory (target <= {TARGET_MEMORY:g})"
                )
            checks.append(line)
            if (case, kernel) in interleaved:
                rs = interleaved[(case, kernel)]
                checks.append(
                    f"{case}/{kernel}, one process, ABBA ({rs[0]['calls']} calls each): growenv "
                    f"= " + _rounds_summary(rs)
                )
            if (case, kernel) in training:
                rs = training[(case, kernel)]
                checks.append(
                    f"{case}/{kernel}, in a training loop ({args.train_steps} plain passes, "
                    f"then growenv; {rs[0]['calls']} cycles): growenv = " + _rounds_summary(rs)
                )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, malloc {args.malloc}; "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print("\n".join(rows))
    print()
    print("\n".join(checks))
    print(f"\nmachine: {machine}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "results": results,
            "interleaved": [
                {"case": case, "kernel": kernel, "rounds": rs}
                for (case, kernel), rs in interleaved.items()
            ],
            "training": [
                {"case": case, "kernel": kernel, "steps": args.train_steps, "rounds": rs}
                for (case, kernel), rs in training.items()
            ],
            "checks": checks,
            "machine": machine,
        }
        args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_conv.py")
