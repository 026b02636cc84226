"""Lookahead: a rollout policy whose base policy is "never grow again".

A rollout algorithm (Bertsekas, *Rollout, Policy Iteration, and Distributed Reinforcement
Learning*, 2020) takes, among candidate actions, the one whose rollout -- the action, then a
base policy to the end of the episode -- ends best. With round-robin as the base policy every
rollout step pays a statistics pass (round-robin reads each kind's estimated gain), which
makes it far dearer than any heuristic (:mod:`growenv.learners.rollouts`, where it labels
states for learners). With the base policy "stop growing" a rollout is training alone: grow
the candidate on a copy of the net and train it for the rest of the episode's optimizer
steps, then read its validation loss (:meth:`~growenv.env.growth_env.GrowthEnv.
lookahead_losses`). Training is cheap next to the statistics here: a rollout of ``r``
remaining steps costs ``r * train_steps * batch_size`` forward+backward samples.

Candidates: on a DAG env each expansion kind's valid slot of largest estimated gain (the
ones round-robin chooses among, in the order edge, node, widen); on a site env every valid
site. One candidate is grown without a rollout; none: skip.

:class:`LookaheadSkipPolicy` (``"lookahead-skip:PATH"``) adds a learned *when*: a value agent
trained with the skip action (``action_set="best-per-kind-skip"``) decides whether to grow
this step, and the lookahead decides where.

:class:`LearnedLookaheadPolicy` (``"lookahead-learned:PATH"``) learns the candidates instead:
a value agent that scores every slot (``action_set="slots"``), trained on the lookahead's own
rollouts of every valid slot (``algo="rollout"``, ``rollout_base="never"``), proposes its
``top`` slots, and the lookahead rolls out only those: rolling out every slot finds better
growths than each kind's best, at about 7x the rollouts. With ``budget="whole-space"`` it
rolls out only as many of them as fit in what whole-space greedy would spend on the same
decision (the env's cost plans, :meth:`~growenv.env.growth_env.GrowthEnv.search_cost` and
:meth:`~growenv.env.growth_env.GrowthEnv.lookahead_costs`), so that no decision costs more
than whole-space's, by construction. :class:`LookaheadPolicy` takes the same budgets, over its
own candidates ranked by estimated gain: the heuristic at the learned policy's compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from growenv.policies.base import PolicyEnv, valid_sites
from growenv.policies.heuristics import best_of_each_kind
from growenv.validation import choice, integer, real

__all__ = [
    "BUDGETS",
    "CANDIDATE_SETS",
    "LearnedLookaheadPolicy",
    "LookaheadPolicy",
    "LookaheadSkipPolicy",
    "load_learned",
    "load_skip",
    "lookahead_candidates",
    "lowest_rollout",
    "proposed_slots",
    "ranked_slots",
    "rollouts_within",
    "shortened_rollouts",
    "widened_ranking",
]

CANDIDATE_SETS = ("kinds", "all")
"""What a lookahead compares: ``"kinds"``, each expansion kind's best (DAG; every valid site
on site envs); ``"all"``, every valid slot (a rollout each: about 7x the kinds' rollouts on
the protocol's DAG students, 21 against 3 per decision)."""


def lookahead_candidates(info: dict[str, Any], env: PolicyEnv, kind: str = "kinds") -> np.ndarray:
    """The slots a lookahead compares: with ``kind="kinds"`` on a DAG, each kind's valid slot
    of largest ``info["candidate_gains"]`` (kinds in the order edge, node, widen; kinds
    without a valid slot are left out); otherwise (sites, or ``kind="all"``) every valid
    slot."""
    if getattr(env, "slot_layout", None) is None or kind == "all":
        return valid_sites(info, env)
    return np.array(list(best_of_each_kind(info, env).values()), dtype=int)


def race_steps(shares: Sequence[float], length: int) -> list[int]:
    """Where a race of rollouts of ``length`` steps stops its worst, in the order of
    ``shares`` (each a fraction of the rollout): ``int(share * length)``, those outside
    ``(0, length)`` left out (too short a rollout to stop early)."""
    return [a for a in (int(f * length) for f in shares) if 0 < a < length]


def lowest_rollout(
    env: PolicyEnv,
    slots: np.ndarray,
    steps: int | None = None,
    batch_size: int | None = None,
    nested: bool = False,
    drop_worst_at: int | Sequence[int] | None = None,
) -> int:
    """The slot of ``slots`` whose lookahead rollout (``env.lookahead_losses``, ``steps``
    optimizer steps of minibatches of ``batch_size``, default the episode's, ``nested`` in
    the episode's own, the worst of 3 or more stopped at ``drop_worst_at``, each entry of a
    list stopping one) ends with the lowest validation loss (ties: the first); the only
    slot without a rollout; skip when there is none."""
    if slots.size == 0:
        return env.skip_action
    if slots.size == 1:
        return int(slots[0])
    losses = env.lookahead_losses(slots, steps, batch_size, nested, drop_worst_at)
    return int(slots[int(np.argmin(losses))])


BUDGETS = ("whole-space", "whole-space-episode", "whole-space-projected")
"""Compute bars of :class:`LearnedLookaheadPolicy`: ``"whole-space"``, per decision the least
that whole-space greedy would spend on it (the fits and the batched search of every valid
slot, then the search of the cheapest); ``"whole-space-episode"``, the same bars summed over
the episode's decisions so far (what a decision leaves unspent, a later one may spend);
``"whole-space-projected"``, the episode's bars so far plus a loan against the decisions left,
as if each of their bars were at least this decision's and each spent at least the cheapest
growth now (a projection, not a bound: early decisions, whose bars are the smallest and
whose rollouts the longest, may spend what late ones are expected to leave)."""


def ranked_slots(q: np.ndarray, valid: np.ndarray, top: int) -> np.ndarray:
    """The ``top`` slots of ``valid`` of largest score ``q``, best first (ties: the lower slot
    first)."""
    valid = np.asarray(valid, dtype=int)
    order = np.lexsort((valid, -np.asarray(q, dtype=float)[valid]))
    return valid[order[:top]]


def widened_ranking(
    q: np.ndarray, valid: np.ndarray, top: int, size: int, extra: np.ndarray | None = None
) -> np.ndarray:
    """The proposals of a widened lookahead, best first: the ``top`` slots of ``valid`` of
    largest score ``q``, then the slots of ``extra`` not among them (in their order), then
    the rest of ``valid`` by score, ``size`` slots at most but never fewer than the top and
    the extras (ties: the lower slot first).

    With no ``extra`` this is ``ranked_slots(q, valid, max(top, size))``."""
    order = ranked_slots(q, valid, np.asarray(valid).size)
    head = order[:top]
    seen = set(head.tolist())
    middle = [int(s) for s in (() if extra is None else extra) if int(s) not in seen]
    seen.update(middle)
    tail = [int(s) for s in order[top:] if int(s) not in seen]
    keep = max(head.size + len(middle), size)
    return np.array([*head.tolist(), *middle, *tail][:keep], dtype=int)


def proposed_slots(q: np.ndarray, valid: np.ndarray, top: int) -> np.ndarray:
    """The ``top`` slots of ``valid`` of largest score ``q`` (ties: the lower slot first), in
    slot order."""
    return np.sort(ranked_slots(q, valid, top))


def rollouts_within(rollout_costs: np.ndarray, grow_costs: np.ndarray, bar: float) -> int:
    """How many of the ranked proposals can be rolled out within ``bar``: the largest ``k >=
    2`` with ``sum(rollout_costs[:k]) + max(grow_costs[:k]) <= bar`` (the rollouts, then the
    growth of the one chosen), else 1 (no rollout: the best-ranked proposal grows).

    Parameters
    ----------
    rollout_costs
        MACs of each proposal's rollout, in rank order.
    grow_costs
        MACs of growing each proposal after the rollouts (its search: the policy fits the
        proposals before their rollouts, so the fit is in the rollout's cost).
    bar
        The decision's compute bar in MACs.
    """
    rollout_costs = np.asarray(rollout_costs, dtype=float)
    grow_costs = np.asarray(grow_costs, dtype=float)
    spent = np.cumsum(rollout_costs) + np.maximum.accumulate(grow_costs)
    fits = np.flatnonzero(spent[1:] <= bar)
    return int(fits[-1]) + 2 if fits.size else 1


def shortened_rollouts(
    fixed_costs: np.ndarray, step_costs: np.ndarray, grow_costs: np.ndarray, bar: float, steps: int
) -> tuple[int, int]:
    """``(k, s)``: the most ranked proposals ``k >= 2`` that can be rolled out within ``bar``
    when each rollout is shortened to ``s <= steps`` optimizer steps (the largest ``s`` with
    ``sum(fixed_costs[:k] + s step_costs[:k]) + max(grow_costs[:k]) <= bar``), else ``(1,
    steps)`` (no rollout).

    Parameters
    ----------
    fixed_costs, step_costs
        Per proposal in rank order, a rollout's MACs with no training step (its fit, search
        and validation) and per optimizer step: a rollout of ``s`` steps costs ``fixed + s
        step``.
    grow_costs, bar
        As for :func:`rollouts_within`.
    steps
        The rollouts' length when the bar allows it.
    """
    fixed = np.asarray(fixed_costs, dtype=float)
    per = np.asarray(step_costs, dtype=float)
    grow = np.asarray(grow_costs, dtype=float)
    for k in range(fixed.size, 1, -1):
        spare = bar - fixed[:k].sum() - grow[:k].max()
        if spare >= 0:
            rate = per[:k].sum()
            return k, steps if rate <= 0 else int(min(steps, spare // rate))
    return 1, steps


class _BudgetedRollouts:
    """What both lookaheads share: rolling out ranked proposals within a compute ``budget``
    (:data:`BUDGETS`), planned by the env before anything runs, and the record of the
    rollouts of each decision (``rollouts``) and of the credit carried between decisions."""

    budget: str | None
    shorten: bool
    steps: int | None
    rollout_batch: int | None
    nested: bool
    drop_worst_after: float | tuple[float, ...] | None

    def _set_rollout_batch(self, rollout_batch: int | None, nested: bool = False) -> None:
        self.rollout_batch = integer("rollout_batch", rollout_batch, 1, allow_none=True)
        if not isinstance(nested, bool):
            raise ValueError(f"nested: expected True or False, got {nested!r}")
        if nested and rollout_batch is None:
            raise ValueError(
                "nested: subsamples the episode's minibatches for smaller rollouts; pass "
                "rollout_batch= too"
            )
        self.nested = nested

    def _set_race(self, drop_worst_after: float | Sequence[float] | None) -> None:
        if isinstance(drop_worst_after, (list, tuple)):
            if not drop_worst_after:
                raise ValueError(
                    "drop_worst_after: expected a number in (0, 1), a non-empty list of "
                    "them or None, got []"
                )
            self.drop_worst_after = tuple(
                real("drop_worst_after", f, 0, 1, exclusive=True) for f in drop_worst_after
            )
        else:
            self.drop_worst_after = real(
                "drop_worst_after", drop_worst_after, 0, 1, allow_none=True, exclusive=True
            )
        if drop_worst_after is not None and self.budget is not None:
            raise ValueError(
                "drop_worst_after: a race's cost is known only once it has run; it "
                "cannot be planned within a budget (pass budget=None)"
            )

    def _rollout(self, env: PolicyEnv, slots: np.ndarray, steps: int | None) -> int:
        at: int | list[int] | None = None
        shares = self.drop_worst_after
        if shares is not None:
            length = env.rollout_steps if steps is None else steps
            ats = race_steps(shares if isinstance(shares, tuple) else [shares], length)
            if ats:
                at = ats if isinstance(shares, tuple) else ats[0]
        return lowest_rollout(env, slots, steps, self.rollout_batch, self.nested, at)

    def _set_budget(self, budget: str | None, shorten: bool) -> None:
        self.budget = None if budget is None else choice("budget", budget, BUDGETS)
        if not isinstance(shorten, bool):
            raise ValueError(f"shorten: expected True or False, got {shorten!r}")
        if shorten and budget is None:
            raise ValueError("shorten: shortens rollouts to fit a budget; pass budget= too")
        self.shorten = shorten
        self.rollouts: list[tuple[int, int | None]] = []
        self.credit = 0.0

    def _start(self) -> None:
        self.rollouts = []
        self.credit = 0.0

    @property
    def banked(self) -> bool:
        """Whether what a decision leaves of its bar carries over to the next."""
        return self.budget in ("whole-space-episode", "whole-space-projected")

    def _budgeted(self, env: PolicyEnv, valid: np.ndarray, ranked: np.ndarray) -> int:
        """The proposal of ``ranked`` (best first) of lowest rollout loss among those the
        budget allows; with one, it grows without a rollout."""
        bar, grow, costs, steps = self._plan(env, valid, ranked)
        slots = np.sort(ranked[: costs.size])
        if slots.size == 1:  # no rollout: its fit and search
            self.rollouts.append((0, 0))
            self.credit = bar - env.search_cost(slots) if self.banked else 0.0
            return int(slots[0])
        for slot in slots:  # fitted once here, not in each rollout and again to grow
            env.fit_expansions([int(slot)])
        self.rollouts.append((slots.size, steps))
        action = self._rollout(env, slots, steps)
        if self.banked:  # what the plan left of the bar
            self.credit = bar - costs.sum() - grow[int(np.flatnonzero(ranked == action)[0])]
        return action

    def _shortenable(self, ranked: np.ndarray) -> int:
        """How many of the ``ranked`` proposals may be shortened to fit the bar (the rest are
        rolled out only at full length): all of them."""
        return ranked.size

    def _plan(
        self, env: PolicyEnv, valid: np.ndarray, ranked: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray, int]:
        """``(bar, growth costs, costs of the rollouts to run, their steps)`` of a decision
        under the budget.

        The bar is whole-space's least cost of the decision (the fits and batched search of
        every valid slot, then the search of the one it grows, at least the cheapest) plus
        the episode's credit; the rollouts are planned within it, and with
        ``"whole-space-projected"`` within it plus the loan against the decisions left. The
        proposals' fits are paid once, before their rollouts, so a growth after the rollouts
        costs its search alone."""
        if getattr(env, "slot_layout", None) is None:
            raise ValueError(
                f"budget: {self.budget!r} needs a DAG env (net='dag'), whose costs are planned"
            )
        searches = {int(s): env.search_cost([s], fits=False) for s in valid}
        own = env.search_cost(valid) + min(searches.values())
        bar = own + self.credit
        allowance = bar
        if self.budget == "whole-space-projected":
            left = max(env.config.max_steps - env.step_count, 1)
            floor = min(env.search_cost([s]) for s in valid)
            allowance += (left - 1) * max(own - floor, 0.0)
        grow = np.array([searches[int(s)] for s in ranked])
        steps = env.rollout_steps if self.steps is None else self.steps
        batch = self.rollout_batch  # a rollout's cost is linear in its steps
        fixed = env.lookahead_costs(ranked, 0, batch)
        per_step = env.lookahead_costs(ranked, 1, batch) - fixed
        k = rollouts_within(fixed + steps * per_step, grow, allowance)
        n = self._shortenable(ranked)
        if self.shorten and k < n:
            k, steps = shortened_rollouts(fixed[:n], per_step[:n], grow[:n], allowance, steps)
        return bar, grow, (fixed + steps * per_step)[:k], steps


class LookaheadPolicy(_BudgetedRollouts):
    """Grow the candidate whose rollout "grow it, then train to the end without growing"
    has the lowest validation loss (:func:`lookahead_candidates`; the rollouts are
    ``env.lookahead_losses``, charged to the episode as ``"search"``).

    Deterministic: the rollouts run on copies that share the episode's minibatch stream.

    Parameters
    ----------
    steps
        Optimizer steps of each rollout; default ``None``, the rest of the episode's training
        (``(max_steps - step_count) * train_steps``).
    candidates
        :data:`CANDIDATE_SETS`: each kind's best (default) or every valid slot.
    budget
        ``None`` (default): every candidate is rolled out. Otherwise (DAG envs) as for
        :class:`LearnedLookaheadPolicy`, with the candidates ranked by estimated gain
        (``info["candidate_gains"]``, best first; ties: the lower slot) in place of an
        agent's proposals: the heuristic under the compute bar a learned proposer is held
        to. With ``fit_scope="chosen"`` the gains are the unfitted estimates and only the
        candidates rolled out are fitted.
    shorten
        With a ``budget``: where the bar does not allow every candidate's full rollout,
        shorten them all (:func:`shortened_rollouts`) before rolling out fewer.
    rollout_batch
        Minibatch size of the rollouts' training (default ``None``: the episode's). Half
        the episode's makes every rollout half as dear, at the same length, on the same
        minibatches for every candidate.
    nested
        With ``rollout_batch``: each rollout step trains on the first ``rollout_batch``
        samples of the minibatch the episode's own step would draw (``nested=True`` of
        ``env.lookahead_losses``) instead of the stream's next ones (default ``False``).
    drop_worst_after
        Without a budget, a fraction in (0, 1): with 3 or more candidates, once every
        rollout has run this share of its steps the one of highest validation loss stops
        (``drop_worst_at`` of ``env.lookahead_losses``) and the others run to the end: a
        race that saves that rollout's rest (default ``None``: every rollout to the end).
        A list of fractions races in stages: at each the worst of the rollouts still
        running stops (a fraction given twice stops two), as long as 2 keep running.

    Attributes
    ----------
    rollouts
        With a ``budget``: ``(rollouts, their optimizer steps)`` of each decision since
        :meth:`reset` (``(0, 0)`` where none ran).
    """

    name = "lookahead"

    def __init__(
        self,
        steps: int | None = None,
        candidates: str = "kinds",
        budget: str | None = None,
        shorten: bool = False,
        rollout_batch: int | None = None,
        nested: bool = False,
        drop_worst_after: float | Sequence[float] | None = None,
    ) -> None:
        self.steps = integer("steps", steps, 0, allow_none=True)
        self.candidates = choice("candidates", candidates, CANDIDATE_SETS)
        self._set_budget(budget, shorten)
        self._set_rollout_batch(rollout_batch, nested)
        self._set_race(drop_worst_after)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode (deterministic: nothing to seed)."""
        self._start()

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The candidate of lowest lookahead validation loss (ties: the first), the only
        candidate, or skip when there is none; with a ``budget``, among the best-ranked
        candidates that fit in it."""
        candidates = lookahead_candidates(info, env, self.candidates)
        if self.budget is None or candidates.size <= 1:
            if self.budget is not None:
                self.rollouts.append((0, 0))
            return self._rollout(env, candidates, self.steps)
        gains = np.nan_to_num(np.asarray(info["candidate_gains"], dtype=float), nan=-np.inf)
        ranked = ranked_slots(gains, candidates, candidates.size)
        return self._budgeted(env, valid_sites(info, env), ranked)


class LookaheadSkipPolicy:
    """Skip where a trained agent would skip, otherwise grow where the lookahead says.

    At each step the agent (a :class:`~growenv.policies.value.ValuePolicy` whose action set
    has the skip action) scores its actions; when its greedy action is skip and the episode
    has grown at least once, this policy skips (trains 50 steps without growing), otherwise
    it acts as :class:`LookaheadPolicy`. Skipping is never taken on the empty start: a skip
    there leaves the state, and so the agent's choice, unchanged for the whole episode.

    Parameters
    ----------
    agent
        The trained agent that decides *when*.
    lookahead
        The policy that decides *where* (default ``LookaheadPolicy()``).
    """

    name = "lookahead-skip"

    def __init__(self, agent: Any, lookahead: LookaheadPolicy | None = None) -> None:
        if getattr(agent.scorer, "action_set", None) != "best-per-kind-skip":
            raise ValueError(
                "lookahead-skip: expected an agent trained with action_set="
                f"'best-per-kind-skip', got {getattr(agent.scorer, 'action_set', None)!r}"
            )
        self.agent = agent
        self.lookahead = lookahead or LookaheadPolicy()
        self.skips = 0
        self._grown = False

    def reset(self, seed: int | None = None) -> None:
        """Start an episode (deterministic)."""
        self.skips, self._grown = 0, False
        self.agent.reset(seed)
        self.lookahead.reset(seed)

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """Skip where the agent's greedy action is skip after a first growth (of this
        policy's, since :meth:`reset`), else the lookahead's action."""
        if self._grown:
            q = self.agent.q_values(observation, env)
            q[env.stop_action] = -np.inf
            if int(np.argmax(q)) == env.skip_action:
                self.skips += 1
                return env.skip_action
        action = self.lookahead.act(observation, info, env)
        self._grown = self._grown or action < env.max_sites
        return action


class LearnedLookaheadPolicy(_BudgetedRollouts):
    """The lookahead over a trained agent's ``top`` proposals.

    At each step the agent (a :class:`~growenv.policies.value.ValuePolicy` with
    ``action_set="slots"``) scores every valid slot; its ``top`` slots of largest score
    (:func:`proposed_slots`) are rolled out as :class:`LookaheadPolicy` rolls out its
    candidates, and the one of lowest validation loss grows. Skip when no slot is valid.

    Parameters
    ----------
    agent
        The trained agent that proposes *where* to look.
    top
        How many proposals are rolled out (default 3, the kinds set's count).
    steps
        Optimizer steps of each rollout (default: the rest of the episode's training).
    budget
        ``None`` (default): every proposal is rolled out. ``"whole-space"`` (DAG envs): only
        the best-ranked ``k`` proposals whose rollouts and final growth fit in whole-space
        greedy's cost of the same decision (the fits and the batched search of every valid
        slot, and the search of the slot it grows), planned before anything runs
        (:func:`rollouts_within`; the proposals are fitted once, before their rollouts); with
        ``k = 1`` the best-ranked proposal grows without a rollout. No decision then costs more than
        whole-space's would on the same state, and where the bar allows every rollout the
        decisions are the default's. ``"whole-space-episode"``: the bar of a decision also
        holds what the episode's earlier decisions left of theirs, so the episode's decisions
        cost no more than whole-space's bars of the states it visits, summed.
        ``"whole-space-projected"``: the same, plus a loan of ``(R - 1) * (bar - floor)`` for
        a decision with ``R`` decisions left (itself included), ``bar`` whole-space's cost of
        it and ``floor`` the cheapest growth now (one slot's fit and search): the spare of
        the decisions left if each had at least this bar and spent at least this floor.
        Debts carry to later decisions; the episode's cost can exceed its bars where later
        bars shrink.
    shorten
        With a ``budget``: where the bar does not allow every rollout, shorten them all
        (:func:`shortened_rollouts`) before rolling out fewer.
    widen
        With a ``budget``: the most proposals rolled out where the bar allows full-length
        rollouts of more than ``top`` (default ``None``: ``top``). The proposals beyond
        ``top`` follow the agent's ranking (:func:`widened_ranking`); where the bar allows
        ``top`` or fewer the decision is the unwidened one. Whole-space's bar grows with the
        net and the rollouts shorten as the episode ends, so late decisions can look at more.
    kinds
        Also propose each kind's slot of largest estimated gain (the lookahead's candidates,
        :func:`lookahead_candidates`), right after the agent's ``top`` (default ``False``).
        Without a budget they are always rolled out; with one, only where the bar allows.
    rollout_batch
        Minibatch size of the rollouts' training (default ``None``: the episode's), as for
        :class:`LookaheadPolicy`.
    nested
        Whether those minibatches are nested in the episode's own, as for
        :class:`LookaheadPolicy`.
    drop_worst_after
        Without a budget: the race of :class:`LookaheadPolicy` over the proposals' rollouts.

    Attributes
    ----------
    rollouts
        ``(rollouts, their optimizer steps)`` of each decision since :meth:`reset` (``(0,
        0)`` where none ran; steps ``None``: to the end, without a budget).
    """

    name = "lookahead-learned"

    def __init__(
        self,
        agent: Any,
        top: int = 3,
        steps: int | None = None,
        budget: str | None = None,
        shorten: bool = False,
        widen: int | None = None,
        kinds: bool = False,
        rollout_batch: int | None = None,
        nested: bool = False,
        drop_worst_after: float | Sequence[float] | None = None,
    ) -> None:
        if getattr(agent.scorer, "action_set", None) != "slots":
            raise ValueError(
                "lookahead-learned: expected an agent trained with action_set='slots' (it "
                f"scores every slot), got {getattr(agent.scorer, 'action_set', None)!r}"
            )
        self.agent = agent
        self.top = integer("top", top, 1)
        self.steps = integer("steps", steps, 0, allow_none=True)
        self._set_budget(budget, shorten)
        self.widen = integer("widen", widen, self.top, allow_none=True)
        if widen is not None and budget is None:
            raise ValueError(
                "widen: rolls out more proposals where a budget allows; pass budget= too"
            )
        if not isinstance(kinds, bool):
            raise ValueError(f"kinds: expected True or False, got {kinds!r}")
        self.kinds = kinds
        self._set_rollout_batch(rollout_batch, nested)
        self._set_race(drop_worst_after)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode (deterministic)."""
        self.agent.reset(seed)
        self._start()

    def _shortenable(self, ranked: np.ndarray) -> int:
        """The agent's ``top`` proposals: widened ones are rolled out only at full length."""
        return min(self.top, ranked.size)

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The proposal of lowest lookahead validation loss (ties: the first), the only
        valid slot, or skip when there is none; with a ``budget``, among the proposals that
        fit in it (:func:`rollouts_within`, :func:`shortened_rollouts`)."""
        valid = valid_sites(info, env)
        if valid.size <= 1:
            self.rollouts.append((0, 0))
            return self._rollout(env, valid, self.steps)
        q = self.agent.q_values(observation, env)
        extra = lookahead_candidates(info, env) if self.kinds else None
        size = self.top if self.widen is None else self.widen
        ranked = widened_ranking(q, valid, self.top, size, extra)
        if self.budget is None:
            self.rollouts.append((ranked.size, self.steps) if ranked.size > 1 else (0, 0))
            return self._rollout(env, np.sort(ranked), self.steps)
        return self._budgeted(env, valid, ranked)


def load_learned(path: str, **kwargs: Any) -> LearnedLookaheadPolicy:
    """``"lookahead-learned:PATH"``: the value agent of ``PATH`` (a run directory or a ``.pt``,
    :func:`growenv.policies.value.load`) proposing, the lookahead choosing among its
    proposals (``kwargs``: ``top``, ``steps``)."""
    from growenv.policies.value import load

    return LearnedLookaheadPolicy(load(path), **kwargs)


def load_skip(path: str, **kwargs: Any) -> LookaheadSkipPolicy:
    """``"lookahead-skip:PATH"``: the value agent of ``PATH`` (a run directory or a ``.pt``,
    :func:`growenv.policies.value.load`) deciding when, :class:`LookaheadPolicy` (built with
    ``kwargs``) where."""
    from growenv.policies.value import load

    return LookaheadSkipPolicy(load(path), LookaheadPolicy(**kwargs))
