"""Several tests of one learned policy pooled: the test episodes of ``learned_growth.py``
stores, each store's tasks kept apart (issue #23).

Each store's test families are renamed ``<family>@<k>`` (``k`` its position on the command
line), so that a task of one test never meets a task of another; then the episodes are
scored as ``learned_growth.py`` scores one test (each task normalised by the mean of its
heuristics' losses, IQM over the pooled families with a stratified bootstrap, the policy's
difference from each heuristic and its probability of improvement).

Usage::

    python experiments/pooled_tests.py --method lookahead-learned-race-mix \\
        results/learned_growth_v25 results/learned_growth_v26
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learned_growth as lg  # noqa: E402

from growenv.cli.options import positive_int  # noqa: E402

#: The heuristics of v25's and v26's tests.
HEURISTICS = (
    "greedy",
    "round-robin",
    "random",
    "whole-space",
    "restricted",
    "bic-restricted",
    "annealing",
    "lookahead-capped-short",
    "lookahead",
)


def pooled_records(
    stores: Sequence[Path], methods: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The test episodes of ``methods`` in each store, families renamed ``<family>@<k>``,
    and the renamed families."""
    records = []
    for k, store in enumerate(stores):
        for r in lg.load_store(store / "episodes.jsonl"):
            if not lg.is_selection(r["family"]) and r["method"] in methods:
                records.append({**r, "family": f"{r['family']}@{k}"})
    return records, sorted({r["family"] for r in records})


def markdown(summary: dict[str, Any], method: str, heuristics: Sequence[str]) -> str:
    """The pooled IQMs and the method's differences."""
    group = summary["groups"]["all (normalised)"]
    lines = ["| method | IQM [95 % CI] |", "|---|---|"]
    for m, (v, lo, hi) in sorted(group["iqm"].items(), key=lambda kv: kv[1][0]):
        lines.append(f"| {m} | {v:.4f} [{lo:.4f}, {hi:.4f}] |")
    lines += [
        "",
        f"| {method} against | IQM difference [95 % CI] | P(improvement) |",
        "|---|---|---|",
    ]
    for h in heuristics:
        if h in group["difference"]:
            d, p = group["difference"][h], group["probability_of_improvement"][h]
            diff = f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]"
            lines.append(f"| {h} | {diff} | {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="pooled_tests.py", description=__doc__.split("\n\n")[0].strip()
    )
    p.add_argument("stores", type=Path, nargs="+", help="learned_growth.py --out folders")
    p.add_argument("--method", required=True, help="the learned configuration tested")
    p.add_argument("--heuristics", default=",".join(HEURISTICS))
    p.add_argument("--runs", type=positive_int, default=5, help="runs per method and task")
    args = p.parse_args(argv)
    heuristics = [h for h in args.heuristics.split(",") if h]
    for store in args.stores:
        if not (store / "episodes.jsonl").is_file():
            p.error(f"stores: expected learned_growth.py --out folders, {store} has no episodes")
    records, families = pooled_records(args.stores, [args.method, *heuristics])
    if not any(r["method"] == args.method for r in records):
        p.error(f"--method: no test episode of {args.method!r} in the stores")
    summary = lg.summarise(
        records, [args.method, *heuristics], families, args.runs, heuristics, args.method
    )
    print(f"{len(records)} test episodes, {len(families)} families: {', '.join(families)}\n")
    print(markdown(summary, args.method, heuristics))
    return summary


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(0 if run_main(main, "pooled_tests.py") is not None else 1)
