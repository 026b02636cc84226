"""Scaling of ``growenv bench --backend ray``: the same 64-episode bench on 1 and 2 local Ray
workers, beside the local backend, and where the per-job overhead is.

Usage: python experiments/bench_ray_scaling.py [--seeds 64] [--workers 1,2] [--json FILE]

The bench: teacher-student, policy greedy-loss (it queries the env, so every episode is one
job: 64 independent jobs), 6 growth steps of 20 optimizer steps each. For each worker count
the script times (a) the local backend (``--workers N`` processes) and (b) a fresh local Ray
of N CPUs: its start-up (``ray.init``) and the bench. It then measures the per-job overheads
on a warm Ray of one CPU: a no-op task's round trip (dispatch + result), a first job in
this process (env construction; imports already done) against a warm one, and the size of one
job's result rows. Prints a
markdown table (docs/distributed.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import time

from growenv.harness.bench import BenchJob, run_bench, run_job

TASK = "teacher_student"
POLICY = "greedy-loss"
ENV = {"train_steps": 20, "max_steps": 6}


def _noop(i: int) -> int:
    return i


def _bench(seeds: list[int], workers: int, backend: str) -> float:
    start = time.perf_counter()
    run_bench([TASK], [POLICY], seeds, ENV, workers=workers, progress=False, backend=backend)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args()
    import ray

    seeds = list(range(args.seeds))
    rows = []
    for n in (int(w) for w in args.workers.split(",")):
        local = _bench(seeds, n, "local")
        t0 = time.perf_counter()
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        on_ray = _bench(seeds, n, "ray")
        ray.shutdown()
        rows.append({"workers": n, "local_s": local, "ray_startup_s": startup, "ray_s": on_ray})
        print(f"workers={n}: local {local:.1f} s, Ray start {startup:.1f} s + bench {on_ray:.1f} s")

    # per-job overheads on a warm one-CPU Ray
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get(noop.remote(0))  # warm the worker
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(200)])
    dispatch = (time.perf_counter() - t0) / 200
    ray.shutdown()
    job = BenchJob(TASK, POLICY, (0,))
    t0 = time.perf_counter()
    result = run_job(job, ENV)  # first job here: env construction (torch, growenv imported)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_job(BenchJob(TASK, POLICY, (1,)), ENV)  # env reused (the worker's cache)
    warm = time.perf_counter() - t0
    overhead = {
        "task_round_trip_ms": 1e3 * dispatch,
        "first_job_s": first,
        "warm_job_s": warm,
        "result_bytes": len(pickle.dumps(result)),
    }
    load = os.getloadavg()
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after the runs)"
    )
    print(f"bench: {args.seeds} episodes of {POLICY} on {TASK}, {ENV}")
    print()
    print("| workers | local backend (s) | Ray start-up (s) | Ray bench (s) | Ray speed-up |")
    print("|---|---|---|---|---|")
    base = rows[0]["ray_s"]
    for r in rows:
        print(
            f"| {r['workers']} | {r['local_s']:.1f} | {r['ray_startup_s']:.1f} | "
            f"{r['ray_s']:.1f} | {base / r['ray_s']:.2f}x |"
        )
    print()
    print(
        f"per job: Ray task round trip {overhead['task_round_trip_ms']:.2f} ms (no-op, warm), "
        f"first job in this process {overhead['first_job_s']:.2f} s (env built; imports done), "
        f"warm job {overhead['warm_job_s']:.2f} s, result {overhead['result_bytes']} bytes"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": rows, "overhead": overhead, "load": load, "env": ENV}, f, indent=2)


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "bench_ray_scaling.py")
