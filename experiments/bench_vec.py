"""Env steps per second: LockstepVecEnv vs SB3 DummyVecEnv / SubprocVecEnv over GrowthEnv.

Usage: python experiments/bench_vec.py [--envs 1,8,32,128] [--steps 4] [--device cpu]
       python experiments/bench_vec.py --envs 8,32 --env-kwargs '{"net": "dag"}' --actions best
       (DAG fits of the chosen expansions only: '{"net": "dag", "fit_scope": "chosen"}')

Same GrowthEnv config for every backend (the default task unless --env-kwargs), the same
action rule (``fixed``: grow site 0, grow site 1, skip, in turn, where valid; ``best``: the
valid slot of the largest estimated gain twice, then skip, so DAGs grow). Prints a markdown table
and a breakdown of one lockstep step by phase (wall time, and the episodes' multiply-adds per
decision by phase: with DAG ``fit_scope="chosen"`` the fits are a phase of their own, with
``"all"`` they are inside ``statistics``). SubprocVecEnv runs one process per env, so it
is skipped above --max-subproc envs (memory: one torch import per process).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from growenv.harness.summary import check_out_file


def _actions(masks: np.ndarray, t: int) -> np.ndarray:
    wanted = [0, 1, masks.shape[1] - 2][t % 3]
    return np.where(masks[:, wanted], wanted, masks.shape[1] - 2)


def _best_actions(masks: np.ndarray, gains: list[np.ndarray], t: int) -> np.ndarray:
    skip = masks.shape[1] - 2
    acts = np.full(len(masks), skip)
    if t % 3 == 2:
        return acts
    for e, (m, g) in enumerate(zip(masks, gains, strict=True)):
        valid = np.flatnonzero(m[:skip])
        if len(valid):
            acts[e] = valid[np.argmax(g[valid])]
    return acts


def _masks(venv) -> np.ndarray:
    return np.stack(venv.env_method("action_masks"))


def _choose(venv, t: int, rule: str) -> np.ndarray:
    masks = _masks(venv)
    if rule == "fixed":
        return _actions(masks, t)
    return _best_actions(masks, [ep.gains for ep in venv.get_attr("episode")], t)


def _time(venv, steps: int, warmup: int, device: torch.device, rule: str = "fixed") -> float:
    venv.reset()
    for t in range(warmup):
        venv.step(_choose(venv, t, rule))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(steps):
        venv.step(_choose(venv, warmup + t, rule))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return venv.num_envs * steps / (time.perf_counter() - start)


def _make(kind: str, n: int, env_kwargs: dict, device: str):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from growenv.env.growth_env import GrowthEnv
    from growenv.env.lockstep import LockstepVecEnv

    if kind == "lockstep":
        return LockstepVecEnv(n, seed=0, device=device, **env_kwargs)

    def factory():
        import torch as _torch

        if kind == "subproc":
            _torch.set_num_threads(1)
        return GrowthEnv(device=device, **env_kwargs)

    venv = (DummyVecEnv if kind == "dummy" else SubprocVecEnv)([factory] * n)
    venv.seed(0)
    return venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="1,8,32,128")
    parser.add_argument("--steps", type=int, default=4, help="timed vector steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-subproc", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--env-kwargs", default="{}")
    parser.add_argument(
        "--actions", default="fixed", choices=("fixed", "best"), help="the action rule"
    )
    parser.add_argument("--out", default=None, help="write the table as JSON")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args()
    if args.out:
        check_out_file(args.out, args.force)
    env_kwargs = json.loads(args.env_kwargs)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.envs.split(",")]
    kinds = ["lockstep", "dummy"] + (["subproc"] if device.type == "cpu" else [])
    rows = []
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {device}; env kwargs {env_kwargs or 'defaults'}"
    )
    print(
        "| envs | lockstep steps/s | DummyVecEnv steps/s | SubprocVecEnv steps/s | "
        "lockstep / Dummy | lockstep / Subproc |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        rates = {}
        for kind in kinds:
            if kind == "subproc" and n > args.max_subproc:
                continue
            venv = _make(kind, n, env_kwargs, args.device)
            steps = args.steps if kind == "lockstep" else max(1, min(args.steps, 512 // n))
            rates[kind] = _time(venv, steps, args.warmup, device, args.actions)
            venv.close()
        d, s = rates.get("dummy"), rates.get("subproc")
        lock = rates["lockstep"]
        print(
            f"| {n} | {lock:.1f} | {d:.1f} | {s:.1f} | {lock / d:.1f}x | {lock / s:.1f}x |"
            if s
            else f"| {n} | {lock:.1f} | {d:.1f} | - | {lock / d:.1f}x | - |"
        )
        rows.append({"envs": n, **rates})
    # breakdown of the largest lockstep run
    from growenv.env.lockstep import LockstepVecEnv

    n = sizes[-1]
    vec = LockstepVecEnv(n, seed=0, device=args.device, **env_kwargs)
    vec.reset()
    for key in vec.seconds:
        vec.seconds[key] = 0.0
    start = time.perf_counter()
    for t in range(args.steps):
        vec.step(_choose(vec, t, args.actions))
    total = time.perf_counter() - start
    phases = {k: v / args.steps * 1e3 for k, v in vec.seconds.items()}
    phases["bookkeeping"] = total / args.steps * 1e3 - sum(phases.values())
    print(
        f"lockstep step breakdown at {n} envs (ms per vector step, resets included): "
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
    )
    decisions = sum(env.step_count for env in vec.envs)
    macs: dict[str, float] = {}
    for env in vec.envs:  # this episode's (an env that finished counts its new episode only)
        for k, v in env.compute_by_phase.items():
            macs[k] = macs.get(k, 0.0) + v / max(decisions, 1)
    print(
        "multiply-adds per decision by phase (the episodes' cost model, reset included): "
        + ", ".join(f"{k} {v:.3g}" for k, v in macs.items())
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"rates": rows, "breakdown_ms": phases, "macs_per_decision": macs}, f, indent=1
            )


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_vec.py")
