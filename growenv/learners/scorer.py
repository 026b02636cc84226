"""SlotScorer: Q-values of every growth action from one network shared by all slots.

A growth env's observation is a table: one row per slot (DAG: an expansion slot, rows of
:data:`~growenv.env.features.EXPANSION_TABLE`; MLP/conv: a site, rows of
:data:`~growenv.env.features.SITE_TABLE`), for DAGs one row per node index
(:data:`~growenv.env.features.NODE_TABLE`), then the globals
(:data:`~growenv.env.features.GLOBAL_TABLE`). The scorer applies the **same** MLP to every
slot's row (with the globals and, for DAGs, the rows of the slot's source and target nodes),
so the same weights score any number of slots: a scorer trained with ``max_nodes=8`` runs on
``max_nodes=12``. The two actions after the slots (skip, stop) are scored by a head on the
globals and on the masked mean of the slot embeddings. One scorer serves one observation
*kind* (``"dag"`` or ``"sites"``): the row sizes differ.

A scorer's *action set* (:data:`ACTION_SETS`, saved with it) says which of the env's valid
actions it chooses among: ``"all"``, or ``"best-per-kind"`` (DAG only): for each expansion
kind the valid slot of largest estimated gain (:func:`best_per_kind_mask`, pure), so the
agent learns which kind to grow at each step (a schedule that contains round-robin and the
greedy rule) instead of ranking every slot; ``"best-per-kind-skip"`` adds the skip action
(train without growing), so the agent also learns *when* to grow.

:func:`parse_observation` (pure) splits flat observations by an :class:`ObsLayout`, which
:func:`layout_of` derives from an :class:`~growenv.env.config.EnvConfig` and
:func:`infer_layout` from an observation's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from growenv.env.features import EXPANSION_TABLE, GLOBAL_TABLE, NODE_TABLE, SITE_TABLE
from growenv.errors import UserError
from growenv.harness.lifecycle import atomic_path

__all__ = [
    "ACTION_SETS",
    "BEST_MODEL_FILE",
    "DAG_ACTION_SETS",
    "KINDS",
    "MODEL_FILE",
    "NUM_EXTRA",
    "ObsLayout",
    "SlotScorer",
    "action_set_mask",
    "best_per_kind_mask",
    "infer_layout",
    "layout_of",
    "load_scorer",
    "parse_observation",
    "save_scorer",
    "slot_nodes",
    "slots_mask",
]

MODEL_FILE = "model.pt"
"""The last model of a value run (scorer settings and weights, see :func:`save_scorer`)."""
BEST_MODEL_FILE = "best_model.pt"
"""The model of a value run's best in-training evaluation on the selection teachers."""
KINDS = ("dag", "sites")
"""Observation kinds: DAG expansion slots with node rows, or numbered sites."""
NUM_EXTRA = 2
"""Actions after the slots: skip, then stop."""
MAX_INFERRED_NODES = 256
ACTION_SETS = ("all", "best-per-kind", "best-per-kind-skip", "slots")
"""Which valid actions a scorer chooses among: every one, per expansion kind the slot of
largest estimated gain (:func:`best_per_kind_mask`), those and skip, or every valid slot
(:func:`slots_mask`: skip and stop only where no slot is valid)."""
DAG_ACTION_SETS = ("best-per-kind", "best-per-kind-skip")
"""The action sets that read expansion kinds, so need a DAG env."""
_EXP = tuple(f.name for f in EXPANSION_TABLE)
_KIND_COLUMNS = tuple(_EXP.index(f"kind_{k}") for k in ("edge", "node", "widen"))
_GAIN_COLUMN = _EXP.index("estimated_gain")


