"""How much a schedule can gain over round-robin: the rollout policy as an oracle (issue #23).

The rollout policy (Bertsekas) takes, in every state, the action of the learner's action set
whose rollout (that action, then round-robin to the end, on a copy of the env: common random
numbers) ends with the highest return, i.e. the lowest validation loss. It costs about
``|action set| x (remaining steps)`` env steps per decision, so it is no usable policy: it
measures what a rollout learner (``ValueConfig(algo="rollout")``) could at best learn from
its labels in the states it visits. It runs on the *selection* teachers of
``experiments/learned_growth.py`` only (never on test tasks), with that script's env
settings, and reports its final test loss against round-robin's on the same episode seed.

Usage::

    python experiments/rollout_oracle.py [--sets best-per-kind,best-per-kind-skip]
        [--tasks 6] [--runs 1] [--n-val 0] [--workers 2] [--out results/rollout_oracle]
        [--quick]

``--n-val N`` labels on a validation split of ``N`` samples instead of 512 (the test split is
unchanged): how much of the oracle's gain on validation loss carries to test loss depends
on how noisy the validation loss is.

Episodes are appended to ``OUT/episodes.jsonl`` and skipped when present (resumable); the
summary is ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learned_growth as lg  # noqa: E402

from growenv.cli.options import nonnegative_int, positive_int  # noqa: E402
from growenv.harness.episodes import run_episode  # noqa: E402
from growenv.learners.rollouts import rollout_returns  # noqa: E402
from growenv.learners.scorer import ACTION_SETS, action_set_mask, layout_of  # noqa: E402
from growenv.policies import make_policy  # noqa: E402

FAMILIES = tuple(lg.selection_distributions())


def env_kwargs(
    family: str, index: int, n_tasks: int, quick: bool, n_val: int | None = None
) -> dict[str, Any]:
    """The learned-growth env of selection teacher ``index`` of ``family`` (fitted gains);
    ``n_val`` enlarges its validation split (training, statistics and test samples stay)."""
    task = lg.selection_tasks(n_tasks, **({"n_val": n_val} if n_val else {}))[family][index]
    kwargs = {**lg.BASE_ENV, "task": task, "max_params": lg.budget(task), "fit_scope": "all"}
    if quick:
        kwargs.update(max_steps=3, train_steps=5)
    return kwargs


class RolloutOracle:
    """The rollout policy over ``action_set`` with round-robin as the base (a policy of the
    :class:`~growenv.policies.base.Policy` protocol; its rollouts run on env copies)."""

    def __init__(self, action_set: str, kwargs: dict[str, Any]) -> None:
        self.name = f"rollout-oracle/{action_set}"
        self.action_set = action_set
        self.layout = layout_of({k: v for k, v in kwargs.items() if k != "task"})
        self.rollout_steps = 0

    def reset(self, seed: int | None = None) -> None:
        self.rollout_steps = 0

    def act(self, observation: np.ndarray, info: dict[str, Any], env: Any) -> int:
        mask = torch.as_tensor(env.action_masks())[None]
        obs = torch.as_tensor(observation, dtype=torch.float32)[None]
        chosen = action_set_mask(self.action_set, obs, self.layout, mask)[0].numpy()
        returns, steps, _ = rollout_returns(env, chosen, "round-robin")
        self.rollout_steps += steps
        return int(np.nanargmax(returns))


def job(key: dict[str, Any], n_tasks: int, quick: bool, n_val: int | None = None) -> dict[str, Any]:
    """One episode: ``key`` = family, task, method (``round-robin`` or an action set), run."""
    torch.set_num_threads(1)
    kwargs = env_kwargs(key["family"], key["task"], n_tasks, quick, n_val)
    rr = key["method"] == "round-robin"
    policy = make_policy("round-robin") if rr else RolloutOracle(key["method"], kwargs)
    rows = run_episode(kwargs, policy, seed=key["run"])
    last = rows[-1]
    return {
        **key,
        "test_loss": float(last["test_loss"]),
        "val_loss": float(last["val_loss"]),
        "params": int(last["params"]),
        "actions": [r["action_name"] for r in rows[1:]],
        "rollout_steps": 0 if rr else policy.rollout_steps,
    }


def _id(record: dict[str, Any]) -> str:
    return "|".join(str(record[k]) for k in ("family", "task", "method", "run"))


def summarise(records: list[dict[str, Any]], sets: list[str]) -> str:
    """A markdown table: per family and action set, the oracle's test loss over
    round-robin's (median, mean, episodes below 1) and how often it skipped."""
    by = {_id(r): r for r in records}
    lines = [
        "| action set | family | episodes | test loss / round-robin's: median | mean | "
        "below 1 | skips / decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sets:
        for family in (*FAMILIES, "all"):
            ratios, skips, decisions = [], 0, 0
            for r in records:
                if r["method"] != s or family not in ("all", r["family"]):
                    continue
                rr = by.get(_id({**r, "method": "round-robin"}))
                if rr is None:
                    continue
                ratios.append(r["test_loss"] / rr["test_loss"])
                skips += sum(a.startswith("skip") for a in r["actions"])
                decisions += len(r["actions"])
            if not ratios:
                continue
            x = np.asarray(ratios)
            lines.append(
                f"| {s} | {family} | {len(x)} | {np.median(x):.3f} | {x.mean():.3f} | "
                f"{int((x < 1).sum())}/{len(x)} | {skips / max(decisions, 1):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="best-per-kind,best-per-kind-skip")
    parser.add_argument(
        "--tasks", type=positive_int, default=6, help="selection teachers per family"
    )
    parser.add_argument("--runs", type=positive_int, default=1, help="episode seeds per teacher")
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/rollout_oracle"))
    parser.add_argument(
        "--n-val", type=nonnegative_int, default=0, help="validation samples (0: 512)"
    )
    parser.add_argument("--quick", action="store_true", help="3 decisions of 5 steps (smoke)")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    for s in sets:
        if s not in ACTION_SETS[1:]:
            parser.error(f"--sets: expected names from {ACTION_SETS[1:]}, got {s!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "episodes.jsonl"
    records = lg.load_store(store)
    done = {_id(r) for r in records}
    keys = [
        {"family": f, "task": t, "method": m, "run": r}
        for f in FAMILIES
        for t in range(args.tasks)
        for r in range(args.runs)
        for m in ("round-robin", *sets)
    ]
    pending = [k for k in keys if _id(k) not in done]

    def report(record: dict[str, Any], i: int, n: int) -> None:
        print(f"[{i}/{n}] {_id(record)} test {record['test_loss']:.4g}", flush=True)

    jobs = [(job, k, args.tasks, args.quick, args.n_val) for k in pending]
    records += lg.run_jobs(jobs, args.workers, store, report)
    table = summarise(records, sets)
    (args.out / "summary.md").write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(0 if run_main(main, "rollout_oracle.py") is not None else 1)
