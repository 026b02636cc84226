"""How much of a lookahead decision is the minibatch stream's: rollouts redrawn (issue #23).

The lookahead (:class:`~growenv.policies.lookahead.LookaheadPolicy`) grows the candidate whose
rollout "grow it, then train to the end without growing" ends with the lowest validation
loss. Every candidate's rollout trains on the same minibatches (common random numbers), but
on one draw of them: the episode's stream. This script plays the lookahead's episodes on the
*selection* teachers of ``experiments/learned_growth.py`` (never on test tasks), with that
script's env settings, and at each decision with two or more candidates also rolls the
same candidates out on ``--streams`` other minibatch streams (the env copy's generator
reseeded; everything else as in the episode). It reports, per family and pooled:

* ``agreement``: how often another stream's lowest rollout is the candidate the episode's
  stream chose (1 for a decision that does not depend on the draw);
* ``regret``: the relative excess, judged by another stream, of the episode stream's
  choice over that stream's own best, ``(L_s[chosen] - min L_s) / min L_s``;
* ``spread``: the relative gap between the candidates' worst and best rollout on the
  episode's stream;
* with ``--streams`` 2 or more, ``regret_1`` and ``regret_2``: the regret of choosing on the
  episode's stream alone and on the mean of it and the first redrawn stream (twice the
  rollouts), both judged by the streams after the first.

Means are over decisions; the CIs are percentile bootstraps over episodes (10,000 resamples).

Usage::

    python experiments/rollout_noise.py [--tasks 6] [--runs 1] [--streams 2]
        [--scope all] [--workers 2] [--out results/rollout_noise] [--quick]

Episodes are appended to ``OUT/episodes.jsonl`` and skipped when present (resumable); the
summary is ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learned_growth as lg  # noqa: E402

from growenv.cli.options import positive_int  # noqa: E402
from growenv.env.growth_env import GrowthEnv  # noqa: E402
from growenv.policies.lookahead import lookahead_candidates  # noqa: E402

FAMILIES = tuple(lg.selection_distributions())
SCOPES = ("all", "chosen")
#: Entropy of the redrawn streams' seeds (with the stream, family, task, run and step).
STREAM_SEED = 7_000_000


def env_kwargs(family: str, index: int, n_tasks: int, scope: str, quick: bool) -> dict[str, Any]:
    """The learned-growth env of selection teacher ``index`` of ``family``."""
    task = lg.selection_tasks(n_tasks)[family][index]
    kwargs = {**lg.BASE_ENV, "task": task, "max_params": lg.budget(task), "fit_scope": scope}
    if quick:
        kwargs.update(max_steps=3, train_steps=5)
    return kwargs


def redrawn_losses(env: GrowthEnv, slots: np.ndarray, seed: int) -> np.ndarray:
    """``env.lookahead_losses(slots)`` on a copy of ``env`` whose minibatch stream is reseeded
    with ``seed`` (the episode and its stream are left as they were)."""
    twin = copy.deepcopy(env)
    twin.episode.generator.manual_seed(seed)
    losses = twin.lookahead_losses(slots)
    twin.close()
    return losses


def episode_job(key: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """One lookahead episode with its decisions' rollouts redrawn on ``args["streams"]``
    other streams: ``decisions`` lists, per decision with 2+ candidates, the candidates,
    their losses on the episode's stream (``losses``) and on each other one (``redrawn``)."""
    torch.set_num_threads(1)
    kwargs = env_kwargs(key["family"], key["task"], args["tasks"], args["scope"], args["quick"])
    env = GrowthEnv(**kwargs)
    obs, info = env.reset(seed=key["run"])
    decisions, actions, done = [], [], False
    while not done:
        slots = np.sort(lookahead_candidates(info, env))
        if slots.size >= 2:
            losses = copy.deepcopy(env).lookahead_losses(slots)
            redrawn = [
                redrawn_losses(env, slots, stream_seed(key, env.step_count, s)).tolist()
                for s in range(1, args["streams"] + 1)
            ]
            decisions.append(
                {
                    "step": env.step_count,
                    "slots": slots.tolist(),
                    "losses": losses.tolist(),
                    "redrawn": redrawn,
                }
            )
            action = int(slots[int(np.argmin(losses))])
        else:
            action = int(slots[0]) if slots.size else env.skip_action
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    env.close()
    return {**key, "actions": actions, "decisions": decisions}


def stream_seed(key: dict[str, Any], step: int, stream: int) -> int:
    """The seed of redrawn stream ``stream`` at decision ``step`` of episode ``key``."""
    family = FAMILIES.index(key["family"])
    entropy = [STREAM_SEED, stream, family, key["task"], key["run"], step]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _regret(judge: np.ndarray, chosen: int) -> float:
    """The relative excess of ``chosen``'s loss over the best, on the stream ``judge``."""
    return float((judge[chosen] - judge.min()) / judge.min())