@dataclass(frozen=True)
class ObsLayout:
    """Where the parts of a flat observation lie.

    Attributes
    ----------
    kind
        ``"dag"`` or ``"sites"``.
    num_slots
        Slot rows (DAG: ``2 (M + 1)^2 - M``; sites: ``max_sites``).
    max_nodes
        DAG: most hidden nodes ``M`` (node rows ``M + 2``); sites: 0 (no node rows).
    """

    kind: str
    num_slots: int
    max_nodes: int = 0

    @property
    def row_size(self) -> int:
        """Features per slot row."""
        return len(EXPANSION_TABLE) if self.kind == "dag" else len(SITE_TABLE)

    @property
    def num_nodes(self) -> int:
        """Node rows (DAG: ``max_nodes + 2``; sites: 0)."""
        return self.max_nodes + 2 if self.kind == "dag" else 0

    @property
    def node_size(self) -> int:
        """Features per node row (0 for sites)."""
        return len(NODE_TABLE) if self.kind == "dag" else 0

    @property
    def global_size(self) -> int:
        """Global features."""
        return len(GLOBAL_TABLE)

    @property
    def size(self) -> int:
        """Length of the flat observation."""
        return self.num_slots * self.row_size + self.num_nodes * self.node_size + self.global_size


def layout_of(config: Any) -> ObsLayout:
    """The layout of the observations of an env with ``config`` (an
    :class:`~growenv.env.config.EnvConfig`, or a dict of its fields)."""
    from growenv.env.config import EnvConfig

    if not isinstance(config, EnvConfig):
        config = EnvConfig.from_kwargs(**dict(config))
    if config.expansions:
        return ObsLayout("dag", config.num_slots, config.max_nodes)
    return ObsLayout("sites", config.max_sites)


def infer_layout(size: int, kind: str) -> ObsLayout:
    """The layout of a flat observation of length ``size`` and ``kind``.

    Raises
    ------
    ValueError
        One line, when no env of ``kind`` gives observations of that length.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind == "sites":
        sites, rest = divmod(size - len(GLOBAL_TABLE), len(SITE_TABLE))
        if rest == 0 and sites >= 1:
            return ObsLayout("sites", sites)
    else:
        for m in range(1, MAX_INFERRED_NODES + 1):
            layout = ObsLayout("dag", 2 * (m + 1) ** 2 - m, m)
            if layout.size == size:
                return layout
            if layout.size > size:
                break
    raise ValueError(f"observation: expected the length of a {kind} env's observation, got {size}")


@lru_cache(maxsize=32)
def slot_nodes(max_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Node index of every slot's source and target (widen: target ``-1``), from
    :class:`~growenv.nets.dag.slots.SlotLayout`."""
    from growenv.nets.dag.slots import SlotLayout

    layout = SlotLayout(int(max_nodes))
    return np.asarray(layout.sources, dtype=np.int64), np.asarray(layout.targets, dtype=np.int64)


