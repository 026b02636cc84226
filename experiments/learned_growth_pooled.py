"""One learned configuration's test episodes of several protocol runs, pooled (issue #23).

Each run of ``experiments/learned_growth.py`` (v5, v6, v7 ...) tests its selected
configuration on fresh teacher seeds. Where the same agents were selected in several runs,
their tests are disjoint samples of teachers, and pooling them gives one test of more
tasks. Teacher families are kept apart per run (``teacher-depth3@v6``); data-set tasks
(digits, CIFAR-10), the same in every run, are taken once, from the last run given. The
statistics are the script's own (``summarise``: IQM of normalised final test losses with
stratified-bootstrap CIs, differences and probability of improvement against every
heuristic). A pooled test chosen after its parts were seen is a post-hoc analysis: report
it beside the runs, not instead of them.

Usage::

    python experiments/learned_growth_pooled.py --method rollout-kinds-long \\
        results/learned_growth_v5 results/learned_growth_v6 results/learned_growth_v7
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learned_growth as lg  # noqa: E402

DATA_SETS = ("digits", "cifar10")


def pooled_records(runs: dict[str, list[dict[str, Any]]], method: str) -> list[dict[str, Any]]:
    """Test records of ``method`` and the heuristics from ``runs`` (name -> records, in
    order): teacher families renamed ``family@name``, data-set tasks from the last run."""
    last = list(runs)[-1]
    out = []
    for name, records in runs.items():
        for r in records:
            if lg.is_selection(r["family"]) or r["method"] not in (method, *lg.HEURISTICS):
                continue
            if r["family"] in DATA_SETS:
                if name == last:
                    out.append(dict(r))
                continue
            out.append({**r, "family": f"{r['family']}@{name}"})
    return out


def common_heuristics(records: list[dict[str, Any]], method: str) -> tuple[list[str], list[str]]:
    """``(kept, left_out)``: the heuristics other than ``method`` with episodes on every
    pooled task (they normalise the losses and are the bars), and those missing from some
    run (e.g. one added to the protocol after the first run pooled)."""
    tasks = {(r["family"], r["task"]) for r in records}
    kept, left_out = [], []
    for h in lg.HEURISTICS:
        if h == method:
            continue
        covered = {(r["family"], r["task"]) for r in records if r["method"] == h}
        (kept if covered == tasks else left_out).append(h)
    return kept, left_out


def pooled_summary(records: list[dict[str, Any]], method: str, runs: int) -> dict[str, Any]:
    """The aggregate (normalised) statistics of ``method`` against every heuristic that has
    episodes on every pooled task (:func:`common_heuristics`; only they normalise)."""
    heuristics, left_out = common_heuristics(records, method)
    records = [r for r in records if r["method"] in (method, *heuristics)]
    families = sorted({r["family"] for r in records})
    out = lg.summarise(records, [method, *heuristics], families, runs, heuristics, method)
    group = out["groups"].get("all (normalised)", {})
    return {
        "families": families,
        "tasks": len({(r["family"], r["task"]) for r in records}),
        "left_out": left_out,
        **group,
    }


def markdown(summary: dict[str, Any], method: str) -> str:
    """The pooled IQM table and the difference table, as the docs page shows them."""
    lines = [f"{summary['tasks']} tasks in {len(summary['families'])} families"]
    if summary.get("left_out"):
        lines.append(f"left out (not in every run): {', '.join(summary['left_out'])}")
    lines += [
        "",
        "| method | IQM normalised final test loss [95 % CI] |",
        "|---|---|",
    ]
    for m, (v, lo, hi) in sorted(summary.get("iqm", {}).items(), key=lambda kv: kv[1][0]):
        lines.append(f"| {m} | {v:.4f} [{lo:.4f}, {hi:.4f}] |")
    lines += [
        "",
        f"| {method} against | IQM difference [95 % CI] | P(improvement) [95 % CI] |",
        "|---|---|---|",
    ]
    for h, (d, lo, hi) in summary.get("difference", {}).items():
        p, plo, phi = summary["probability_of_improvement"][h]
        lines.append(f"| {h} | {d:+.4f} [{lo:+.4f}, {hi:+.4f}] | {p:.2f} [{plo:.2f}, {phi:.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="output folders of protocol runs")
    parser.add_argument("--method", required=True, help="the learned configuration to pool")
    parser.add_argument("--runs", type=int, default=5, help="agents (episode seeds) per task")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    if len({d.name for d in args.dirs}) < len(args.dirs):
        parser.error("dirs: expected folders of distinct names (they name the runs' families)")
    runs: dict[str, list[dict[str, Any]]] = {}
    for d in args.dirs:
        store = d / "episodes.jsonl"
        if not store.is_file():
            parser.error(f"dirs: {d} has no episodes.jsonl (an output folder of learned_growth.py)")
        runs[d.name] = lg.load_store(store)
    records = pooled_records(runs, args.method)
    if not any(r["method"] == args.method for r in records):
        parser.error(
            f"--method: no test episodes of {args.method!r} in {[str(d) for d in args.dirs]}"
        )
    summary = pooled_summary(records, args.method, args.runs)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    table = markdown(summary, args.method)
    print(table)
    return table


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    run_main(main, "learned_growth_pooled.py")
