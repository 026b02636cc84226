"""Which race of full-size rollouts keeps the lookahead's choice: a learned proposer's
rollouts raced, judged by another minibatch draw (issue #23).

The learned lookahead (:class:`~growenv.policies.lookahead.LearnedLookaheadPolicy`) rolls
its agent's ``top`` proposals out to the end of the episode and grows the lowest; with
``drop_worst_after`` the rollouts race, the worst of those still running stopping at each
share of their steps while 2 keep running (``env.lookahead_losses(..., drop_worst_at=)``).
This script plays episodes on *training* teachers of ``experiments/learned_growth.py``
(seeds ``TEACHER_SEED + t`` of its training distribution's classes, never a selection or
test task) with that script's env settings (``fit_scope="chosen"``), agent ``t mod K`` of
``--agents`` proposing. At each decision with 2 or more valid slots it rolls the agent's
``--top`` best-ranked proposals out on the episode's stream, validating each at every
checkpoint of :data:`SHARES` and at the end, and again to the end on another stream (the
judge: the env copy's generator reseeded). The episode grows the full-size choice among
the top 3 (the trajectory is the same for every rule).

Each rule of :data:`RULES` (its top ``n`` proposals, its race's shares) is then replayed on
the recorded curves exactly as the env races (checked in the tests against
``lowest_rollout``), and reported per rule:

* ``regret``: the relative excess, judged by the other stream, of the rule's choice over the
  best of all ``--top`` proposals there, ``(J[chosen] - min J) / min J``;
* ``- reference``: its difference from :data:`REFERENCE`'s regret (paired by decision);
* ``agreement``: how often the rule keeps the choice of its own proposals' full rollouts on
  the episode's stream;
* ``rollouts``: the rollouts' optimizer steps per decision, in full rollouts;

and, over decisions with ``--top`` proposals, how often the best full rollout is the
agent's 1st, 2nd, ... proposal.

Means are over decisions; the CIs are percentile bootstraps over episodes (10,000
resamples).

Usage::

    python experiments/rollout_races.py [--teachers 48] [--top 4]
        [--agents results/learned_growth_v25/agents/lookahead-learned-chosen-mix]
        [--workers 2] [--out results/rollout_races] [--quick]

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
from rollout_noise import redrawn_losses  # noqa: E402

from growenv.cli.options import int_at_least, positive_int  # noqa: E402
from growenv.data.tasks import TeacherStudentDistribution  # noqa: E402
from growenv.env.growth_env import GrowthEnv  # noqa: E402
from growenv.errors import UserError  # noqa: E402
from growenv.policies import make_policy  # noqa: E402
from growenv.policies.lookahead import race_steps  # noqa: E402
from growenv.training import evaluate  # noqa: E402

#: Training teachers ``TEACHER_SEED + t`` (the training distribution's seeds ``0 .. 10^6``).
TEACHER_SEED = 777
#: The episodes' family in the store (``learned_growth.run_jobs`` stores episode records).
FAMILY = "training"
#: Entropy of the judge streams' seeds (with the teacher and the step).
JUDGE_SEED = 9_000_000
#: A rule: its top ``n`` proposals and its race's shares (each stops the worst running one).
Rule = tuple[int, tuple[float, ...]]
RULES: dict[str, Rule] = {
    "top 3, full": (3, ()),
    "top 3, race 1/4 (v25)": (3, (1 / 4,)),
    "top 3, race 1/8": (3, (1 / 8,)),
    "top 2, full": (2, ()),
    "top 4, full": (4, ()),
    "top 4, race 1/4 + 1/4": (4, (1 / 4, 1 / 4)),
    "top 4, race 1/8 + 1/8": (4, (1 / 8, 1 / 8)),
    "top 4, race 1/16 + 1/16": (4, (1 / 16, 1 / 16)),
    "top 4, race 1/8 + 1/4": (4, (1 / 8, 1 / 4)),
    "top 4, race 1/16 + 1/4": (4, (1 / 16, 1 / 4)),
}
REFERENCE = "top 3, full"
#: Every checkpoint share a rule uses.
SHARES = tuple(sorted({f for _, shares in RULES.values() for f in shares}))


def checkpoints(steps: int, shares: Sequence[float]) -> list[int]:
    """The race's stops in a rollout of ``steps`` steps, as the lookaheads place them
    (:func:`~growenv.policies.lookahead.race_steps`), sorted."""
    return sorted(race_steps(shares, steps))


def teacher_env(t: int, quick: bool) -> GrowthEnv:
    """The env of training teacher ``t`` (learned_growth's settings, ``fit_scope="chosen"``)."""
    dist = TeacherStudentDistribution(classes=lg.TRAIN_CLASSES)
    task = dist.sample(np.random.default_rng(TEACHER_SEED + t), **lg.SPLITS)
    kwargs = {**lg.BASE_ENV, "task": task, "max_params": lg.budget(task), "fit_scope": "chosen"}
    if quick:
        kwargs.update(max_steps=3, train_steps=5)
    return GrowthEnv(**kwargs)


def proposal_curves(
    env: GrowthEnv, slots: Sequence[int], stops: Sequence[int]
) -> list[list[float]]:
    """Each slot's rollout (grown on a copy of ``env``, trained on the episode's stream)
    validated after each of ``stops`` optimizer steps (increasing, the last the rollout's
    end); ``env`` is left as it was."""
    task, curves = env.task, []
    for slot in slots:
        twin, done, curve = copy.deepcopy(env), 0, []
        twin.grow(int(slot))
        for stop in stops:
            twin._train(stop - done, check_finite=False)
            done = stop
            loss, _ = evaluate(twin.net, task.val.x, task.val.y, task.loss)
            curve.append(float(loss) if np.isfinite(float(loss)) else float("inf"))
        twin.close()
        curves.append(curve)
    return curves


def judge_seed(t: int, step: int) -> int:
    """The seed of the judge stream at decision ``step`` of teacher ``t``."""
    return int(np.random.SeedSequence([JUDGE_SEED, t, step]).generate_state(1)[0])


def episode_job(key: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """One episode of teacher ``key["teacher"]``: per decision with 2+ valid slots, the
    agent's ``top`` proposals (best-ranked first), the rollouts' length ``steps``, the
    checkpoints ``stops`` (ending with ``steps``), each proposal's ``curves`` on the
    episode's stream and its ``judge`` loss on another."""
    torch.set_num_threads(1)
    t = key["teacher"]
    env = teacher_env(t, args["quick"])
    agent = make_policy(f"dqn:{agent_path(Path(args['agents']), t)}")
    obs, info = env.reset(seed=t)
    decisions, actions, done = [], [], False
    while not done:
        valid = np.flatnonzero(info["action_mask"][: env.max_sites])
        q = agent.q_values(obs, env)
        ranked = valid[np.lexsort((valid, -q[valid]))][: args["top"]]
        if ranked.size >= 2:
            steps = env.rollout_steps
            stops = [*sorted(set(checkpoints(steps, SHARES))), steps]
            curves = proposal_curves(env, ranked, stops)
            order = np.argsort(ranked)  # the env rolls sorted slots out
            losses = redrawn_losses(env, ranked[order], judge_seed(t, env.step_count))
            judged = np.empty(ranked.size)
            judged[order] = losses
            decisions.append(
                {
                    "step": env.step_count,
                    "slots": ranked.tolist(),
                    "steps": steps,
                    "stops": stops,
                    "curves": curves,
                    "judge": judged.tolist(),
                }
            )
            top3 = [c[-1] for c in curves[:3]]
            action = int(ranked[int(np.argmin(top3))])
        else:
            action = int(ranked[0]) if ranked.size else env.skip_action
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    env.close()
    return {**key, "actions": actions, "decisions": decisions}


def agent_path(agents: Path, t: int) -> Path:
    """Agent ``t mod K`` of the ``K`` runs ``seed_*`` in ``agents``."""
    runs = sorted(agents.glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
    if not runs:
        raise UserError(f"--agents: expected a folder of seed_* agent runs, got {agents}")
    return runs[t % len(runs)]


def race(decision: dict[str, Any], rule: Rule) -> tuple[int, float]:
    """Replay ``rule`` on a recorded decision as ``env.lookahead_losses`` races: the index
    (in the decision's proposals) of the slot it grows, and its rollouts' optimizer steps
    in full rollouts."""
    n, shares = rule
    slots, steps, stops = decision["slots"], decision["steps"], decision["stops"]
    live = list(range(min(n, len(slots))))
    ats = checkpoints(steps, shares)[: max(0, len(live) - 2)]
    ran, done = 0.0, 0
    for at in ats:
        ran += len(live) * (at - done)
        done = at
        column = stops.index(at)
        worst = max(live, key=lambda i: (decision["curves"][i][column], slots[i]))
        live.remove(worst)
    ran += len(live) * (steps - done)
    chosen = min(live, key=lambda i: (decision["curves"][i][-1], slots[i]))
    return chosen, ran / steps


def decision_stats(decision: dict[str, Any], rule: Rule) -> dict[str, float]:
    """A rule's regret (judged by the other stream, against all proposals), agreement with
    its own proposals' full rollouts, and rollouts on one decision."""
    chosen, rollouts = race(decision, rule)
    judge = np.asarray(decision["judge"], dtype=float)
    full = race(decision, (rule[0], ()))[0]
    return {
        "regret": float((judge[chosen] - judge.min()) / judge.min()),
        "agreement": float(chosen == full),
        "rollouts": rollouts,
    }


def _bootstrap(sums: np.ndarray, counts: np.ndarray, picks: np.ndarray) -> list[float]:
    boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return [float(sums.sum() / counts.sum()), float(lo), float(hi)]


def summarise(
    records: Sequence[dict[str, Any]], resamples: int = 10_000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per rule: decisions, and the mean over decisions of ``regret``, ``- reference``,
    ``agreement`` and ``rollouts``, each with a 95 % percentile bootstrap CI over episodes
    (the same resampled episodes for every rule)."""
    episodes = [r["decisions"] for r in records if r["decisions"]]
    if not episodes:
        return {}
    picks = np.random.default_rng(seed).integers(0, len(episodes), (resamples, len(episodes)))
    counts = np.array([len(e) for e in episodes], dtype=float)
    reference = [[decision_stats(d, RULES[REFERENCE]) for d in e] for e in episodes]
    out = {}
    for name, rule in RULES.items():
        stats = [[decision_stats(d, rule) for d in e] for e in episodes]
        entry: dict[str, Any] = {"decisions": int(counts.sum())}
        for stat in ("regret", "agreement", "rollouts"):
            sums = np.array([sum(d[stat] for d in e) for e in stats])
            entry[stat] = _bootstrap(sums, counts, picks)
        gaps = np.array(
            [
                sum(d["regret"] - r["regret"] for d, r in zip(e, ref, strict=True))
                for e, ref in zip(stats, reference, strict=True)
            ]
        )
        entry["- reference"] = _bootstrap(gaps, counts, picks)
        out[name] = entry
    return out


def winner_ranks(records: Sequence[dict[str, Any]], top: int) -> dict[str, list[float]]:
    """Over decisions with ``top`` proposals: the share whose best full rollout is the
    agent's 1st, 2nd, ... proposal, on the episode's stream (``"stream"``) and judged by
    the other (``"judge"``); how much the agent's order says among its proposals."""
    full = [d for r in records for d in r["decisions"] if len(d["slots"]) == top]
    counts = {"stream": np.zeros(top), "judge": np.zeros(top)}
    for d in full:
        counts["stream"][int(np.argmin([c[-1] for c in d["curves"]]))] += 1
        counts["judge"][int(np.argmin(d["judge"]))] += 1
    return {k: (v / max(len(full), 1)).tolist() for k, v in counts.items()}


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The summary table (regret and its difference in %)."""
    some = next(iter(summary.values()))
    lines = [
        f"Races replayed on {some['decisions']} decisions of training teachers (mean over "
        "decisions [95 % CI over episodes]; regret judged by another minibatch draw, in %)",
        "",
        f"| rule | regret | - {REFERENCE} | agreement | rollouts |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        pct = [[100 * v for v in s[k]] for k in ("regret", "- reference")]
        lines.append(
            f"| {name} | {pct[0][0]:.3f} [{pct[0][1]:.3f}, {pct[0][2]:.3f}] "
            f"| {pct[1][0]:+.3f} [{pct[1][1]:+.3f}, {pct[1][2]:+.3f}] "
            f"| {s['agreement'][0]:.2f} [{s['agreement'][1]:.2f}, {s['agreement'][2]:.2f}] "
            f"| {s['rollouts'][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(
        prog="rollout_races.py", description=__doc__.split("\n\n")[0].strip()
    )
    p.add_argument("--teachers", type=positive_int, default=48, help="training teachers")
    p.add_argument(
        "--top", type=int_at_least(4), default=4, help="proposals rolled out (at least 4)"
    )
    p.add_argument(
        "--agents",
        type=Path,
        default=Path("results/learned_growth_v25/agents/lookahead-learned-chosen-mix"),
        help="a folder of seed_* agent runs (v15's proposer by default)",
    )
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/rollout_races"))
    p.add_argument("--quick", action="store_true", help="tiny everything (a smoke test)")
    args = p.parse_args(argv)
    if not any(args.agents.glob("seed_*")):
        p.error(f"--agents: expected a folder of seed_* agent runs, got {args.agents}")
    if args.quick:
        args.teachers = min(args.teachers, 2)
    settings = {
        "teachers": args.teachers,
        "top": args.top,
        "agents": str(args.agents),
        "quick": args.quick,
    }
    store = lg.claim_out(args.out, settings, p.error)
    records = lg.load_store(store)
    done = {r["teacher"] for r in records}
    jobs = [{"family": FAMILY, "teacher": t} for t in range(args.teachers) if t not in done]
    if jobs:
        print(f"{len(jobs)} episodes to run", flush=True)
        records += lg.run_jobs([(episode_job, k, settings) for k in jobs], args.workers, store)
    summary = summarise([r for r in records if r["teacher"] < args.teachers])
    if not summary:
        raise UserError("no decision with 2 or more proposals: nothing to replay")
    wanted = [r for r in records if r["teacher"] < args.teachers]
    ranks = winner_ranks(wanted, args.top)
    text = markdown(summary) + (
        f"\nBest of the agent's {args.top} proposals, by its rank (decisions with "
        f"{args.top}): "
        + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in shares) for k, shares in ranks.items())
        + "\n"
    )
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(
        json.dumps({"rules": summary, "winner_ranks": ranks}, indent=1)
    )
    print(text)
    return summary


if __name__ == "__main__":
    from growenv.harness.lifecycle import run_main

    sys.exit(0 if run_main(main, "rollout_races.py") is not None else 1)