def parse_observation(
    obs: torch.Tensor, layout: ObsLayout
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Split flat observations ``(B, layout.size)`` into slot rows ``(B, S, row_size)``,
    node rows ``(B, N, node_size)`` (``None`` for sites) and globals ``(B, G)``.

    Raises
    ------
    ValueError
        One line, when the observations do not have ``layout.size`` entries.
    """
    if obs.ndim != 2 or obs.shape[1] != layout.size:
        raise ValueError(
            f"observation: expected shape (batch, {layout.size}) for {layout}, "
            f"got {tuple(obs.shape)}"
        )
    b, s, r = obs.shape[0], layout.num_slots, layout.row_size
    rows = obs[:, : s * r].reshape(b, s, r)
    end = s * r + layout.num_nodes * layout.node_size
    nodes = None
    if layout.kind == "dag":
        nodes = obs[:, s * r : end].reshape(b, layout.num_nodes, layout.node_size)
    return rows, nodes, obs[:, end:]


def best_per_kind_mask(
    obs: torch.Tensor, layout: ObsLayout, mask: torch.Tensor, skip: bool = False
) -> torch.Tensor:
    """Of the valid actions ``mask`` ``(B, S + 2)``, keep for each expansion kind (edge, node,
    widen) the valid slot of largest ``estimated_gain`` feature (ties: the lowest slot);
    skip and stop stay valid only in rows where no slot is (a DAG env's flat observations
    ``(B, layout.size)``). With ``skip``, a valid skip action is kept in every row.

    Raises
    ------
    ValueError
        One line, when ``layout`` is not a DAG layout.
    """
    if layout.kind != "dag":
        raise ValueError(f"action_set: 'best-per-kind' needs a dag env, got a {layout.kind} env")
    rows, _, _ = parse_observation(obs, layout)
    s = layout.num_slots
    slots = mask[:, :s]
    gain = rows[..., _GAIN_COLUMN]
    keep = torch.zeros_like(slots)
    for col in _KIND_COLUMNS:
        of_kind = slots & (rows[..., col] > 0.5)
        score = gain.masked_fill(~of_kind, float("-inf"))
        best = score.argmax(1)
        has = of_kind.any(1)
        keep[torch.arange(len(best), device=mask.device)[has], best[has]] = True
    extra = mask[:, s:] & ~keep.any(1, keepdim=True)
    if skip:
        extra[:, 0] = mask[:, s]
    return torch.cat([keep, extra], 1)


def slots_mask(mask: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Of the valid actions ``mask`` ``(B, S + 2)``, every valid slot; skip and stop stay
    valid only in rows where no slot is."""
    slots = mask[:, :num_slots]
    return torch.cat([slots, mask[:, num_slots:] & ~slots.any(1, keepdim=True)], 1)


def action_set_mask(
    action_set: str, obs: torch.Tensor, layout: ObsLayout, mask: torch.Tensor
) -> torch.Tensor:
    """The actions of the valid ``mask`` ``(B, S + 2)`` that ``action_set`` chooses among:
    ``mask`` itself for ``"all"``, :func:`best_per_kind_mask` for ``"best-per-kind"`` (with
    skip kept for ``"best-per-kind-skip"``), :func:`slots_mask` for ``"slots"``."""
    if action_set == "all":
        return mask
    if action_set == "slots":
        return slots_mask(mask, mask.shape[1] - NUM_EXTRA)
    return best_per_kind_mask(obs, layout, mask, skip=action_set == "best-per-kind-skip")


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class SlotScorer(nn.Module):
    """Q-values ``(B, S + 2)`` of every slot, skip and stop, from a network shared by slots.

    Slot ``i``'s input is its row, the globals and (DAG, ``node_inputs=True``) the rows of
    its source and target nodes (zero for a widen's target); an MLP embeds it, and
    ``Q_i = w . [h_i, mean_j h_j]`` (mean over the present slots). Skip and stop are scored
    by an MLP of ``[globals, mean_j h_j]``. Inputs are standardised by per-feature
    statistics kept as buffers (saved with the weights; identity until
    :meth:`set_normalisation`). Permuting slot inputs permutes the slot Q-values.

    Parameters
    ----------
    kind
        ``"dag"`` or ``"sites"`` (which row tables the observations hold).
    hidden
        Hidden sizes of the slot MLP (the extra head uses the same).
    node_inputs
        DAG: add the source and target node rows to each slot's input.
    action_set
        ``"all"``, ``"slots"``, ``"best-per-kind"`` or ``"best-per-kind-skip"`` (the last two
        DAG only): the valid actions :meth:`forward` leaves unmasked (:meth:`allowed`).
    """

    def __init__(
        self,
        kind: str = "dag",
        hidden: tuple[int, ...] = (64, 64),
        node_inputs: bool = True,
        action_set: str = "all",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        if action_set not in ACTION_SETS:
            raise ValueError(f"action_set: expected one of {ACTION_SETS}, got {action_set!r}")
        if action_set in DAG_ACTION_SETS and kind != "dag":
            raise ValueError(f"action_set: {action_set!r} needs kind 'dag', got {kind!r}")
        self.action_set = action_set
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden: expected one or more sizes >= 1, got {hidden!r}")
        self.kind, self.hidden = kind, hidden
        self.node_inputs = bool(node_inputs) and kind == "dag"
        probe = ObsLayout(kind, 1, 1 if kind == "dag" else 0)
        self.row_size, self.node_size = probe.row_size, probe.node_size
        self.global_size = probe.global_size
        n_in = self.row_size + self.global_size + (2 * self.node_size if self.node_inputs else 0)
        self.input_size = n_in
        self.encoder = _mlp((n_in, *hidden))
        self.slot_head = nn.Linear(2 * hidden[-1], 1)
        self.extra = nn.Sequential(
            _mlp((self.global_size + hidden[-1], *hidden)), nn.Linear(hidden[-1], NUM_EXTRA)
        )
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments (saved with the weights)."""
        return {
            "kind": self.kind,
            "hidden": list(self.hidden),
            "node_inputs": self.node_inputs,
            "action_set": self.action_set,
        }

    def allowed(self, obs: torch.Tensor, layout: ObsLayout, mask: torch.Tensor) -> torch.Tensor:
        """The actions of the valid ``mask`` ``(B, S + 2)`` that the scorer's action set
        chooses among (:func:`action_set_mask`)."""
        return action_set_mask(self.action_set, obs, layout, mask)

    def slot_inputs(self, obs: torch.Tensor, layout: ObsLayout) -> tuple[torch.Tensor, ...]:
        """``(inputs (B, S, input_size) unnormalised, present (B, S), globals (B, G))`` of
        flat observations."""
        if layout.kind != self.kind:
            raise ValueError(
                f"observation: expected a {self.kind} env's (the scorer was trained there), "
                f"got a {layout.kind} env's"
            )
        rows, nodes, glob = parse_observation(obs, layout)
        b, s = rows.shape[:2]
        parts = [rows, glob[:, None, :].expand(b, s, glob.shape[1])]
        if self.node_inputs:
            assert nodes is not None
            src, tgt = (torch.as_tensor(a, device=obs.device) for a in slot_nodes(layout.max_nodes))
            padded = torch.cat([nodes, torch.zeros_like(nodes[:, :1])], dim=1)  # -1: zeros
            parts += [padded[:, src], padded[:, tgt]]
        return torch.cat(parts, dim=-1), rows[..., 0] > 0.5, glob

    def score(
        self, inputs: torch.Tensor, present: torch.Tensor, globals_: torch.Tensor
    ) -> torch.Tensor:
        """Q ``(B, S + 2)`` of unnormalised slot inputs, their presence and the globals."""
        x = (inputs - self.in_mean) / self.in_std
        h = self.encoder(x)
        weight = present.to(h.dtype)[..., None]
        pooled = (h * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        q_slots = self.slot_head(torch.cat([h, pooled[:, None].expand_as(h)], -1))[..., 0]
        g = (globals_ - self.in_mean[self.row_size : self.row_size + self.global_size]) / (
            self.in_std[self.row_size : self.row_size + self.global_size]
        )
        q_extra = self.extra(torch.cat([g, pooled], -1))
        return torch.cat([q_slots, q_extra], -1)

    def forward(
        self, obs: torch.Tensor, layout: ObsLayout, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Q ``(B, S + 2)`` of flat observations ``(B, layout.size)``; actions where ``mask``
        (``(B, S + 2)`` bool) is false, or outside the action set (:meth:`allowed`), get
        ``-inf``."""
        q = self.score(*self.slot_inputs(obs, layout))
        if mask is not None:
            q = q.masked_fill(~self.allowed(obs, layout, mask), float("-inf"))
        return q

    @torch.no_grad()
    def set_normalisation(self, obs: torch.Tensor, layout: ObsLayout) -> None:
        """Freeze the input statistics to the mean and std of the present slots' inputs of
        ``obs`` (a warm-up's observations); std floors at 1e-3 (constant features)."""
        inputs, present, _ = self.slot_inputs(obs, layout)
        x = inputs[present]
        if x.shape[0] == 0:
            return
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0, unbiased=False).clamp(min=1e-3))


def save_scorer(scorer: SlotScorer, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``{"scorer": settings, "state_dict": weights and input statistics, ...extra}``
    atomically to ``path``."""
    data = {
        "scorer": scorer.settings(),
        "state_dict": {k: v.detach().cpu() for k, v in scorer.state_dict().items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_scorer(path: str | Path, device: str = "cpu") -> SlotScorer:
    """The :class:`SlotScorer` saved in ``path`` by :func:`save_scorer`.

    Raises
    ------
    UserError
        One line, when ``path`` is missing or not a saved scorer.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"path: expected a saved value model (.pt), got {path}, which is missing")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
        settings = data["scorer"]
        scorer = SlotScorer(
            settings["kind"],
            tuple(settings["hidden"]),
            settings["node_inputs"],
            settings.get("action_set", "all"),  # models saved before action sets: "all"
        )
        scorer.load_state_dict(data["state_dict"])
    except Exception as err:  # noqa: BLE001 (any failure means: not a saved scorer)
        raise UserError(
            f"path: expected a value model saved by growenv, got {path} ({type(err).__name__})"
        ) from None
    return scorer.to(device).eval()
