"""Episode: the bookkeeping of one growth episode, shared by the single and the lockstep env.

A growth env does three kinds of work: it *draws* a task and a start net, it *trains and
measures* a net (training, statistics + TINY solve, validation), and it *grows* a net. The
first belongs to the env (:class:`~growenv.env.growth_env.GrowthEnv` builds nets through the
family registry; :class:`~growenv.env.lockstep.LockstepVecEnv` stacks them), the others to
the net family. Everything else is the same for every env and family and lives here:

* the task draw and the episode's generators (:meth:`Episode.start`);
* a :class:`Measurement` (losses and a per-slot table of gains and eigenvalues) and an
  :class:`Architecture` view (widths, parameters, FLOPs, what a growth would add) become the
  candidates' gains, the action mask, the observation (:mod:`growenv.env.features`), the
  reward and the info (:meth:`Episode.absorb`, :meth:`Episode.begin_step`,
  :meth:`Episode.end_step`);
* compute accounting in multiply-adds and wall time per phase (:meth:`Episode.charge`).

A *slot* is one growth action: a hidden site of an MLP or conv net, or an expansion of a DAG
(:mod:`growenv.nets.dag.slots`); the first ``config.num_slots`` actions are slots, then skip,
then stop. For a DAG the family gives each slot's estimated gain and whether the graph offers
it (:attr:`Measurement.estimated_gain`, :attr:`Measurement.present`) and the graph's facts
(:class:`GraphFacts`) feed the expansion and node features; sites keep their own rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from growenv.data.tasks import Split, Task, TeacherStudentDistribution, make_task
from growenv.env import features
from growenv.env.config import DISTRIBUTION_NAME, EnvConfig

TaskSource = str | Task | TeacherStudentDistribution | Callable[[np.random.Generator], Task]
# A slot whose best neuron would gain less than this fraction of the loss (lambda_1^2 / L) is
# masked: such eigenvalues are rounding noise of float32 statistics, not capacity to add.
GAIN_RESOLUTION = 1e-7
OBS_BOUND = 1e6  # features are logs and symlogs; this bound is never reached in practice
PHASES = ("train", "statistics", "search", "evaluate")  # statistics includes the solve
# fit_scope="chosen" (DAG): the neuron fits of the searched and grown expansions, apart
FIT_PHASE = "fit"


def phases(config: EnvConfig) -> tuple[str, ...]:
    """The compute phases of an env of ``config``: :data:`PHASES`, plus :data:`FIT_PHASE`
    with ``fit_scope="chosen"`` (whose fits are done on demand, not in the statistics)."""
    return (*PHASES, FIT_PHASE) if config.fit_scope == "chosen" else PHASES


@dataclass(frozen=True)
class GraphFacts:
    """What a DAG measurement adds for the observation, the info and the action names.

    Attributes
    ----------
    kind
        Per slot: ``0, 1, 2`` for edge, node, widen.
    source_width, target_width, target_bottleneck
        Per slot: width of the source (widen: of the node), of the target (widen: its
        targets, summed) and the target's ``Psi`` (widen: its targets', summed).
    node_names
        Per node index (``in``, hidden nodes in creation order, ``out`` last): its name, or
        ``None`` for an index without a node yet.
    node_width, node_update_gain, node_bottleneck, in_degree, out_degree, depth
        Per node index (0, or NaN for gains, where absent; ``in`` has no gain).
    edges
        The graph's edges as ``(source index, target index)``.
    max_nodes
        Most hidden nodes.
    describe
        ``slot -> "edge in -> h1"`` (names of the current graph).
    """

    kind: np.ndarray
    source_width: np.ndarray
    target_width: np.ndarray
    target_bottleneck: np.ndarray
    node_names: list[str | None]
    node_width: np.ndarray
    node_update_gain: np.ndarray
    node_bottleneck: np.ndarray
    in_degree: np.ndarray
    out_degree: np.ndarray
    depth: np.ndarray
    edges: list[tuple[int, int]]
    max_nodes: int
    describe: Callable[[int], str]


@dataclass(frozen=True)
class Measurement:
    """What one train + measure phase found, as host numbers (one row per slot).

    Attributes
    ----------
    train_loss, stats_loss, val_loss
        Mean training loss of the phase, loss on the statistics split, validation loss.
    val_accuracy
        Validation accuracy, ``None`` for regression.
    update_gain, bottleneck, num_significant
        Per slot: best-update gain ``d``, bottleneck ``Psi``, number of significant
        eigenvalues.
    eigenvalues
        ``(slots, rank)``: each slot's eigenvalues ``lambda_k`` (descending, zero padded).
    ranks
        Per slot: how many eigenvalues it has (the most neurons one growth can add there).
    slope_at_zero
        ``sigma'(0)`` of the activation: a candidate of ``K`` neurons gains
        ``d + sigma'(0) sum_{k<=K} lambda_k^2``.
    estimated_gain
        Per slot, the gain the family estimates for the slot's candidate (DAG expansions:
        ``Expansion.estimated_gain``), used instead of the formula above; ``None`` for sites.
    gain_bound
        Per slot, an upper bound of the gain that decides the action mask instead of the
        estimate (DAG with ``fit_scope="chosen"``: the neurons are not fitted yet, and a fit
        takes up at most its targets' ``Psi``); ``None``: the mask reads the estimate.
    present
        Per slot, whether the net offers it now (DAG); ``None`` for sites (every row is a
        site of the net).
    graph
        The DAG's :class:`GraphFacts`; ``None`` for sites.
    """

    train_loss: float
    stats_loss: float
    val_loss: float
    val_accuracy: float | None
    update_gain: np.ndarray
    bottleneck: np.ndarray
    num_significant: np.ndarray
    eigenvalues: np.ndarray
    ranks: np.ndarray
    slope_at_zero: float
    estimated_gain: np.ndarray | None = None
    present: np.ndarray | None = None
    graph: GraphFacts | None = None
    gain_bound: np.ndarray | None = None

    @classmethod
    def from_table(
        cls,
        table: np.ndarray,
        ranks: np.ndarray,
        *,
        train_loss: float,
        stats_loss: float,
        val_loss: float,
        val_accuracy: float | None,
        slope_at_zero: float,
        **extra: Any,
    ) -> Measurement:
        """From one host array ``(slots, 3 + rank)``: rows ``d, Psi, significant count``
        then the eigenvalues (see :func:`slot_table`, which builds it in one transfer);
        ``extra``: ``estimated_gain``, ``present``, ``graph`` (DAG)."""
        table = np.asarray(table, dtype=np.float64)
        return cls(
            train_loss=float(train_loss),
            stats_loss=float(stats_loss),
            val_loss=float(val_loss),
            val_accuracy=None if val_accuracy is None else float(val_accuracy),
            update_gain=table[:, 0],
            bottleneck=table[:, 1],
            num_significant=table[:, 2],
            eigenvalues=table[:, 3:],
            ranks=np.asarray(ranks, dtype=float),
            slope_at_zero=float(slope_at_zero),
            **extra,
        )


def slot_table(sites: Sequence[Any], batched: bool = False) -> torch.Tensor:
    """One tensor of every slot's ``d, Psi, significant count, eigenvalues`` (zero padded to
    at least :data:`~growenv.env.features.TOP_K`), to move to the host in one transfer.

    ``sites`` are the solver's per-site results (``update_gain``, ``bottleneck``,
    ``num_significant``, ``eigenvalues``); with ``batched`` each carries a leading env
    dimension and the result is ``(envs, slots, 3 + rank)``, else ``(slots, 3 + rank)``.
    """
    dim = 1 if batched else 0
    rank = max([s.eigenvalues.shape[-1] for s in sites] + [features.TOP_K])
    rows = [
        torch.cat(
            [
                torch.stack([s.update_gain, s.bottleneck, s.num_significant.to(s.bottleneck)], dim),
                torch.nn.functional.pad(s.eigenvalues, (0, rank - s.eigenvalues.shape[-1])),
            ],
            dim,
        )
        for s in sites
    ]
    return torch.stack(rows, dim)


class Architecture(Protocol):
    """What an Episode reads of a network (a ``GrowingMLP``, a ``GrowingConvNet``, the
    lockstep env's per-env view of its stack, or the DAG env's view of its graph)."""

    @property
    def hidden_widths(self) -> list[int]:
        """Width of every hidden state (sites; DAG: hidden nodes in creation order)."""
        ...

    def num_parameters(self) -> int:
        """Trainable parameters."""
        ...

    def flops(self) -> int:
        """Multiply-adds of one forward pass of one sample."""
        ...

    def added_parameters(self, site: int, num_neurons: int) -> int:
        """Parameters that ``num_neurons`` new neurons at ``site`` (slot) add."""
        ...

    def added_flops(self, site: int, num_neurons: int) -> int:
        """Multiply-adds per sample that ``num_neurons`` new neurons at ``site`` (slot) add."""
        ...


def resolve_task_source(task: TaskSource, task_kwargs: dict) -> Callable:
    """A function ``rng -> Task`` for the env's ``task`` argument (built once, errors early).

    A name in :data:`~growenv.data.tasks.TASK_NAMES` builds a fixed task once;
    ``"teacher_student_distribution"`` draws a teacher per episode (distribution fields of
    ``task_kwargs`` build the distribution, the rest go to every draw); a ``Task`` is fixed;
    a ``TeacherStudentDistribution`` or a callable is drawn from.
    """
    if isinstance(task, Task):
        if task_kwargs:
            raise ValueError("task_kwargs: not used when task is a Task instance")
        return lambda rng: task
    if isinstance(task, TeacherStudentDistribution):
        return lambda rng: task.sample(rng, **task_kwargs)
    if isinstance(task, str):
        if task == DISTRIBUTION_NAME:
            fields = {f.name for f in dataclasses.fields(TeacherStudentDistribution)}
            dist_kwargs = {k: v for k, v in task_kwargs.items() if k in fields}
            overrides = {k: v for k, v in task_kwargs.items() if k not in fields}
            dist = TeacherStudentDistribution(**dist_kwargs)
            dist.sample(np.random.default_rng(0), **overrides)  # bad overrides fail now
            return lambda rng: dist.sample(rng, **overrides)
        built = make_task(task, **task_kwargs)  # the config has checked the name
        return lambda rng: built
    if callable(task):
        return task
    raise ValueError(
        f"task: expected a task name, a Task, a TeacherStudentDistribution or a callable, "
        f"got {task!r}"
    )


def search_split(task: Task, where: str) -> Split:
    """The samples a growth's amplitude line search runs on.

    ``where="train"``: the first ``len(task.stats)`` samples of the training split (all of it
    if smaller), disjoint from the statistics split the new neurons and the best update are
    solved on, so that the search sees how the closed form generalises (as the DAG paper's
    *train-gr* / *train-ls* split); ``"stats"``: the statistics split itself.
    """
    if where == "stats":
        return task.stats
    n = min(len(task.stats), len(task.train))
    return Split(task.train.x[:n], task.train.y[:n])


def cast_task(task: Task, dtype: torch.dtype) -> Task:
    """The task with floating-point inputs (and regression targets) in ``dtype``."""
    if dtype == torch.float32:
        return task

    def cast(split: Split) -> Split:
        y = split.y.to(dtype) if split.y.is_floating_point() else split.y
        return Split(split.x.to(dtype), y)

    return dataclasses.replace(task, **{k: cast(v) for k, v in task.splits().items()})


class Episode:
    """The state and bookkeeping of one env's current episode.

    Parameters
    ----------
    config
        The env's settings (budgets, reward, neurons per growth, slots, ...).
    task_source
        ``rng -> Task`` (see :func:`resolve_task_source`).
    prepare_task
        The net family's task preparation (e.g. inputs as images), applied to every draw
        before it moves to the config's device and dtype.

    Attributes
    ----------
    task
        The episode's task (on the env's device and dtype).
    generator, init_generator
        The episode's torch generators: minibatches and candidates, and the start net.
    step_count, compute, compute_by_phase, seconds, history
        Decisions taken, multiply-adds spent (total and per phase of :data:`PHASES`), wall
        seconds per phase, one record per measurement (step, params, val loss, widths).
    measurement
        The last :class:`Measurement`.
    neurons, added_params, added_flops, gains
        Per slot, for the last measurement: neurons a growth would add, the parameters and
        multiply-adds it would add, its first-order gain.
    gamma, loss_drop, grown_slot
        The last step's growth (``-1`` and zeros when it did not grow).
    grown_kinds
        DAG: the episode's growths as ``(step, kind)`` pairs (kind ``0, 1, 2``: edge, node,
        widen), in order (the observation's history columns).
    grown_slots
        The episode's growths as ``(step, slot)`` pairs (slot: the site or expansion slot
        grown), in order.
    ended
        Whether the episode has ended (stop, termination or truncation): stepping on raises
        until the next :meth:`start`.
    """

    def __init__(
        self,
        config: EnvConfig,
        task_source: Callable[[np.random.Generator], Task],
        prepare_task: Callable[[Task], Task],
    ) -> None:
        self.config = config
        self.num_slots = config.num_slots
        self.skip_action = self.num_slots
        self.stop_action = self.num_slots + 1
        self.num_actions = self.num_slots + 2
        self._task_source = task_source
        self._prepare_task = prepare_task
        self.task: Task | None = None
        self.measurement: Measurement | None = None
        self.ended = False
        self.generator: torch.Generator | None = None
        self.init_generator: torch.Generator | None = None

    # ------------------------------------------------------------------ start
    def start(self, rng: np.random.Generator) -> Task:
        """Draw the task and the generators from ``rng`` and reset every counter.

        Returns the task; the env then builds the start net with :attr:`init_generator`.
        """
        task = self._task_source(rng)
        if not isinstance(task, Task):
            raise TypeError(f"task: the task source returned {type(task).__name__}, not a Task")
        task = self._prepare_task(task)
        self.task = cast_task(task.to(self.config.torch_device), self.config.torch_dtype)
        self.search = search_split(self.task, self.config.search_split)
        torch_seed = int(rng.integers(2**62))
        self.generator = torch.Generator().manual_seed(torch_seed)
        self.init_generator = torch.Generator().manual_seed(torch_seed + 1)
        self.step_count = 0
        self.compute = 0.0
        self.seconds = dict.fromkeys(phases(self.config), 0.0)
        self.compute_by_phase = dict.fromkeys(phases(self.config), 0.0)
        self.history: list[dict] = []
        self.grown_kinds: list[tuple[int, int]] = []
        self.grown_slots: list[tuple[int, int]] = []
        self.last_improvement = 0.0
        self.measurement = None
        self.ended = False
        self.record_growth(-1, 0.0, 0.0)
        return self.task

    # ------------------------------------------------------------------ accounting
    def charge(self, phase: str, macs: float = 0.0, seconds: float = 0.0) -> None:
        """Add ``macs`` multiply-adds and ``seconds`` of wall time to ``phase``."""
        self.compute += macs
        self.compute_by_phase[phase] += macs
        self.seconds[phase] += seconds

    def charge_measurement(self, family: Any, architecture: Any) -> None:
        """Charge one train + measure phase of ``architecture`` by its family's cost model
        (:class:`~growenv.nets.family.NetFamily`): training, statistics + solve, validation."""
        cfg, task = self.config, self.task
        samples = cfg.train_steps * min(cfg.batch_size, len(task.train))
        self.charge("train", family.training_macs(architecture, samples))
        stats = family.statistics_macs(architecture, len(task.stats), **cfg.family_options)
        self.charge("statistics", stats)
        self.charge("evaluate", family.evaluate_macs(architecture, len(task.val)))

    def record_growth(self, slot: int, gamma: float, loss_drop: float) -> None:
        """Record that this step grew ``slot`` at amplitude ``gamma`` (real loss drop)."""
        self.gamma, self.loss_drop, self.grown_slot = gamma, loss_drop, slot
        if slot >= 0:
            self.grown_slots.append((self.step_count, slot))
        if slot >= 0 and self.measurement.graph is not None:  # the kinds of the state grown
            self.grown_kinds.append((self.step_count, int(self.measurement.graph.kind[slot])))

    # ------------------------------------------------------------------ measurement
    def absorb(self, measurement: Measurement, architecture: Architecture) -> None:
        """Store a measurement of ``architecture`` and derive the candidates from it: the
        neurons a growth adds per slot (``neurons_per_growth``, or the significant ones, at
        most the slot's rank, at least 1), what they add and their first-order gain."""
        cfg, m = self.config, measurement
        n = len(m.ranks)
        k = (
            m.num_significant
            if cfg.neurons_per_growth == "auto"
            else np.full(n, float(cfg.neurons_per_growth))
        )
        # a candidate adds min(K, rank) neurons: rank(N) <= width of the next layer
        k = np.maximum(np.minimum(k, m.ranks), 1)
        self.measurement = m
        self.neurons = k
        self.widths = list(architecture.hidden_widths)
        self.params = architecture.num_parameters()
        self.flops = architecture.flops()
        ks = [int(k[j]) for j in range(n)]
        self.added_params = np.array([architecture.added_parameters(j, ks[j]) for j in range(n)])
        self.added_flops = np.array([architecture.added_flops(j, ks[j]) for j in range(n)])
        if m.estimated_gain is not None:
            self.gains = np.asarray(m.estimated_gain, dtype=np.float64)
        else:
            first_k = np.arange(m.eigenvalues.shape[1])[None, :] < k[:, None]
            self.gains = m.update_gain + m.slope_at_zero * (m.eigenvalues**2 * first_k).sum(1)
        self.history.append(
            {
                "step": self.step_count,
                "params": self.params,
                "val_loss": m.val_loss,
                "widths": list(self.widths),
            }
        )

    @property
    def train_loss(self) -> float:
        """Mean loss of the last training phase (the statistics loss without training)."""
        m = self.measurement
        return m.train_loss if self.config.train_steps else m.stats_loss

    # ------------------------------------------------------------------ actions
    def action_masks(self) -> np.ndarray:
        """Valid actions: slots whose best neuron gains more than rounding noise
        (``lambda_1^2 > 1e-7 L``; DAG: slots the graph offers whose estimated gain is above
        ``1e-7 L``) and whose candidate fits the parameter budget; skip and stop always."""
        mask = np.zeros(self.num_actions, dtype=bool)
        mask[self.skip_action] = mask[self.stop_action] = True
        m = self.measurement
        if m is None:
            return mask
        max_params = self.config.max_params
        budget = None if max_params is None else max_params - self.params
        floor = GAIN_RESOLUTION * abs(m.stats_loss)
        lambda1 = m.eigenvalues[:, 0] if len(m.ranks) else np.zeros(0)
        gains = self.gains if m.gain_bound is None else m.gain_bound
        for slot in range(len(m.ranks)):
            if m.present is not None:
                ok = bool(m.present[slot]) and gains[slot] > floor
            else:
                ok = lambda1[slot] ** 2 > floor
            if budget is not None:
                ok = ok and self.added_params[slot] <= budget
            mask[slot] = ok
        return mask

    def describe_action(self, action: int) -> str:
        """``"grow site i"`` (DAG: ``"grow edge in -> h1"``, ...), ``"skip growth"`` or
        ``"stop"``."""
        if action == self.skip_action:
            return "skip growth"
        if action == self.stop_action:
            return "stop"
        graph = None if self.measurement is None else self.measurement.graph
        if graph is not None:
            return f"grow {graph.describe(int(action))}"
        return f"grow site {action}"

    def validate_action(self, action: Any) -> tuple[int, bool]:
        """The action to take and whether the given one was masked; a masked action raises
        ``ValueError`` if ``invalid_action="raise"``, else it becomes skip (the default).

        Raises
        ------
        RuntimeError
            When the episode has ended (stop action, termination or truncation): the next
            call must be ``reset()``.
        ValueError
            For an action outside ``[0, num_actions)``, or a masked one in strict mode.
        """
        if self.ended:
            raise RuntimeError(
                "step: the episode has ended (terminated or truncated); call reset() before "
                "stepping again"
            )
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action: expected 0 <= action < {self.num_actions}, got {action}")
        mask = self.action_masks()
        invalid = not mask[action]
        if invalid and self.config.invalid_action == "skip":
            action = self.skip_action
        elif invalid:
            raise ValueError(
                f"action: {action} ({self.describe_action(action)}) is masked in this state; "
                f"valid actions are {np.flatnonzero(mask).tolist()} (see action_masks())"
            )
        return action, invalid

    # ------------------------------------------------------------------ steps
    def begin_step(self) -> tuple[int, int, float]:
        """Mark the start of a (non-stop) step; returns what :meth:`end_step` compares to."""
        self.record_growth(-1, 0.0, 0.0)
        return self.params, self.flops, self.measurement.val_loss

    def end_step(self, before: tuple[int, int, float], invalid: bool):
        """After the step's measurement was absorbed: ``(obs, reward, terminated, truncated,
        info)`` as ``gymnasium.Env.step`` returns them."""
        cfg = self.config
        params_before, flops_before, prev_val = before
        self.step_count += 1
        added_params = self.params - params_before
        added_flops = self.flops - flops_before
        prev, now = max(prev_val, 1e-12), max(self.measurement.val_loss, 1e-12)
        if cfg.reward == "log_ratio":
            improvement = float(np.log(prev / now))
        else:
            improvement = (prev - now) / prev
        self.last_improvement = improvement
        reward = improvement - cfg.cost_per_param * added_params - cfg.cost_per_flop * added_flops
        terminated = cfg.max_compute is not None and self.compute >= cfg.max_compute
        truncated = self.step_count >= cfg.max_steps and not terminated
        self.ended = terminated or truncated
        info = self.info(episode_end=terminated or truncated)
        info["invalid_action"] = invalid
        return self.observation(), float(reward), bool(terminated), bool(truncated), info

    def stop(self):
        """The stop action: ``(obs, 0.0, True, False, info)``."""
        self.step_count += 1
        self.ended = True
        info = self.info(episode_end=True)
        info["invalid_action"] = False
        return self.observation(), 0.0, True, False, info

    # ------------------------------------------------------------------ observation, info
    @property
    def observation_size(self) -> int:
        """Length of the observation vector."""
        if self.config.expansions:
            return features.dag_observation_size(self.num_slots, self.config.max_nodes)
        return features.observation_size(self.num_slots)

    def _graph_rows(self) -> np.ndarray:
        """The DAG's expansion rows then node rows, flattened."""
        m, g = self.measurement, self.measurement.graph
        exp = features.expansion_features(
            present=m.present,
            kind=g.kind,
            source_width=g.source_width,
            target_width=g.target_width,
            update_gain=m.update_gain,
            eigenvalues=m.eigenvalues,
            target_bottleneck=g.target_bottleneck,
            estimated_gain=self.gains,
            added_params=self.added_params,
            added_flops=self.added_flops,
            num_significant=m.num_significant,
            loss=m.stats_loss,
            params=self.params,
            flops=self.flops,
            neurons=int(np.max(self.neurons)) if len(self.neurons) else 1,
            grown_kinds=self.grown_kinds,
            step=self.step_count,
            max_steps=self.config.max_steps,
        )
        nodes = features.node_features(
            present=np.array([name is not None for name in g.node_names]),
            width=g.node_width,
            update_gain=g.node_update_gain,
            bottleneck=g.node_bottleneck,
            in_degree=g.in_degree,
            out_degree=g.out_degree,
            depth=g.depth,
            loss=m.stats_loss,
            max_nodes=g.max_nodes,
        )
        return np.concatenate([exp.reshape(-1), nodes.reshape(-1)])

    def observation(self) -> np.ndarray:
        """The observation vector (see :mod:`growenv.env.features` for the table)."""
        cfg, m = self.config, self.measurement
        n = len(m.ranks)
        if m.graph is not None:
            rows = self._graph_rows()
        else:
            rows = self._site_rows(n)
        compute_used = (
            self.compute / cfg.max_compute
            if cfg.max_compute
            else np.log10(max(self.compute, 1.0)) / 20.0
        )
        budget_left = (
            1.0 if cfg.max_params is None else max(cfg.max_params - self.params, 0) / cfg.max_params
        )
        glob = features.global_features(
            self.train_loss,
            m.val_loss,
            m.val_accuracy,
            self.params,
            self.flops,
            compute_used,
            budget_left,
            self.step_count / cfg.max_steps,
            self.last_improvement,
        )
        obs = np.concatenate([rows, glob]).astype(np.float32)
        return np.clip(np.nan_to_num(obs, nan=0.0), -OBS_BOUND, OBS_BOUND)

    def _site_rows(self, n: int) -> np.ndarray:
        """The site rows, flattened."""
        m = self.measurement
        site = features.site_features(
            widths=np.array(self.widths, dtype=float),
            update_gain=m.update_gain,
            eigenvalues=m.eigenvalues,
            num_significant=m.num_significant,
            bottleneck=m.bottleneck,
            candidate_gain=self.gains,
            added_params=self.added_params,
            added_flops=self.added_flops,
            loss=m.stats_loss,
            params=self.params,
            flops=self.flops,
            neurons=int(np.max(self.neurons)) if n else 1,
            max_sites=self.num_slots,
        )
        return site.reshape(-1)

    def info(self, episode_end: bool = False) -> dict[str, Any]:
        """The info dict of the current state (see the env's docstring)."""
        m = self.measurement
        n = len(self.added_params)
        gains = np.full(self.num_slots, -np.inf)
        gains[: len(self.gains)] = self.gains
        mask = self.action_masks()
        gains[~mask[: self.num_slots]] = -np.inf
        info = {
            "params": self.params,
            "flops": self.flops,
            "widths": list(self.widths),
            "train_loss": self.train_loss,
            "stats_loss": m.stats_loss,
            "val_loss": m.val_loss,
            "val_accuracy": m.val_accuracy,
            "candidate_gains": gains,
            "candidate_params": np.pad(self.added_params, (0, self.num_slots - n)),
            "gamma": self.gamma,
            "loss_drop": self.loss_drop,
            "grown_site": self.grown_slot,
            "compute": self.compute,
            "compute_by_phase": dict(self.compute_by_phase),
            "step": self.step_count,
            "action_mask": mask,
        }
        graph = m.graph
        if graph is not None:
            info["node_names"] = list(graph.node_names)
            # -inf for `in` and absent indices (not NaN: info must compare equal to itself)
            info["node_bottlenecks"] = np.nan_to_num(graph.node_bottleneck, nan=-np.inf)
            info["graph_edges"] = list(graph.edges)
        if episode_end:
            # wall-clock time is not reproducible, so it is reported once, at the end of the
            # episode (and always in ``seconds``); per-step info stays deterministic
            info["seconds"] = dict(self.seconds)
        return info
