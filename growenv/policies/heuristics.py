"""Hand-written growth policies: the TINY strategies, random, BIC and a periodic schedule.

The TINY slides compare three ways of choosing where to grow: "Naive" (every layer in turn,
:class:`RoundRobinPolicy`), "MaxEigenValue" (the largest first-order gain,
:class:`GreedyPolicy`) and "AmplitudeFactor" (the largest real loss drop after the amplitude
search, :class:`GreedyLossPolicy`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from growenv.nets.dag import KINDS
from growenv.policies.base import PolicyEnv, make_rng, valid_sites

__all__ = [
    "BICPolicy",
    "GreedyLossPolicy",
    "GreedyPolicy",
    "PeriodicPolicy",
    "RandomPolicy",
    "RoundRobinPolicy",
    "best_of_each_kind",
    "bic",
    "bic_after_growth",
]


def _best(scores: np.ndarray, sites: np.ndarray) -> int:
    """The site of ``sites`` with the largest score (NaN counts as -inf; ties: lowest site)."""
    values = np.nan_to_num(np.asarray(scores, dtype=float)[sites], nan=-np.inf)
    return int(sites[int(np.argmax(values))])


def best_of_each_kind(info: dict[str, Any], env: PolicyEnv) -> dict[str, int]:
    """DAG envs: each expansion kind's valid slot of largest ``info["candidate_gains"]``,
    ``{kind: slot}`` in the order of :data:`~growenv.nets.dag.KINDS` (edge, node, widen);
    kinds without a valid slot are left out (round-robin's and the lookahead's choices)."""
    valid = valid_sites(info, env)
    kinds = np.asarray(env.slot_layout.kinds)[valid]
    of_kind = {k: valid[kinds == k] for k in KINDS}
    return {k: _best(info["candidate_gains"], s) for k, s in of_kind.items() if s.size}


class GreedyPolicy:
    """Grow the valid site with the largest first-order TINY gain (TINY "MaxEigenValue").

    Parameters
    ----------
    stop_below
        If given, stop the episode (``env.stop_action``) when the best efficiency over the
        valid sites, ``gain / stats_loss / added_params`` (relative first-order loss decrease
        per added parameter), falls below it. ``None`` (default): never stop.

    Notes
    -----
    Uses ``info["candidate_gains"]`` only (no extra computation). Skips growth when no site is
    valid.
    """

    name = "greedy"

    def __init__(self, stop_below: float | None = None) -> None:
        if stop_below is not None and not stop_below >= 0:
            raise ValueError(f"stop_below: expected a number >= 0 or None, got {stop_below!r}")
        self.stop_below = stop_below

    def reset(self, seed: int | None = None) -> None:
        """Nothing to reset: the policy is deterministic."""

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The valid site with the largest ``info["candidate_gains"]``; see the class doc."""
        sites = valid_sites(info, env)
        if sites.size == 0:
            return env.skip_action
        gains = np.asarray(info["candidate_gains"], dtype=float)
        if self.stop_below is not None:
            added = np.maximum(np.asarray(info["candidate_params"], dtype=float)[sites], 1.0)
            loss = max(float(info["stats_loss"]), 1e-30)
            efficiency = np.nan_to_num(gains[sites] / loss / added, nan=-np.inf)
            if float(efficiency.max()) < self.stop_below:
                return env.stop_action
        return _best(gains, sites)


