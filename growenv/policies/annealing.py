"""Simulated-annealing growth: accept random growth proposals by a Metropolis rule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from growenv.policies.base import PolicyEnv, make_rng, valid_sites

__all__ = ["AnnealingPolicy", "acceptance_probability"]


def acceptance_probability(gain: float, temperature: float) -> float:
    """Metropolis acceptance ``min(1, exp(gain / T))``; ``T = 0`` accepts iff ``gain >= 0``."""
    if gain >= 0:
        return 1.0
    if temperature <= 0:
        return 0.0
    return math.exp(gain / temperature)  # gain < 0: no overflow


class AnnealingPolicy:
    """Propose a random site, accept its growth with probability ``min(1, exp(gain / T_t))``.

    Each step: draw a site uniformly among the valid ones, measure its real loss drop by the
    environment's amplitude search for that site only (``env.evaluate_candidate(site)``, on
    the statistics split; cheaper than ``env.evaluate_candidates()`` which searches every
    site; the env counts it in ``compute``), and set

        ``gain = loss_drop / stats_loss - threshold``.

    The drop is ``>= 0`` (``gamma = 0`` is on the search grid), so the ``threshold`` is what
    makes small relative drops negative gains. The proposal grows with probability
    ``min(1, exp(gain / T_t))`` (growing it runs the search again inside ``env.step``),
    otherwise growth is skipped. ``T_t = T0 * decay ** t`` with ``t = info["step"]``
    (``decay=1``: constant temperature). As ``T -> 0`` only gains ``>= 0`` are accepted; at a
    large ``T`` almost every proposal is.

    Parameters
    ----------
    T0
        Initial temperature (> 0). Default 0.01.
    decay
        Factor per step, in ``(0, 1]``. Default 0.9.
    threshold
        Relative loss drop counted as zero gain. Default 0.01.
    seed
        Default seed used when ``reset(None)`` is called; ``reset(seed)`` overrides it.

    Attributes
    ----------
    last
        ``{"site", "loss_drop", "gain", "temperature", "p_accept", "accepted"}`` of the last
        proposal (``None`` before the first or when no site was valid).
    """

    name = "annealing"

    def __init__(
        self,
        T0: float = 0.01,  # noqa: N803 (the usual symbol)
        decay: float = 0.9,
        threshold: float = 0.01,
        seed: int | None = None,
    ) -> None:
        if not T0 > 0:
            raise ValueError(f"T0: expected a number > 0, got {T0!r}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay: expected a number in (0, 1], got {decay!r}")
        self.T0, self.decay, self.threshold, self.seed = float(T0), float(decay), threshold, seed
        self._rng = make_rng(seed)
        self.last: dict[str, Any] | None = None

    def reset(self, seed: int | None = None) -> None:
        """Reseed the policy's generator with ``seed`` (or the constructor's seed)."""
        self._rng = make_rng(self.seed if seed is None else seed)
        self.last = None

    def temperature(self, step: int) -> float:
        """``T0 * decay ** step``."""
        return self.T0 * self.decay**step

    def act(self, observation: np.ndarray, info: dict[str, Any], env: PolicyEnv) -> int:
        """Grow the proposed site if the Metropolis test accepts it, else skip."""
        self.last = None
        sites = valid_sites(info, env)
        if sites.size == 0:
            return env.skip_action
        site = int(self._rng.choice(sites))
        drop = float(env.evaluate_candidate(site).loss_drop)
        gain = drop / max(float(info["stats_loss"]), 1e-30) - self.threshold
        temperature = self.temperature(int(info["step"]))
        p_accept = acceptance_probability(gain, temperature)
        accepted = bool(self._rng.random() < p_accept)
        self.last = {
            "site": site,
            "loss_drop": drop,
            "gain": gain,
            "temperature": temperature,
            "p_accept": p_accept,
            "accepted": accepted,
        }
        return site if accepted else env.skip_action
