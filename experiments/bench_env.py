"""Time of a GrowthEnv step vs the training it contains, done by hand on the same net.

Usage: python experiments/bench_env.py [--steps 20] [--train-steps 100] [--device cpu]

A step = growth (gamma search + apply) + ``train_steps`` optimizer steps + statistics and
solve + validation. The reference replays the same minibatch training by hand on a copy of
the network (same sizes, same batch size). Target: env step <= 1.3x the training alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch

from growenv.env.growth_env import GrowthEnv
from growenv.harness.summary import check_out_file
from growenv.training import make_optimizer, train_steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="env steps timed")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args()
    if args.out:
        check_out_file(args.out, args.force)
    device = torch.device(args.device)
    env = GrowthEnv(
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        max_steps=args.steps + 1,
        device=device,
    )
    env.reset(seed=0)
    env_times, hand_times = [], []
    gen = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        # alternate growth at the two sites and skips, as a policy would
        action = [0, 1, env.skip_action][step % 3]
        if not env.action_masks()[action]:
            action = env.skip_action
        _sync(device)
        t0 = time.perf_counter()
        env.step(action)
        _sync(device)
        env_times.append(time.perf_counter() - t0)
        # the same training by hand, on a copy of the current network and optimizer
        net = copy.deepcopy(env.net)
        opt = make_optimizer(net, "adam", lr=env.lr)
        task = env.task
        _sync(device)
        t0 = time.perf_counter()
        train_steps(
            net, opt, task.train.x, task.train.y, task.loss, args.train_steps, args.batch_size, gen
        )
        _sync(device)
        hand_times.append(time.perf_counter() - t0)
    env_ms = statistics.median(env_times) * 1e3
    hand_ms = statistics.median(hand_times) * 1e3
    breakdown = {k: v / args.steps * 1e3 for k, v in env.seconds.items()}
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {device}")
    print(f"final architecture: {env.net.layer_sizes}, {env.net.num_parameters()} parameters")
    print("| what | ms per step (median) |")
    print("|---|---|")
    print(
        f"| env step (grow + {args.train_steps} train steps + statistics + solve + val) "
        f"| {env_ms:.1f} |"
    )
    print(f"| the same training by hand | {hand_ms:.1f} |")
    print(f"| ratio (target <= 1.3) | {env_ms / hand_ms:.2f} |")
    print("mean ms per step by phase:", {k: round(v, 2) for k, v in breakdown.items()})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env_ms": env_ms, "hand_ms": hand_ms, "phases_ms": breakdown}, f, indent=1)


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_env.py")