class GreedyLossPolicy:
    """Grow where the real loss drop after the amplitude search is largest ("AmplitudeFactor").

    Calls ``env.evaluate_candidates()`` every step (one amplitude search per valid site on the
    statistics split; the env counts it in ``compute`` and ``seconds["search"]``).

    Parameters
    ----------
    skip_nonpositive
        Skip growth when the best real drop is ``<= 0`` (no candidate helps). Default True.

    Attributes
    ----------
    last_drops
        The ``loss_drop`` array of the last call (``None`` before the first).
    """

    name = "greedy-loss"

    def __init__(self, skip_nonpositive: bool = True) -> None:
        self.skip_nonpositive = bool(skip_nonpositive)
        self.last_drops: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        """Forget the last drops (the policy is deterministic)."""
        self.last_drops = None

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The valid site with the largest real loss drop, or skip; see the class doc."""
        sites = valid_sites(info, env)
        if sites.size == 0:
            return env.skip_action
        drops = np.asarray(env.evaluate_candidates()["loss_drop"], dtype=float)
        self.last_drops = drops
        best = _best(drops, sites)
        if self.skip_nonpositive and not drops[best] > 0:
            return env.skip_action
        return best


class RoundRobinPolicy:
    """Grow the sites in turn, 0, 1, ..., num_sites - 1, 0, ... (TINY "Naive").

    A masked site is passed over (the next valid one in the cycle grows); growth is skipped
    when no site is valid.

    On a DAG env (``info`` has ``"graph_edges"``; slots of ``env.slot_layout``) the expansion
    *kinds* take turns, edge -> node -> widen -> edge ...: each step grows the valid slot of
    largest estimated gain (``info["candidate_gains"]``) of the next kind that has one.
    """

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def reset(self, seed: int | None = None) -> None:
        """Restart the cycle at site 0 (DAG: at kind "edge")."""
        self._next = 0

    def sync(self, env: Any) -> None:
        """Set the turn from ``env``'s episode so far, as if this policy had played it: on a
        DAG env the kind after the last kind grown (``edge`` when none was), otherwise the
        site after the last site grown (site 0 when none was). Rollouts continue round-robin
        from any state with it."""
        env = env.unwrapped
        episode = env.episode
        if episode.measurement is not None and episode.measurement.graph is not None:
            kinds = episode.grown_kinds
            self._next = (kinds[-1][1] + 1) % 3 if kinds else 0
        else:
            sites = episode.grown_slots
            self._next = (sites[-1][1] + 1) % env.net.num_sites if sites else 0

    def _act_kinds(self, info: dict[str, Any], env: PolicyEnv) -> int:
        best = best_of_each_kind(info, env)
        for offset in range(len(KINDS)):
            k = (self._next + offset) % len(KINDS)
            if KINDS[k] in best:
                self._next = (k + 1) % len(KINDS)
                return best[KINDS[k]]
        return env.skip_action

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The next valid site of the cycle (DAG: the best slot of the next kind)."""
        if "graph_edges" in info:
            return self._act_kinds(info, env)
        mask = np.asarray(info["action_mask"], dtype=bool)
        n = env.net.num_sites
        for offset in range(n):
            site = (self._next + offset) % n
            if mask[site]:
                self._next = (site + 1) % n
                return site
        return env.skip_action


class RandomPolicy:
    """Uniform over the valid actions (sites and skip; stop only with ``include_stop``).

    Parameters
    ----------
    include_stop
        Also draw the stop action. Default False (episodes then run to ``max_steps``).
    """

    name = "random"

    def __init__(self, include_stop: bool = False) -> None:
        self.include_stop = bool(include_stop)
        self._rng = make_rng(None)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the policy's own generator (``seed=None``: fresh entropy)."""
        self._rng = make_rng(seed)

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """A uniformly random valid action."""
        mask = np.asarray(info["action_mask"], dtype=bool).copy()
        if not self.include_stop:
            mask[env.stop_action] = False
        return int(self._rng.choice(np.flatnonzero(mask)))


def bic(params: int, loss: float, num_samples: int, loss_kind: str, out_features: int = 1):
    """Bayesian information criterion of a model; lower is better.

    ``BIC = k ln n - 2 ln L`` up to a constant, with ``k = params``, ``n = num_samples``:

    * ``loss_kind="mse"``: Gaussian likelihood with the variance at its maximum-likelihood
      value, ``-2 ln L = n ln(MSE)`` with ``MSE = loss / out_features`` (``loss`` is the mean
      per-sample loss summed over outputs, so ``MSE`` is the mean squared error per output).
      Douka et al.'s form; with several outputs the exact Gaussian term would be
      ``n * out_features * ln(MSE)``, we keep ``n ln(MSE)`` as specified.
    * ``loss_kind="cross_entropy"``: ``-2 ln L = 2 n loss`` (``loss`` = mean cross-entropy).

    Note: gromo's ``compute_BIC`` returns ``k log2(n) - 2 log2(loss)``, i.e. it treats the loss
    as the likelihood, which inverts the sign of the fit term (a lower loss *raises* its BIC)
    and drops the factor ``n``; ours uses the likelihood correctly.
    """
    k, n = float(params), float(num_samples)
    if loss_kind == "mse":
        mse = max(float(loss) / out_features, np.finfo(float).tiny)
        return k * math.log(n) + n * math.log(mse)
    if loss_kind == "cross_entropy":
        return k * math.log(n) + 2.0 * n * float(loss)
    raise ValueError(f"loss_kind: expected 'mse' or 'cross_entropy', got {loss_kind!r}")


