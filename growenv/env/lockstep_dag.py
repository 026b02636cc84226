"""LockstepDagVecEnv: many DAG growth envs whose training phases run as one batched model.

``LockstepVecEnv(num_envs, seed, config)`` with ``config.net == "dag"`` builds this class.
Every env is a :class:`~growenv.env.growth_env.GrowthEnv` with its own
:class:`~growenv.nets.dag.net.GrowingDAG`, Adam optimizer, slots and
:class:`~growenv.env.episode.Episode`, so growth, the statistics pass, the solve of every
expansion, the amplitude search and all bookkeeping are the single env's own code; the
training phase (``train_steps`` Adam steps of every env) runs as one
:class:`~growenv.nets.dag.stacked.StackedDAG` over graphs of different shapes, with each
env's minibatches drawn from its own generator as ``GrowthEnv`` draws them, and the
nonlinear neuron fits of every env's expansions run as one batched
:func:`~growenv.nets.dag.neuron_fit.fit_many` (most of a DAG step's time; with
``fit_scope="chosen"`` only the grown expansion of each growing env is fitted, batched
likewise). The statistics pass and the TINY solve stay per env. The result equals separate
envs up to the order of floating-point sums in the batched products.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from growenv.env.config import EnvConfig
from growenv.env.dag import DagSlots
from growenv.env.episode import TaskSource
from growenv.env.growth_env import GrowthEnv
from growenv.env.lockstep_base import LockstepBase
from growenv.losses import resolve_loss
from growenv.nets.dag.expansions import (
    DagReport,
    FitProblem,
    bottleneck,
    fit_problem,
    store_fits,
)
from growenv.nets.dag.neuron_fit import fit_many
from growenv.nets.dag.stacked import StackedDAG
from growenv.threads import single_threaded, using_threads
from growenv.training import divergence_error, evaluate, make_optimizer

__all__ = ["LockstepDagVecEnv"]


class LockstepDagVecEnv(LockstepBase):
    """``num_envs`` DAG growth environments (``net="dag"``) trained as one batched model.

    Parameters
    ----------
    num_envs
        Number of environments (>= 1).
    seed
        Env ``i`` is seeded with ``seed + i`` at the first reset (SB3's convention).
    config
        The envs' :class:`~growenv.env.config.EnvConfig` (``net="dag"``, ``optimizer``
        ``"adam"``), or give its fields as keywords.
    task
        A task object (``Task``, distribution or callable), as for GrowthEnv. All envs'
        tasks must have training splits of the same size and shapes (and, for the batched
        neuron fits, statistics splits of the same size).
    **env_kwargs
        Any :class:`~growenv.env.growth_env.GrowthEnv` keyword, when no ``config`` is given.

    Auto-reset follows SB3 (``info["terminal_observation"]``); ``action_masks()`` returns
    ``(num_envs, n_actions)``; ``env_method("evaluate_candidates")`` works (each env is a
    real ``GrowthEnv``).
    """

    def __init__(
        self,
        num_envs: int,
        seed: int | None = None,
        config: EnvConfig | None = None,
        task: TaskSource | None = None,
        **env_kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
        first = GrowthEnv(task, config, **env_kwargs)
        cfg = first.config
        if cfg.optimizer != "adam":
            raise ValueError(
                f"optimizer: the lockstep env implements 'adam' only, got {cfg.optimizer!r} "
                "(run one GrowthEnv per episode instead)"
            )
        if first.dag is None:
            raise ValueError(f"net: LockstepDagVecEnv runs DAG envs (net='dag'), got {cfg.net!r}")
        self.config = cfg
        self.envs = [first]
        for _ in range(num_envs - 1):
            env = copy.copy(first)  # shares the task source (a fixed task is built once)
            env.episode = copy.copy(first.episode)
            env.dag = DagSlots(cfg.max_nodes)
            self.envs.append(env)
        super().__init__(num_envs, first.observation_space, first.action_space)
        self.device = cfg.torch_device
        self.loss_fn = None
        self.started = False
        self._actions: np.ndarray | None = None
        # wall seconds of the vector steps by phase ("statistics": the per-env statistics
        # passes and solves, "fit": the batched neuron fits, "evaluate": validation, the
        # measurement and the test splits of finished episodes)
        self.seconds = {
            "train": 0.0, "statistics": 0.0, "fit": 0.0, "search": 0.0, "evaluate": 0.0
        }  # fmt: skip
        self.last_test: dict[int, tuple[float, float | None]] = {}
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ resets
    def _start(self, e: int, seed: int | None) -> None:
        env = self.envs[e]
        env.net = env.new_episode(seed)
        env.optimizer = make_optimizer(env.net, self.config.optimizer, lr=self.config.lr)
        if self.loss_fn is None:
            self.loss_fn = resolve_loss(env.task.loss)

    def reset(self) -> np.ndarray:
        with using_threads(self.config.threads):
            for e in range(self.num_envs):
                self._start(e, self._seeds[e])
            self._measure(list(range(self.num_envs)))
        self.started = True
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [env.episode.info() for env in self.envs]
        return np.stack([env.episode.observation() for env in self.envs])

    # ------------------------------------------------------------------ stepping
    def step_wait(self):
        if not self.started:
            raise RuntimeError("step: call reset() before step()")
        with using_threads(self.config.threads):
            return self._step_wait()

    def _grow_all(self, growing: dict[int, list[int]]) -> None:
        """Each growing env's own search and growth (charged to its episode), in env order;
        with ``fit_scope="chosen"`` the neuron fits of the chosen expansions run first, as
        one :func:`~growenv.nets.dag.neuron_fit.fit_many` over the envs."""
        order = sorted((e, s) for s, envs in growing.items() for e in envs)
        self._fit_chosen(order)
        t0 = time.perf_counter()
        for e, slot in order:
            self.envs[e].grow(slot)
        self.seconds["search"] += time.perf_counter() - t0

    def _fit_chosen(self, order: list[tuple[int, int]]) -> None:
        """``fit_scope="chosen"``: fit the expansion each env of ``order`` (``(env,
        slot)``) grows, batched over the envs, each env charged its own fit's MACs
        (``"fit"``) and an equal share of the wall time. The fits are the ones
        ``GrowthEnv.fit_expansions`` would make (same seeds), up to the batch's padding."""
        t0 = time.perf_counter()
        k = self.config.neurons_per_growth
        todo = []
        for e, slot in order:
            env = self.envs[e]
            exps = env.unfitted([slot])
            if exps:
                todo.append((env, exps, fit_problem(env.net, env.report, exps, k)))
        if not todo:
            return
        self._fit_many([p for _, _, p in todo])
        share = (time.perf_counter() - t0) / len(todo)
        for env, exps, _ in todo:
            env.charge_fits(exps, share)
        self.seconds["fit"] += time.perf_counter() - t0

    def _fit_many(self, problems: list[FitProblem]) -> None:
        """Solve ``problems`` (of several envs' nets) as one ``fit_many`` and store them."""
        first = self.envs[0].net
        inputs = [b for p in problems for b in p.inputs]
        residuals = [r for p in problems for r in p.residuals]
        starts = [a for p in problems for a in p.starts]
        with single_threaded(first.device):
            fits = fit_many(inputs, residuals, starts, first.activation, first.sigma0)
            start = 0
            for p in problems:
                count = len(p.expansions)
                store_fits(p, fits[start : start + count], first.activation, first.sigma0)
                start += count

    def evaluate_split(
        self, split: str = "test", envs: list[int] | None = None
    ) -> tuple[np.ndarray, list[float | None]]:
        """Mean loss and accuracy (None for regression) of the envs' nets on a split."""
        envs = list(range(self.num_envs)) if envs is None else envs
        t0 = time.perf_counter()
        losses, accs = [], []
        with torch.no_grad(), using_threads(self.config.threads):
            for e in envs:
                data = getattr(self.envs[e].task, split)
                loss, acc = evaluate(self.envs[e].net, data.x, data.y, self.envs[e].task.loss)
                losses.append(float(loss))
                accs.append(None if acc is None else float(acc))
        self.seconds["evaluate"] += time.perf_counter() - t0
        return np.array(losses, dtype=np.float64), accs

    # ------------------------------------------------------------------ batched work
    def _measure(self, envs: list[int]) -> None:
        """Train the envs ``envs`` as one stack, then each env's statistics, solve, fits
        and validation (``GrowthEnv``'s own)."""
        cfg = self.config
        t0 = time.perf_counter()
        steps = cfg.train_steps
        chosen = [self.envs[e] for e in envs]
        n = chosen[0].task.train.x.shape[0]
        for e, env in zip(envs, chosen, strict=True):
            for name in ("train", "stats"):
                split, ref = getattr(env.task, name), getattr(chosen[0].task, name)
                if split.x.shape != ref.x.shape or split.y.shape != ref.y.shape:
                    raise ValueError(
                        f"task: the lockstep env needs every env's {name} split to have the "
                        f"same size and shapes; env {e}'s is x{tuple(split.x.shape)}, "
                        f"y{tuple(split.y.shape)}, env {envs[0]}'s x{tuple(ref.x.shape)}, "
                        f"y{tuple(ref.y.shape)}"
                    )
        if steps > 0:
            xs, ys = [], []
            for env in chosen:  # each env's minibatches from its own generator, as train_steps
                idx = torch.randint(
                    0, n, (steps, min(cfg.batch_size, n)), generator=env.episode.generator
                ).to(self.device)
                xs.append(env.task.train.x[idx])
                ys.append(env.task.train.y[idx])
            stack = StackedDAG([env.net for env in chosen], [env.optimizer for env in chosen])
            train_loss, per_step = stack.train(torch.stack(xs), torch.stack(ys), self.loss_fn)
            stack.write_back()
            finite = torch.isfinite(train_loss).cpu().numpy()
            if not finite.all():
                k = int(np.flatnonzero(~finite)[0])
                train = chosen[k].task.train
                raise divergence_error(chosen[k].optimizer, train.x, train.y, per_step[:, k])
        else:
            train_loss = torch.zeros(len(envs), device=self.device)
        t1 = time.perf_counter()
        self.seconds["train"] += t1 - t0
        train_share = (t1 - t0) / len(envs)
        reports = self._bottlenecks(chosen)
        t2 = time.perf_counter()
        stats_share = (t2 - t1) / len(envs)
        for k, env in enumerate(chosen):
            env.absorb_dag_report(reports[k], train_loss[k], train_share, stats_share)
        self.seconds["evaluate"] += time.perf_counter() - t2

    def _bottlenecks(self, chosen: list[GrowthEnv]) -> list[DagReport]:
        """Each env's statistics pass and solve (``GrowthEnv``'s ``family.bottleneck``); with
        ``neuron_fit="nonlinear"`` and ``fit_scope="all"`` the neuron fits of every env's new
        nodes and widenings run as one :func:`~growenv.nets.dag.neuron_fit.fit_many`
        (batched over envs too); ``fit_scope="chosen"`` keeps the samples for the fits of the
        grown expansions (:meth:`_grow_all`)."""
        cfg = self.config
        k = cfg.candidate_neurons
        nonlinear = cfg.neuron_fit == "nonlinear"
        fit_all = nonlinear and cfg.fit_scope == "all"
        reports, problems = [], []
        began = time.perf_counter()
        for env in chosen:
            stats = env.task.stats
            report = bottleneck(
                env.net, stats.x, stats.y, env.task.loss, fit="tiny", neurons=k,
                keep_samples=nonlinear,
            )  # fmt: skip
            reports.append(report)
            if fit_all:
                problems.append(fit_problem(env.net, report, report.expansions, k))
        t0 = time.perf_counter()
        self.seconds["statistics"] += t0 - began
        todo = [p for p in problems if p.expansions]
        if todo:
            self._fit_many(todo)
        self.seconds["fit"] += time.perf_counter() - t0
        return reports

    # ------------------------------------------------------------------ VecEnv plumbing
    def close(self) -> None:
        self.started = False

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        return [
            getattr(self.envs[i], method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def net(self, env: int):
        """Env ``env``'s current network (a copy)."""
        return copy.deepcopy(self.envs[env].net)