def decision_stats(decision: dict[str, Any]) -> dict[str, float]:
    """Agreement, regret and spread of one decision (means over its redrawn streams), and
    with two or more redrawn streams ``regret_1`` and ``regret_2`` (see the module)."""
    losses = np.asarray(decision["losses"], dtype=float)
    redrawn = np.asarray(decision["redrawn"], dtype=float)
    chosen = int(np.argmin(losses))
    out = {
        "agreement": float(np.mean([int(np.argmin(o)) == chosen for o in redrawn])),
        "regret": float(np.mean([_regret(o, chosen) for o in redrawn])),
        "spread": float((losses.max() - losses.min()) / losses.min()),
    }
    if len(redrawn) >= 2:
        both = int(np.argmin((losses + redrawn[0]) / 2))
        out["regret_1"] = float(np.mean([_regret(o, chosen) for o in redrawn[1:]]))
        out["regret_2"] = float(np.mean([_regret(o, both) for o in redrawn[1:]]))
    return out


def summarise(
    records: Sequence[dict[str, Any]], resamples: int = 10_000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per family and pooled (``"all"``): decisions, and each statistic's mean over decisions
    with a 95 % percentile bootstrap CI over episodes."""
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for r in records:
        rows = [decision_stats(d) for d in r["decisions"]]
        if rows:
            groups.setdefault(r["family"], []).append(rows)
            groups.setdefault("all", []).append(rows)
    rng = np.random.default_rng(seed)
    out = {}
    for group, episodes in groups.items():
        entry: dict[str, Any] = {"decisions": sum(len(e) for e in episodes)}
        for stat in ("agreement", "regret", "spread", "regret_1", "regret_2"):
            if any(stat not in d for e in episodes for d in e):
                continue
            sums = np.array([sum(d[stat] for d in e) for e in episodes])
            counts = np.array([len(e) for e in episodes])
            picks = rng.integers(0, len(episodes), (resamples, len(episodes)))
            boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            entry[stat] = [float(sums.sum() / counts.sum()), float(lo), float(hi)]
        out[group] = entry
    return out


def markdown(summary: dict[str, dict[str, Any]], streams: int) -> str:
    """The summary table."""
    lines = [
        f"Lookahead decisions redrawn on {streams} other minibatch stream(s) "
        "(mean over decisions [95 % CI over episodes])",
        "",
    ]
    stats = ["agreement", "regret", "spread"]
    if all("regret_2" in s for s in summary.values()):
        stats += ["regret_1", "regret_2"]
    lines += [
        "| family | decisions | " + " | ".join(stats) + " |",
        "|---|" + "---|" * (1 + len(stats)),
    ]
    order = [f for f in FAMILIES if f in summary] + ["all"] * ("all" in summary)
    for group in order:
        s = summary[group]
        cells = [f"{s[k][0]:.4f} [{s[k][1]:.4f}, {s[k][2]:.4f}]" for k in stats]
        lines.append(f"| {group} | {s['decisions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _key_id(key: dict[str, Any]) -> str:
    return "|".join(str(key[k]) for k in ("family", "task", "run"))


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(
        prog="rollout_noise.py", description=__doc__.split("\n\n")[0].strip()
    )
    p.add_argument("--tasks", type=positive_int, default=6, help="selection teachers per family")
    p.add_argument("--runs", type=positive_int, default=1, help="episode seeds per teacher")
    p.add_argument(
        "--streams", type=positive_int, default=2, help="other minibatch streams per decision"
    )
    p.add_argument("--scope", default="all", help=f"fit scope of the envs ({', '.join(SCOPES)})")
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/rollout_noise"))
    p.add_argument("--quick", action="store_true", help="tiny everything (a smoke test)")
    args = p.parse_args(argv)
    if args.scope not in SCOPES:
        p.error(f"--scope: expected one of {', '.join(SCOPES)}, got {args.scope!r}")
    if args.quick:
        args.tasks, args.runs = min(args.tasks, 1), min(args.runs, 1)
    settings = {k: getattr(args, k) for k in ("tasks", "streams", "scope", "quick")}
    store = lg.claim_out(args.out, settings, p.error)
    records = lg.load_store(store)
    done = {_key_id(r) for r in records}
    keys = [
        {"family": f, "task": t, "run": r}
        for f in FAMILIES
        for t in range(args.tasks)
        for r in range(args.runs)
    ]
    jobs = [k for k in keys if _key_id(k) not in done]
    if jobs:
        print(f"{len(jobs)} episodes to run", flush=True)
        records += lg.run_jobs([(episode_job, k, settings) for k in jobs], args.workers, store)
    wanted = {_key_id(k) for k in keys}
    summary = summarise([r for r in records if _key_id(r) in wanted])
    text = markdown(summary, args.streams)
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(text)
    return summary


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(0 if run_main(main, "rollout_noise.py") is not None else 1)