class BICPolicy:
    """Grow the candidate that lowers the BIC the most (Douka et al., 2025); else skip.

    For each valid site the BIC after growth uses ``k = params + candidate_params[site]`` and
    the loss ``stats_loss - loss_drop[site]`` (the real drop on the statistics split from
    ``env.evaluate_candidates()``), ``n = env.report.num_samples``; see :func:`bic`. The
    current BIC uses the current parameters and ``stats_loss``.

    Attributes
    ----------
    last_bic
        ``(current BIC, per-site BIC after growth (inf where invalid))`` of the last call.
    """

    name = "bic"

    def __init__(self) -> None:
        self.last_bic: tuple[float, np.ndarray] | None = None

    def reset(self, seed: int | None = None) -> None:
        """Forget the last scores (the policy is deterministic)."""
        self.last_bic = None

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The site with the lowest BIC after growth if it beats the current BIC, else skip."""
        sites = valid_sites(info, env)
        if sites.size == 0:
            return env.skip_action
        drops = np.asarray(env.evaluate_candidates()["loss_drop"], dtype=float)
        current, after = bic_after_growth(info, env, sites, drops)
        self.last_bic = (current, after)
        best = int(sites[int(np.argmin(after[sites]))])
        return best if after[best] < current else env.skip_action


def bic_after_growth(
    info: dict[str, Any], env: PolicyEnv, sites: np.ndarray, drops: np.ndarray
) -> tuple[float, np.ndarray]:
    """The current BIC and, per slot of ``sites``, the BIC after its growth (``inf``
    elsewhere): ``k = params + candidate_params``, loss ``stats_loss - loss_drop`` (real
    drops on the statistics split), ``n = env.report.num_samples`` (:func:`bic`)."""
    loss, params = float(info["stats_loss"]), int(info["params"])
    n, kind, out = env.report.num_samples, env.task.loss, env.task.out_features
    added = np.asarray(info["candidate_params"], dtype=float)
    current = bic(params, loss, n, kind, out)
    after = np.full(env.max_sites, np.inf)
    for site in sites:
        after[site] = bic(params + added[site], loss - drops[site], n, kind, out)
    return current, after


class PeriodicPolicy:
    """Grow every site in turn on a fixed schedule.

    At every environment step ``t`` with ``t % period == 0`` a round begins that grows sites
    ``0, 1, ..., num_sites - 1`` on consecutive steps (one site per step, since an action grows
    one site; masked sites are passed over); all other steps skip growth. A round start that
    finds the previous round unfinished (only possible when ``period < num_sites``) is dropped:
    the current round goes on. ``period=1`` thus grows at every step, cycling through the
    sites like :class:`RoundRobinPolicy`.

    Parameters
    ----------
    period
        Steps between the starts of two rounds (default 4).
    """

    name = "periodic"

    def __init__(self, period: int = 4) -> None:
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"period: expected an int >= 1, got {period!r}")
        self.period = period
        self._queue: list[int] = []

    def reset(self, seed: int | None = None) -> None:
        """Drop any unfinished round."""
        self._queue = []

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """The next site of the current round, or skip between rounds."""
        if int(info["step"]) % self.period == 0 and not self._queue:
            self._queue = list(range(env.net.num_sites))
        mask = np.asarray(info["action_mask"], dtype=bool)
        while self._queue:
            site = self._queue.pop(0)
            if mask[site]:
                return site
        return env.skip_action
