"""GrowthEnv: the Gymnasium environment for growth decisions."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from growenv.amplitude import AmplitudeResult, default_gammas
from growenv.data.tasks import Task
from growenv.env.config import EnvConfig
from growenv.env.dag import DagSlots
from growenv.env.episode import (
    GAIN_RESOLUTION,
    OBS_BOUND,
    PHASES,
    Episode,
    Measurement,
    TaskSource,
    resolve_task_source,
    slot_table,
)
from growenv.env.features import TOP_K
from growenv.nets.base import GrowingNet
from growenv.nets.dag import DagReport, Expansion, costs
from growenv.nets.dag.expansions import bottleneck as dag_bottleneck
from growenv.nets.dag.expansions import fit_neurons
from growenv.nets.family import NEEDS_IMAGES
from growenv.threads import using_threads
from growenv.training import evaluate, make_optimizer, train_steps
from growenv.validation import integer

__all__ = ["GAIN_RESOLUTION", "OBS_BOUND", "PHASES", "GrowthEnv"]


def race_checkpoints(drop_worst_at: int | Sequence[int] | None, steps: int) -> list[int]:
    """The checked, sorted step counts at which a race of rollouts of ``steps`` steps stops
    its worst (:meth:`GrowthEnv.lookahead_losses`): ``[]`` for ``None``, one entry for an
    int, the entries of a list or tuple (repeats kept).

    Raises
    ------
    ValueError
        One line naming ``drop_worst_at``: an entry that is not an int in ``[1, steps)``,
        or an empty list.
    """
    if drop_worst_at is None:
        return []
    entries = list(drop_worst_at) if isinstance(drop_worst_at, (list, tuple)) else [drop_worst_at]
    if not entries:
        raise ValueError("drop_worst_at: expected a step count or a non-empty list of them, got []")
    checked = []
    for entry in entries:
        at = integer("drop_worst_at", entry, 1)
        if at >= steps:
            raise ValueError(
                f"drop_worst_at: expected fewer than the rollouts' {steps} steps, got {at}"
            )
        checked.append(at)
    return sorted(checked)


class GrowthEnv(gym.Env):
    """Decide where and when a network grows.

    ## Description
    An episode trains a small MLP on a task (default: teacher-student regression, Douka et
    al. 2025: a random SELU teacher 20 -> 50 -> 50 -> 1 with a skip from the input to the
    second hidden state; the student starts at width 1 per hidden layer). Each step the
    agent picks a hidden site to grow by ``neurons_per_growth`` TINY neurons (with the
    amplitude factor found by a line search on ``search_split``, by default training samples
    disjoint from the statistics split the neurons are solved on), or skips
    growth, or stops; then the network trains for ``train_steps`` optimizer steps and the
    TINY statistics of every site are measured for the next observation.

    ## Action Space
    ``Discrete(max_sites + 2)``: ``i < max_sites`` grows site ``i`` (hidden state ``i``),
    ``max_sites`` skips growth (train only), ``max_sites + 1`` stops the episode.
    :meth:`action_masks` gives the valid actions (sites that exist, whose best neuron
    gains more than float32 noise, ``lambda_1^2 > 1e-7 L``, and that fit the parameter
    budget). Every action of the space is accepted: by default (``invalid_action="skip"``)
    a masked action is replaced by the skip action, a no-op for the network
    (``info["invalid_action"]`` is ``True``), so learners without masks, ``action_space.sample()``
    and the env checkers work; ``invalid_action="raise"`` makes it raise ``ValueError``.

    ## Observation Space
    ``Box(-1e6, 1e6, (max_sites * 13 + 10,), float32)``: per site (row-major, zero rows
    for sites the net does not have) then global features, as in the feature table of
    :mod:`growenv.env.features` (these tables are generated from it; a test checks).
    Gains are divided by the current statistics loss ``L``;
    ``symlog(x) = sign(x) log(1 + |x|)``.

    | index (per site s: 13 s + i) | feature | formula | range |
    |---|---|---|---|
    | 0 | present | site present (mask) | {0, 1} |
    | 1 | log_width | log(1 + width) | [0, inf) |
    | 2 | update_gain | symlog(d / L), best-update gain | [0, inf) |
    | 3 | lambda1_sq | symlog(lambda_1^2 / L) | [0, inf) |
    | 4 | lambda2_sq | symlog(lambda_2^2 / L) | [0, inf) |
    | 5 | lambda3_sq | symlog(lambda_3^2 / L) | [0, inf) |
    | 6 | sum_lambda_sq | symlog(sum of significant lambda^2 / L) | [0, inf) |
    | 7 | bottleneck | symlog(Psi / L), bottleneck | [0, inf) |
    | 8 | candidate_gain | symlog(gain of the candidate / L) | [0, inf) |
    | 9 | gain_per_relative_param | symlog((gain / L) / (added params / params)) | [0, inf) |
    | 10 | relative_param_cost | symlog(added params / params) | [0, inf) |
    | 11 | relative_flop_cost | symlog(added FLOPs / FLOPs) | [0, inf) |
    | 12 | significant_fraction | significant eigenvalues / neurons per growth (<= 4) | [0, 4] |

    | index (13 max_sites + i) | feature | formula | range |
    |---|---|---|---|
    | 0 | log_train_loss | log train loss (mean of the last training phase) | R |
    | 1 | log_val_loss | log validation loss | R |
    | 2 | val_accuracy | validation accuracy (0 for regression) | [0, 1] |
    | 3 | log_params | log parameters | [0, inf) |
    | 4 | log_flops | log FLOPs (multiply-adds per sample) | [0, inf) |
    | 5 | compute_used | compute used / max_compute (log10(MACs) / 20 without a budget) | [0, inf) |
    | 6 | param_budget_left | parameter budget left / max_params (1 without a budget) | [0, 1] |
    | 7 | step_fraction | step / max_steps | [0, 1] |
    | 8 | generalisation_gap | log(val loss / train loss) | R |
    | 9 | last_val_improvement | symlog of the last step's relative val-loss decrease | R |

    ## Rewards
    ``r = log(L_val(t-1) / L_val(t)) - cost_per_param * added params - cost_per_flop *
    added FLOPs``: the relative (logarithmic) validation-loss decrease minus the cost of
    growth (zero by default, recovering pure loss). Stopping gives 0. The log ratio
    telescopes: an episode's undiscounted return is ``log(L_val(0) / L_val(T))`` minus the
    costs, so maximising it means reaching the lowest final loss at the given budget.
    ``reward="relative"`` gives ``(L_val(t-1) - L_val(t)) / L_val(t-1)`` instead, which does
    not telescope (an agent can collect more of it by delaying growth).

    ## Starting State
    A task (fixed, or drawn from a distribution by the reset seed), a student with
    ``start_width`` neurons per hidden layer, trained ``train_steps`` steps.

    ## Episode End
    Terminated on the stop action or when the compute budget is spent; truncated after
    ``max_steps`` steps. Stepping after the end raises ``RuntimeError``: call ``reset()``.

    ## Arguments
    ``GrowthEnv(task=None, config=None, render_mode=None, **kwargs)``: the settings are an
    :class:`~growenv.env.config.EnvConfig`, given as ``config=`` or as its fields as keywords
    (``gym.make("growenv/Grow-v1", train_steps=50)``); ``task`` may also be a ``Task``, a
    ``TeacherStudentDistribution`` or a callable ``rng -> Task`` (not JSON, so not in the
    config). Fields: ``task`` ("teacher_student", "multi_sin", "digits", "cifar10",
    "teacher_student_distribution"), ``task_kwargs``, ``device`` (the torch device of the
    env's nets and data), ``hidden_layers``, ``start_width``, ``activation``, ``max_sites``,
    ``neurons_per_growth`` (int or "auto": the significant ones), ``train_steps``,
    ``batch_size``, ``optimizer``, ``lr``, ``max_steps``, ``max_params``, ``max_compute``
    (MACs), ``cost_per_param``, ``cost_per_flop``, ``reward`` ("log_ratio", the default, or
    "relative"), ``method`` ("tiny", "gradmax", "random"), ``invalid_action`` ("skip", the
    default, or "raise"), ``dtype`` ("float32" or "float64": network, data and statistics),
    ``net`` (a registered net family: "mlp", or "conv": a
    :class:`~growenv.nets.conv.net.GrowingConvNet` with ``hidden_layers`` stages of
    ``start_width`` channels, stride 1 then 2, on image tasks), ``kernel`` (conv family
    option: "full" or "restricted" TINY channels), ``augment`` (random crop with padding 4
    and horizontal flip of the training minibatches of image tasks), ``threads`` (torch CPU
    threads of the env's work, default 1, the caller's count restored after each call; None
    leaves torch's setting); ``max_nodes``, ``neuron_fit``, ``start_graph`` and ``fit_scope``
    (the dag family's); and ``render_mode`` ("ansi" or "rgb_array"). Defaults and meanings:
    ``docs/environment.md`` (its table is generated from the config's fields).

    ## DAG growth
    ``net="dag"`` grows a :class:`~growenv.nets.dag.net.GrowingDAG` from the empty graph:
    the actions are the fixed expansion slots of
    :class:`~growenv.nets.dag.slots.SlotLayout` (edge, new node and widen over node indices
    by creation order, up to ``max_nodes`` hidden nodes; ``max_sites`` is then the number of
    slots), then skip, then stop; the observation has one row per slot and per node index
    (:data:`~growenv.env.features.EXPANSION_TABLE`, :data:`~growenv.env.features.NODE_TABLE`)
    before the global features. ``docs/environment.md`` has the details.

    ## Version History
    * v1, issue #23: ``search_split="train"`` (the amplitude line search runs on training
      samples, not on the statistics split the closed form is solved on, which overfit: on
      CIFAR-10 one ``in -> out`` edge raised the validation loss from 2.31 to 3.26).
      ``growenv/Grow-v0`` keeps ``search_split="stats"``.
    * v0, issue #23: ``fit_scope`` (DAG: ``"chosen"`` fits only the searched and grown
      expansions, charged as ``"fit"``); the default ``"all"`` is unchanged.
    * v0, issue #21: ``net="dag"`` (``max_nodes``, ``neuron_fit``, ``start_graph``); MLP and
      conv episodes bitwise unchanged.
    * v0, growenv 0.1.0 (issue #20): ``invalid_action`` defaults to "skip" (was "raise"),
      ``step()`` after the end raises, ``threads`` (default 1). Valid-action episodes are
      unchanged, so the id stays v0.
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: TaskSource | None = None,
        config: EnvConfig | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError(
                f"GrowthEnv: give either config or keyword arguments, not both (got config "
                f"and {', '.join(map(repr, kwargs))})"
            )
        if config is None:
            named = "teacher_student" if task is None else task
            config = EnvConfig.from_kwargs(task=named if isinstance(named, str) else None, **kwargs)
        elif task is not None and not isinstance(task, str):
            config = config.replace(task=None)
        elif isinstance(task, str):
            config = config.replace(task=task)
        if config.task is None and (task is None or isinstance(task, str)):
            raise ValueError("task: the config has task=None; pass the task object as task=")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}"
            )
        self.config = config
        self.render_mode = render_mode
        self.family = config.family
        self.device = config.torch_device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: CUDA was requested but torch.cuda.is_available() is False")
        self.dtype = config.torch_dtype
        task_kwargs = config.task_kwargs
        if NEEDS_IMAGES in self.family.capabilities and config.task == "cifar10":
            task_kwargs = {"flatten": False, **task_kwargs}
        with using_threads(config.threads):
            source = resolve_task_source(
                config.task if config.task is not None else task, task_kwargs
            )
        self.episode = Episode(config, source, self.family.prepare_task)
        # net="dag": the episode's slot bookkeeping (None for families grown by sites)
        self.dag: DagSlots | None = DagSlots(config.max_nodes) if config.expansions else None

        # the growth actions: sites, or the DAG's expansion slots (config.num_slots)
        self.max_sites = self.episode.num_slots
        self.observation_space = gym.spaces.Box(
            -OBS_BOUND, OBS_BOUND, (self.episode.observation_size,), np.float32
        )
        self.action_space = gym.spaces.Discrete(self.episode.num_actions)
        self.skip_action = self.episode.skip_action
        self.stop_action = self.episode.stop_action
        self.net: GrowingNet | None = None
        self.report = None

    # ------------------------------------------------------------------ config views
    # the settings policies, baselines and benchmarks read (all are in ``self.config``)
    @property
    def max_steps(self) -> int:
        return self.config.max_steps

    @property
    def train_steps(self) -> int:
        return self.config.train_steps

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def lr(self) -> float:
        return self.config.lr

    @property
    def optimizer_name(self) -> str:
        return self.config.optimizer

    @property
    def activation(self) -> str:
        return self.config.activation

    @property
    def start_width(self) -> int:
        return self.config.start_width

    # ------------------------------------------------------------------ episode views
    @property
    def task(self) -> Task | None:
        """The current episode's task (on the env's device and dtype)."""
        return self.episode.task

    @property
    def step_count(self) -> int:
        return self.episode.step_count

    @property
    def compute(self) -> float:
        """Multiply-adds spent in this episode (see :attr:`compute_by_phase`)."""
        return self.episode.compute

    @property
    def compute_by_phase(self) -> dict[str, float]:
        return self.episode.compute_by_phase

    @property
    def seconds(self) -> dict[str, float]:
        """Wall seconds per phase in this episode."""
        return self.episode.seconds

    @property
    def history(self) -> list[dict]:
        return self.episode.history

    @property
    def slot_layout(self):
        """The DAG's :class:`~growenv.nets.dag.slots.SlotLayout` (slot <-> ``(kind, source
        index, target index)``), or ``None`` for families grown by sites."""
        return None if self.dag is None else self.dag.layout

    # ------------------------------------------------------------------ api
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        with using_threads(self.config.threads):
            self.net = self.new_episode(seed)
            self.optimizer = make_optimizer(self.net, self.config.optimizer, lr=self.config.lr)
            self._train_and_measure()
            return self.episode.observation(), self.episode.info()

    def new_episode(self, seed: int | None = None) -> GrowingNet:
        """Start an episode without training: seed ``np_random`` (as ``reset`` does), draw
        the task and generators (:meth:`Episode.start`) and return the start net (not
        assigned to :attr:`net`). The lockstep vector env starts its episodes with it."""
        super().reset(seed=None if seed is None else int(seed))
        self.episode.start(self.np_random)
        self._input_factors = None
        cfg = self.config
        widths = [max(cfg.start_width, self.family.min_width)] * cfg.hidden_layers
        if self.dag is not None and cfg.start_graph == "empty":
            widths = []  # the empty graph: in, out, no edge
        net = self.build_net(widths, self.episode.init_generator)
        if self.dag is not None:
            self.dag.start(net)
        return net

    def episode_task(self, seed: int) -> Task:
        """The task (on the env's device and dtype) that ``reset(seed=seed)`` gives, drawn
        without training a network (static baselines train their own, see
        :mod:`~growenv.harness.baselines`); afterwards :meth:`build_net` builds nets for it. Call
        :meth:`reset` before stepping."""
        with using_threads(self.config.threads):
            self.new_episode(int(seed))
        self.net = None
        return self.task

    def build_net(self, widths: list[int], generator: torch.Generator | None = None) -> GrowingNet:
        """A fresh student with hidden ``widths`` for the current task, built as this env
        builds its episodes' networks (by the net family; the env's activation, device and
        dtype). Static baselines of a given size use it (:mod:`~growenv.harness.baselines`)."""
        if self.task is None:
            raise RuntimeError("build_net: call reset() first (the task sets the input size)")
        return self.family.build(
            self.task,
            list(widths),
            activation=self.config.activation,
            device=self.device,
            generator=generator,
            dtype=self.dtype,
        )

    def step(self, action):
        if self.net is None:
            raise RuntimeError("step: call reset() before step()")
        episode = self.episode
        action, invalid = episode.validate_action(action)
        if action == self.stop_action:
            return episode.stop()
        with using_threads(self.config.threads):
            before = episode.begin_step()
            if action < self.max_sites:
                self.grow(action)
            self._train_and_measure()
            return episode.end_step(before, invalid)

    def action_masks(self) -> np.ndarray:
        """Valid actions: existing sites whose best neuron gains more than rounding noise
        (``lambda_1^2 > 1e-7 L``) and whose candidate fits the parameter budget."""
        return self.episode.action_masks()

    def describe_action(self, action: int) -> str:
        """``"grow site i"``, ``"skip growth"`` or ``"stop"``."""
        return self.episode.describe_action(action)

    def evaluate_candidates(self, slots: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Real loss drop of every candidate after its gamma search (costly: one search each;
        DAG: one batched search of all of them).

        Parameters
        ----------
        slots
            Only these slots (sites) are searched (the valid ones among them); default all.

        Returns ``{"loss_drop": (max_sites,), "gamma": (max_sites,)}``; invalid (or not
        searched) slots get ``-inf`` drop. The search runs on the search split and is
        counted in compute. With ``fit_scope="chosen"`` the searched slots' neurons are
        fitted first (:meth:`fit_expansions`, phase ``"fit"``).
        """
        if self.net is None:
            raise RuntimeError("evaluate_candidates: call reset() first")
        drops = np.full(self.max_sites, -np.inf)
        gammas = np.zeros(self.max_sites)
        mask = self.action_masks()
        if slots is not None:
            chosen = np.zeros_like(mask)
            for s in slots:
                chosen[integer("slots", int(s), 0, self.max_sites - 1)] = True
            mask = mask & chosen
        with using_threads(self.config.threads):
            if self.dag is not None:
                valid = [int(s) for s in np.flatnonzero(mask[: self.max_sites])]
                self.fit_expansions(valid)
                for slot, result in zip(valid, self._search_slots(valid), strict=True):
                    drops[slot], gammas[slot] = float(result.loss_drop), float(result.gamma)
                return {"loss_drop": drops, "gamma": gammas}
            for site in range(self.net.num_sites):
                if not mask[site]:
                    continue
                result = self.evaluate_candidate(site)
                drops[site], gammas[site] = float(result.loss_drop), float(result.gamma)
        return {"loss_drop": drops, "gamma": gammas}

    def evaluate_candidate(self, site: int) -> AmplitudeResult:
        """One amplitude (gamma) search for site ``site``'s candidate, without growing.

        The search runs on the search split (``config.search_split``) and is counted in the
        episode's
        compute (phase ``"search"``) and wall time, as a growth step's search is. With
        ``fit_scope="chosen"`` the slot's neurons are fitted first if they are not yet
        (:meth:`fit_expansions`, phase ``"fit"``).

        Parameters
        ----------
        site
            A site of the current network (``0 <= site < net.num_sites``); DAG: a slot the
            current graph offers (``0 <= site < max_sites``).

        Returns
        -------
        AmplitudeResult
            The chosen ``gamma``, the real ``loss_drop`` at it, and ``candidate`` (the new
            neurons, edge or widening that the family's ``apply_growth`` would add).
        """
        if self.net is None:
            raise RuntimeError("evaluate_candidate: call reset() first")
        if self.dag is not None:
            slot = integer("site", site, 0, self.max_sites - 1)
            self.dag.expansion(slot)  # one line when the graph does not offer it
            with using_threads(self.config.threads):
                self.fit_expansions([slot])
                return self._search_slots([slot])[0]
        site = integer("site", site, 0, self.net.num_sites - 1)
        start = time.perf_counter()
        cfg = self.config
        k = cfg.candidate_neurons
        search = self.episode.search
        with using_threads(cfg.threads):
            cand = self.report.sites[site].candidate(
                k, method=cfg.method, generator=self.episode.generator
            )
            result = self.family.amplitude_search(
                self.net, cand, search.x, search.y, loss=self.task.loss
            )
        macs = self.family.search_macs(self.net, site, len(default_gammas()), len(search))
        self.episode.charge("search", macs, time.perf_counter() - start)
        result.candidate = cand
        return result

    @property
    def fits_pending(self) -> bool:
        """Whether the DAG's neuron fits are done on demand (``fit_scope="chosen"``): the
        statistics phase solves TINY's closed form only, and :meth:`fit_expansions` fits the
        expansions a search or a growth needs."""
        return self.config.fit_scope == "chosen"

    def unfitted(self, slots: Sequence[int]) -> list[Expansion]:
        """The expansions of ``slots`` (offered by the current graph) whose neurons still
        need their fit: new nodes and widenings not fitted for the current report, each once
        (empty unless :attr:`fits_pending`)."""
        if not self.fits_pending:
            return []
        todo: list[Expansion] = []
        for s in slots:
            e = self.dag.expansion(int(s))
            if e.kind != "edge" and e.fitted is None and all(e is not t for t in todo):
                todo.append(e)
        return todo

    def charge_fits(self, expansions: Sequence[Expansion], seconds: float = 0.0) -> None:
        """Charge fitted ``expansions`` to the episode's ``"fit"`` phase: their cost model
        (:attr:`Expansion.fit_macs`) and ``seconds`` of wall time."""
        self.episode.charge("fit", float(sum(e.fit_macs for e in expansions)), seconds)

    def fit_expansions(self, slots: Sequence[int]) -> None:
        """``fit_scope="chosen"``: fit the neurons of ``slots``' new-node and widening
        expansions that are not fitted yet (:func:`~growenv.nets.dag.expansions.fit_neurons`,
        the same seeds as the statistics phase's fit of every expansion with
        ``fit_scope="all"``, so the same neurons), charged as ``"fit"``; nothing otherwise.

        Parameters
        ----------
        slots
            Slots the current graph offers.
        """
        todo = self.unfitted(slots)
        if not todo:
            return
        start = time.perf_counter()
        with using_threads(self.config.threads):
            fit_neurons(self.net, self.report, todo, int(self.config.neurons_per_growth))
        self.charge_fits(todo, time.perf_counter() - start)

    def augmentation(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
        """The transform of training minibatches, ``(x, generator) -> x``: random crop
        (padding 4) and horizontal flip when ``augment=True`` (image tasks), else ``None``.
        Static baselines train with it so that they see the data the env's nets see."""
        if not self.config.augment:
            return None
        from growenv.data.cifar import augment
        from growenv.nets.conv.family import image_shape

        shape = image_shape(self.task)
        if shape is None:
            raise ValueError(f"augment: task {self.task.name!r} has no image inputs to augment")
        return lambda xb, gen: augment(xb, gen, image_shape=shape)

    # ------------------------------------------------------------------ internals
    def _search_slots(self, slots: list[int]) -> list[AmplitudeResult]:
        """DAG: one batched amplitude search of the slots' candidates on the search split
        (``config.search_split``), charged as ``"search"``; each result carries its
        ``candidate``."""
        if not slots:
            return []
        start = time.perf_counter()
        cfg = self.config
        k = cfg.candidate_neurons
        search = self.episode.search
        cands = [self.dag.expansion(s).candidate(k) for s in slots]
        results = self.family.amplitude_search_many(
            self.net, cands, search.x, search.y, loss=self.task.loss
        )
        macs = self.family.search_macs(self.net, cands, len(default_gammas()), len(search))
        self.episode.charge("search", macs, time.perf_counter() - start)
        for result, cand in zip(results, cands, strict=True):
            result.candidate = cand
        return results

    @property
    def rollout_steps(self) -> int:
        """The optimizer steps left in the episode, ``(max_steps - step_count) *
        train_steps``: a rollout's default length (:meth:`lookahead_losses`)."""
        return max(self.config.max_steps - self.step_count, 0) * self.config.train_steps

    def search_cost(self, slots: Sequence[int], fits: bool = True) -> float:
        """DAG: the MACs that :meth:`evaluate_candidates` of ``slots`` charges, known before it
        runs: the neuron fits still pending (``fit_scope="chosen"``) and one batched search.

        Parameters
        ----------
        slots
            Valid slots of the current graph (:meth:`evaluate_candidates` searches only the
            valid ones among what it is given).
        fits
            Count the pending fits (default); ``False``: the search alone (what it costs once
            :meth:`fit_expansions` has fitted them).
        """
        slots = self._planned_slots("search_cost", slots)
        fit_macs, previews = self._plans(slots)
        n = len(self.episode.search)
        search = n * (self.net.macs() + len(default_gammas()) * sum(previews))
        return float((sum(fit_macs) if fits else 0) + (search if slots else 0))

    def lookahead_costs(
        self, slots: Sequence[int], steps: int | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """DAG: the MACs that :meth:`lookahead_losses` charges for each of ``slots`` (its
        fit, search, training and validation), known before it runs.

        Parameters
        ----------
        slots, steps, batch_size
            As for :meth:`lookahead_losses` (``skip_action``: training alone).
        """
        slots = self._planned_slots("lookahead_costs", slots, skip=True)
        task = self.task
        if steps is None:
            steps = self.rollout_steps
        batch = self._rollout_batch(batch_size)
        samples = integer("steps", steps, 0) * min(batch, len(task.train))
        n, gammas, forward = len(self.episode.search), len(default_gammas()), self.net.macs()
        out = np.empty(len(slots))
        for i, slot in enumerate(slots):
            fit = search = added = 0
            if slot != self.skip_action:
                (fit,), (preview,) = self._plans([slot])
                search = n * (forward + gammas * preview)
                added = costs.planned_added_macs(self.dag.expansion(slot), self._neurons(slot))
            grown = forward + added
            train = costs.training_macs(grown, samples) if samples else 0
            out[i] = fit + search + train + costs.evaluate_macs(grown, len(task.val))
        return out

    def _planned_slots(self, name: str, slots: Sequence[int], skip: bool = False) -> list[int]:
        if self.net is None:
            raise RuntimeError(f"{name}: call reset() first")
        if self.dag is None:
            raise ValueError(f"{name}: only DAG envs (net='dag') plan their costs")
        top = self.max_sites if skip else self.max_sites - 1
        out = [integer("slots", int(s), 0, top) for s in slots]
        for s in out:
            if s != self.skip_action:
                self.dag.expansion(s)  # one line when the graph does not offer it
        return out

    def _neurons(self, slot: int) -> int:
        """Neurons of ``slot``'s searched candidate (its fit's count while it is pending)."""
        e = self.dag.expansion(slot)
        k = self.config.candidate_neurons
        if e.kind == "edge":
            return 0
        if e.fitted is None and self.fits_pending:
            return int(k)
        return e.candidate(k).num_neurons

    def _plans(self, slots: Sequence[int]) -> tuple[list[int], list[int]]:
        """Per slot: the MACs of its pending fit (once per expansion) and its preview per
        sample and amplitude."""
        pending = self.unfitted(slots)
        samples = self.report.statistics.samples[0].shape[-2] if pending else 0
        fits, previews, seen = [], [], []
        for s in slots:
            e = self.dag.expansion(s)
            first = any(e is p for p in pending) and all(e is not t for t in seen)
            seen.append(e)
            neurons = int(self.config.neurons_per_growth) if first else 0
            fits.append(costs.planned_fit_macs(e, samples, neurons) if first else 0)
            previews.append(costs.planned_preview_macs(self.net, e, self._neurons(s)))
        return fits, previews

    def lookahead_losses(
        self,
        slots: Sequence[int],
        steps: int | None = None,
        batch_size: int | None = None,
        nested: bool = False,
        drop_worst_at: int | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Validation loss of each slot's growth after ``steps`` more optimizer steps and no
        further growth, without changing the episode.

        Each slot is grown (at its searched amplitude, as :meth:`grow` does) on a copy of the
        env, then trained ``steps`` steps on the copy's minibatch stream: every slot's copy
        draws the same minibatches (common random numbers), and the env's own stream is
        untouched. The growths' searches and fits, the training and the validations are
        charged to this episode as ``"search"``.

        Parameters
        ----------
        slots
            Sites (DAG: slots) the current net offers, as for :meth:`evaluate_candidate`;
            ``skip_action`` rolls out "no growth" (training alone).
        steps
            Optimizer steps after the growth; default the rest of the episode's training,
            ``(max_steps - step_count) * train_steps`` (the rollout of "grow this, then never
            again").
        batch_size
            Minibatch size of the rollouts' training; default the episode's
            (``config.batch_size``). A smaller one makes a rollout cheaper by the same
            factor; every slot's copy still draws the same minibatches.
        nested
            With a ``batch_size`` below the episode's: each rollout step trains on the first
            ``batch_size`` samples of the minibatch the episode's own step would draw there
            (the same stream, subsampled), instead of the stream's next ``batch_size``
            samples. Same cost.
        drop_worst_at
            With 3 or more slots: after this many of the ``steps`` (``0 < drop_worst_at <
            steps``) every rollout is validated and the one of highest loss (ties: the later
            slot) stops there and reports ``inf``; the others go on to ``steps``, their losses
            those of uninterrupted rollouts. A list of step counts races in stages: at each
            entry the worst of the rollouts still running stops (an entry given twice stops
            two there), as long as 2 keep running (the entries beyond ``len(slots) - 2``,
            in increasing order, are ignored). Default ``None``: no rollout stops early.

        Returns
        -------
        numpy.ndarray
            One validation loss per slot (``inf`` where training diverged).
        """
        if self.net is None:
            raise RuntimeError("lookahead_losses: call reset() first")
        cfg, task = self.config, self.task
        if steps is None:
            steps = self.rollout_steps
        steps = integer("steps", steps, 0)
        batch = self._rollout_batch(batch_size)
        if not isinstance(nested, bool):
            raise ValueError(f"nested: expected True or False, got {nested!r}")
        if nested and batch > cfg.batch_size:
            raise ValueError(
                f"nested: subsamples the episode's minibatches of {cfg.batch_size}; expected "
                f"batch_size at most that, got {batch}"
            )
        draw = cfg.batch_size if nested else None
        drops = race_checkpoints(drop_worst_at, steps)[: max(0, len(slots) - 2)]
        stops = [*sorted(set(drops)), steps]
        start = time.perf_counter()
        losses = np.empty(len(slots))
        step_samples = min(batch, len(task.train))
        twins: dict[int, GrowthEnv] = {}  # the rollouts still running (one at a time unraced)
        terms: list[list[float]] = [[] for _ in slots]  # each slot's MACs, summed in order
        live, done = list(range(len(slots))), 0
        for stop in stops:
            for i in live:
                if done == 0:
                    twins[i] = copy.deepcopy(self)
                    if int(slots[i]) != self.skip_action:
                        twins[i].grow(int(slots[i]))
                twin = twins[i]
                with using_threads(cfg.threads):
                    if stop > done:
                        twin._train(stop - done, False, batch_size=batch, draw_batch=draw)
                    val_loss, _ = evaluate(twin.net, task.val.x, task.val.y, task.loss)
                loss = float(val_loss)
                losses[i] = loss if np.isfinite(loss) else np.inf
                if done == 0:  # the growth's search (and fit), charged to the twin
                    terms[i].append(twin.episode.compute - self.episode.compute)
                samples = (stop - done) * step_samples
                terms[i].append(self.family.training_macs(twin.net, samples) if samples else 0.0)
                terms[i].append(self.family.evaluate_macs(twin.net, len(task.val)))
                if stop == steps:
                    twins.pop(i).close()
            done = stop
            for _ in range(drops.count(stop)):  # the race: the worst stops here
                worst = max(live, key=lambda i: (losses[i], i))
                live.remove(worst)
                losses[worst] = np.inf
                twins.pop(worst).close()
        macs = 0.0
        for slot_terms in terms:
            for term in slot_terms:
                macs += term
        self.episode.charge("search", macs, time.perf_counter() - start)
        return losses

    def grow(self, site: int) -> None:
        """Grow slot ``site`` at its best amplitude (one search, charged as ``"search"``),
        keeping the optimizer state, and record it in the episode; no training or
        measurement (a step does those after). The lockstep DAG env grows its envs with it."""
        result = self.evaluate_candidate(site)
        grown = self.family.apply_growth(
            self.net, result.candidate, result.gamma, optimizer=self.optimizer
        )
        if self.dag is not None:
            self.dag.grown(grown)
        self.episode.record_growth(site, float(result.gamma), float(result.loss_drop))

    def _rollout_batch(self, batch_size: int | None) -> int:
        """A rollout's minibatch size: ``batch_size`` (checked) or the episode's."""
        return integer("batch_size", batch_size, 1, allow_none=True) or self.config.batch_size

    def _train(
        self,
        steps: int,
        check_finite: bool = True,
        batch_size: int | None = None,
        draw_batch: int | None = None,
    ) -> torch.Tensor:
        """``steps`` optimizer steps of the net on the episode's minibatch stream (no
        accounting; minibatches of ``batch_size``, default the config's, the first of each
        ``draw_batch`` drawn); the mean training loss."""
        task = self.task
        return train_steps(
            self.net,
            self.optimizer,
            task.train.x,
            task.train.y,
            task.loss,
            steps,
            batch_size or self.config.batch_size,
            self.episode.generator,
            transform=self.augmentation(),
            check_finite=check_finite,
            draw_batch=draw_batch,
        )

    def _train_and_measure(self) -> None:
        task, cfg, family, episode = self.task, self.config, self.family, self.episode
        t0 = time.perf_counter()
        train_loss = self._train(cfg.train_steps)
        t1 = time.perf_counter()
        if self.dag is not None:
            self._measure_dag(train_loss, t0, t1)
            return
        self.report = family.bottleneck(
            self.net,
            task.stats.x,
            task.stats.y,
            loss=task.loss,
            input_factors=self._input_factors,
            raw_correlation=cfg.method == "gradmax",
            **cfg.family_options,
        )
        # the statistics split is fixed for the episode, so is its input covariance
        self._input_factors = self.report.input_factors
        t2 = time.perf_counter()
        val_loss, val_acc = evaluate(self.net, task.val.x, task.val.y, task.loss)
        sites = self.report.sites
        scalars = torch.stack([train_loss.to(val_loss), self.report.loss.to(val_loss), val_loss])
        # one transfer of everything the observation needs
        host = slot_table(sites).double().cpu().numpy() if sites else np.zeros((0, 3 + TOP_K))
        train_host, stats_host, val_host = scalars.double().cpu().numpy()
        t3 = time.perf_counter()
        episode.charge_measurement(family, self.net)
        episode.charge("train", seconds=t1 - t0)
        episode.charge("statistics", seconds=t2 - t1)
        episode.charge("evaluate", seconds=t3 - t2)
        measurement = Measurement.from_table(
            host,
            np.array([s.eigenvalues.numel() for s in sites], dtype=float),
            train_loss=float(train_host),
            stats_loss=float(stats_host),
            val_loss=float(val_host),
            val_accuracy=None if val_acc is None else float(val_acc),
            slope_at_zero=self.net.slope0,
        )
        episode.absorb(measurement, self.net)

    def _measure_dag(self, train_loss: torch.Tensor, t0: float, t1: float) -> None:
        """The DAG's statistics pass, solve of every expansion (with ``fit_scope="all"``
        and ``neuron_fit="nonlinear"`` also every neuron fit, charged as ``"statistics"``)
        and validation."""
        task, cfg = self.task, self.config
        k = cfg.candidate_neurons
        if self.fits_pending:  # TINY's closed form now, the fits of chosen expansions later
            report = dag_bottleneck(
                self.net, task.stats.x, task.stats.y, task.loss, fit="tiny", neurons=k,
                keep_samples=True,
            )  # fmt: skip
        else:
            report = self.family.bottleneck(
                self.net, task.stats.x, task.stats.y, loss=task.loss, neurons=k,
                **cfg.family_options,
            )  # fmt: skip
        self.absorb_dag_report(report, train_loss, t1 - t0, time.perf_counter() - t1)

    def absorb_dag_report(
        self,
        report: DagReport,
        train_loss: torch.Tensor,
        train_seconds: float,
        stats_seconds: float,
    ) -> None:
        """After a DAG's statistics pass: keep ``report``, validate, and give the episode the
        measurement and the phase's accounting (training, statistics and solves, validation).
        The lockstep DAG env, which computes the reports of all its envs together, calls it
        for each env."""
        task, family, episode = self.task, self.family, self.episode
        self.report = report
        t2 = time.perf_counter()
        val_loss, val_acc = evaluate(self.net, task.val.x, task.val.y, task.loss)
        scalars = torch.stack([train_loss.to(val_loss), report.loss.to(val_loss), val_loss])
        train_host, stats_host, val_host = scalars.double().cpu().numpy()
        measurement, architecture = self.dag.measure(
            self.net,
            report,
            train_loss=float(train_host),
            stats_loss=float(stats_host),
            val_loss=float(val_host),
            val_accuracy=None if val_acc is None else float(val_acc),
            fits_pending=self.fits_pending,
        )
        t3 = time.perf_counter()
        episode.charge_measurement(family, self.net)
        episode.charge("statistics", family.solve_macs(self.net, report))
        episode.charge("train", seconds=train_seconds)
        episode.charge("statistics", seconds=stats_seconds)
        episode.charge("evaluate", seconds=t3 - t2)
        episode.absorb(measurement, architecture)

    # ------------------------------------------------------------------ render
    def render(self):
        if self.render_mode is None or self.net is None:
            return None
        if self.render_mode == "ansi":
            return self._render_ansi()
        return self._render_rgb()

    def _render_ansi(self) -> str:
        ep = self.episode
        if self.dag is not None:
            return self._render_dag()
        lambda1, psi = ep.measurement.eigenvalues[:, 0], ep.measurement.bottleneck
        lines = [
            f"step {self.step_count}/{self.max_steps}  params {self.net.num_parameters()}  "
            f"val loss {ep.measurement.val_loss:.4g}",
            f"{'site':>4} {'width':>6} {'lambda_1':>10} {'gain':>10} {'bottleneck':>11}",
        ]
        for j, width in enumerate(self.net.hidden_widths):
            lines.append(f"{j:>4} {width:>6} {lambda1[j]:10.3e} {ep.gains[j]:10.3e} {psi[j]:11.3e}")
        lines.append(f"architecture: {' -> '.join(str(s) for s in self.net.layer_sizes)}")
        return "\n".join(lines) + "\n"

    def _render_dag(self) -> str:
        ep, m = self.episode, self.episode.measurement
        g = m.graph
        lines = [
            f"step {self.step_count}/{self.max_steps}  params {self.net.num_parameters()}  "
            f"val loss {m.val_loss:.4g}",
            f"{'index':>5} {'node':>6} {'width':>6} {'bottleneck':>11}  in-edges",
        ]
        for i, name in enumerate(g.node_names):
            if name is None:
                continue
            psi = "" if np.isnan(g.node_bottleneck[i]) else f"{g.node_bottleneck[i]:11.3e}"
            srcs = ", ".join(self.net.in_edges(name))
            lines.append(f"{i:>5} {name:>6} {int(g.node_width[i]):>6} {psi:>11}  {srcs}")
        mask = self.action_masks()[: self.max_sites]
        best = [int(s) for s in np.argsort(-np.where(mask, ep.gains, -np.inf))[:5] if mask[s]]
        lines.append(f"{mask.sum()} valid expansions; best by estimated gain:")
        for s in best:
            lines.append(f"  slot {s:>4}  {self.dag.describe(s):<28} gain {ep.gains[s]:10.3e}")
        return "\n".join(lines) + "\n"

    def _render_rgb(self) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=80)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        params = [h["params"] for h in self.history]
        vals = [h["val_loss"] for h in self.history]
        ax.plot(params, vals, marker="o")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        sizes = getattr(self.net, "layer_sizes", None) or [
            self.net.in_features,
            *self.net.hidden_widths,
            self.net.out_features,
        ]
        ax.set_title(f"{self.task.name}: {'-'.join(str(s) for s in sizes)}")
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
