"""LockstepVecEnv: many GrowthEnvs trained, measured and grown as one batched model.

Each environment is a :class:`~growenv.env.growth_env.GrowthEnv` whose public
:class:`~growenv.env.episode.Episode` does the bookkeeping (task, RNG, budget, counters,
observation, reward and info, so they mean exactly what they mean in ``GrowthEnv``); the
networks live in one :class:`~growenv.nets.mlp.stacked.StackedMLP`, so training, the statistics
pass, the TINY solve (batched ``eigh``/``svd`` over envs and sites) and the amplitude search run
once for all envs instead of once per env. Only families with the ``"stackable"`` capability
(the MLP family) can be stacked; their cost model prices the per-env architecture views.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from growenv.amplitude import default_gammas
from growenv.env.config import EnvConfig
from growenv.env.episode import Measurement, TaskSource, slot_table
from growenv.env.growth_env import GrowthEnv
from growenv.env.lockstep_base import LockstepBase
from growenv.losses import resolve_loss
from growenv.nets.mlp import costs
from growenv.nets.mlp.report import solve
from growenv.nets.mlp.stacked import StackedMLP, gamma_losses
from growenv.threads import using_threads

SPLITS = ("train", "stats", "val", "test", "search")


class _Architecture:
    """One env's network in the stack, as an :class:`~growenv.env.episode.Architecture`:
    sizes read from the stack, counts from the MLP size model (:mod:`growenv.nets.mlp.costs`)."""

    def __init__(self, stack: StackedMLP, env: int) -> None:
        self._stack, self._env = stack, env

    @property
    def layer_sizes(self) -> list[int]:
        return self._stack.layer_sizes(self._env)

    @property
    def hidden_widths(self) -> list[int]:
        return self._stack.widths[self._env].tolist()

    @property
    def num_sites(self) -> int:
        return self._stack.widths.shape[1]

    def num_parameters(self) -> int:
        return costs.parameter_count(self.layer_sizes)

    def flops(self) -> int:
        return costs.forward_macs(self.layer_sizes)

    def _grown(self, site: int, num_neurons: int) -> list[int]:
        sizes = self.layer_sizes
        sizes[site + 1] += num_neurons
        return sizes

    def added_parameters(self, site: int, num_neurons: int) -> int:
        return costs.parameter_count(self._grown(site, num_neurons)) - self.num_parameters()

    def added_flops(self, site: int, num_neurons: int) -> int:
        return costs.forward_macs(self._grown(site, num_neurons)) - self.flops()


def _weights_and_bias(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Zero-pad ``[W | b]`` to ``rows`` x ``cols`` weight columns, keeping the bias last."""
    w = F.pad(t[:, :-1], (0, cols - (t.shape[1] - 1), 0, rows - t.shape[0]))
    b = F.pad(t[:, -1:], (0, 0, 0, rows - t.shape[0]))
    return torch.cat([w, b], 1)


class LockstepVecEnv(LockstepBase):
    """``num_envs`` growth environments whose networks are stacked into one batched model.

    Parameters
    ----------
    num_envs
        Number of environments (>= 1).
    seed
        Env ``i`` is seeded with ``seed + i`` at the first reset (SB3's convention).
    config
        The envs' :class:`~growenv.env.config.EnvConfig` (or give its fields as keywords);
        ``device`` is where the stacked networks and the data live. ``optimizer`` must be
        ``"adam"``, ``method`` ``"tiny"``, ``net`` a stackable family (``"mlp"``) or ``"dag"``.
    task
        A task object (``Task``, distribution or callable), as for GrowthEnv.
    **env_kwargs
        Any :class:`~growenv.env.growth_env.GrowthEnv` keyword (``device`` included), when no
        ``config`` is given. All envs' tasks must have the same split sizes and shapes.

    Auto-reset follows SB3: a finished env is reset at once, its last observation is in
    ``info["terminal_observation"]``. ``action_masks()`` returns ``(num_envs, n_actions)``.

    ``net="dag"`` gives a :class:`~growenv.env.lockstep_dag.LockstepDagVecEnv` (DAGs of
    different shapes trained as one padded model).
    """

    def __new__(
        cls,
        num_envs: int = 1,
        seed: int | None = None,
        config: EnvConfig | None = None,
        task: TaskSource | None = None,
        **env_kwargs: Any,
    ) -> LockstepBase:
        net = config.net if config is not None else env_kwargs.get("net", "mlp")
        if cls is LockstepVecEnv and net == "dag":
            from growenv.env.lockstep_dag import LockstepDagVecEnv

            # not a LockstepVecEnv subclass (no import cycle), so built here
            return LockstepDagVecEnv(num_envs, seed, config, task, **env_kwargs)
        return super().__new__(cls)

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
        first = GrowthEnv(task, config, **env_kwargs)  # the config validates every setting
        cfg = first.config
        obstacle = cfg.lockstep_obstacle()
        if obstacle is not None:
            raise ValueError(f"{obstacle} (run one GrowthEnv per episode instead)")
        self.config = cfg
        self.envs = [first]
        for _ in range(num_envs - 1):
            env = copy.copy(first)  # shares the task source (a fixed task is built once)
            env.episode = copy.copy(first.episode)
            self.envs.append(env)
        super().__init__(num_envs, first.observation_space, first.action_space)
        self.device = cfg.torch_device
        self.stack: StackedMLP | None = None
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._solutions: list[tuple[list, int] | None] = [None] * num_envs
        self._actions: np.ndarray | None = None
        self.loss_fn = None
        self.seconds = {"train": 0.0, "statistics": 0.0, "search": 0.0, "evaluate": 0.0}
        self.last_test: dict[int, tuple[float, float | None]] = {}
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ resets
    def _start(self, e: int, seed: int | None) -> None:
        env, cfg = self.envs[e], self.config
        net = env.new_episode(seed)
        if self.stack is None:
            self.loss_fn = resolve_loss(env.task.loss)
            self.stack = StackedMLP(
                self.num_envs,
                net.in_features,
                net.num_sites,
                net.out_features,
                net.activation,
                net.slope0,
                net.sigma0,
                capacity=max(8, cfg.start_width),
                device=self.device,
                dtype=cfg.torch_dtype,
                lr=cfg.lr,
            )
        self.stack.load(e, net)
        env.net = _Architecture(self.stack, e)
        self._load_data(e, env)

    def _load_data(self, e: int, env: GrowthEnv) -> None:
        for name in SPLITS:
            split = env.episode.search if name == "search" else getattr(env.task, name)
            if name not in self.data:
                shape_x = (self.num_envs, *split.x.shape)
                shape_y = (self.num_envs, *split.y.shape)
                self.data[name] = (
                    split.x.new_zeros(shape_x, device=self.device),
                    split.y.new_zeros(shape_y, device=self.device),
                )
            x, y = self.data[name]
            if x.shape[1:] != split.x.shape or y.shape[1:] != split.y.shape:
                raise ValueError(
                    f"task: the lockstep env needs every env's task to have the same split "
                    f"sizes and shapes; env {e}'s {name} split is x{tuple(split.x.shape)}, "
                    f"y{tuple(split.y.shape)}, the others x{tuple(x.shape[1:])}, "
                    f"y{tuple(y.shape[1:])}"
                )
            x[e], y[e] = split.x, split.y

    def reset(self) -> np.ndarray:
        with using_threads(self.config.threads):
            for e in range(self.num_envs):
                self._start(e, self._seeds[e])
            self._measure(list(range(self.num_envs)))
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [env.episode.info() for env in self.envs]
        return np.stack([env.episode.observation() for env in self.envs])

    # ------------------------------------------------------------------ stepping
    def step_wait(self):
        if self.stack is None:
            raise RuntimeError("step: call reset() before step()")
        with using_threads(self.config.threads):
            return self._step_wait()

    def _grow_all(self, growing: dict[int, list[int]]) -> None:
        """One batched search and growth per site, over the envs growing it."""
        for site, envs in sorted(growing.items()):
            self._grow(site, envs)

    def evaluate_split(
        self, split: str = "test", envs: list[int] | None = None
    ) -> tuple[np.ndarray, list[float | None]]:
        """Mean loss and accuracy (None for regression) of the envs' nets on a split."""
        envs = list(range(self.num_envs)) if envs is None else envs
        idx = self._idx(envs)
        x, y = (t[idx] for t in self.data[split])
        with torch.no_grad(), using_threads(self.config.threads):
            out = self.stack.forward(x, idx)
            loss = self.loss_fn(out, y).mean(-1)
            if y.is_floating_point():
                return loss.double().cpu().numpy(), [None] * len(envs)
            acc = (out.argmax(-1) == y).double().mean(-1)
            host = torch.stack([loss.double(), acc], 1).cpu().numpy()
        return host[:, 0], [float(a) for a in host[:, 1]]

    # ------------------------------------------------------------------ batched work
    def _idx(self, envs: list[int]) -> torch.Tensor:
        return torch.tensor(envs, dtype=torch.long, device=self.device)

    def _measure(self, envs: list[int]) -> None:
        """Train, measure (statistics + solve) and validate the envs ``envs`` together."""
        stack, idx = self.stack, self._idx(envs)
        cfg = self.config
        t0 = time.perf_counter()
        x, y = (t[idx] for t in self.data["train"])
        steps, n = cfg.train_steps, x.shape[1]
        if steps > 0:
            draws = [
                torch.randint(
                    0, n, (steps, min(cfg.batch_size, n)), generator=self.envs[e].episode.generator
                )
                for e in envs
            ]
            batches = torch.stack(draws).to(self.device)
        else:
            batches = torch.zeros(len(envs), 0, 1, dtype=torch.long, device=self.device)
        train_loss = stack.train(idx, x, y, self.loss_fn, batches)
        t1 = time.perf_counter()
        sx, sy = (t[idx] for t in self.data["stats"])
        stats = stack.statistics(idx, sx, sy, self.loss_fn)
        sites, _ = solve(stats, stack.slope0)
        t2 = time.perf_counter()
        vx, vy = (t[idx] for t in self.data["val"])
        with torch.no_grad():
            out = stack.forward(vx, idx)
            val_loss = self.loss_fn(out, vy).mean(-1)
            classify = not vy.is_floating_point()
            acc = (out.argmax(-1) == vy).to(out.dtype).mean(-1) if classify else val_loss
        table = slot_table(sites, batched=True)  # (E', sites, 3 + rank)
        scalars = torch.stack([train_loss, stats.loss, val_loss, acc], 1)
        host_table = table.double().cpu().numpy()  # one transfer for all envs
        host_scalars = scalars.double().cpu().numpy()
        t3 = time.perf_counter()
        share = 1.0 / len(envs)
        for key, dt in (("train", t1 - t0), ("statistics", t2 - t1), ("evaluate", t3 - t2)):
            self.seconds[key] += dt
        for k, e in enumerate(envs):
            episode = self.envs[e].episode
            sizes = stack.layer_sizes(e)
            ranks = np.array(
                [min(sizes[j] + 1, sizes[j + 2]) for j in range(len(sites))], dtype=float
            )
            site_table = host_table[k].copy()
            lam = site_table[:, 3:]
            lam[np.arange(lam.shape[1])[None, :] >= ranks[:, None]] = 0.0  # padding: exactly 0
            train_l, stats_l, val_l, acc_l = host_scalars[k]
            net = self.envs[e].net
            episode.charge_measurement(self.envs[e].family, net)
            episode.charge("train", seconds=(t1 - t0) * share)
            episode.charge("statistics", seconds=(t2 - t1) * share)
            episode.charge("evaluate", seconds=(t3 - t2) * share)
            measurement = Measurement.from_table(
                site_table,
                ranks,
                train_loss=float(train_l),
                stats_loss=float(stats_l),
                val_loss=float(val_l),
                val_accuracy=float(acc_l) if classify else None,
                slope_at_zero=stack.slope0,
            )
            episode.absorb(measurement, net)
            self._solutions[e] = (sites, k)

    def _grow(self, site: int, envs: list[int]) -> None:
        """Amplitude search for all envs growing ``site`` at once, then apply each."""
        t0 = time.perf_counter()
        stack = self.stack
        idx = self._idx(envs)
        nxt = site + 1
        caps = stack.caps
        ks = [int(self.envs[e].episode.neurons[site]) for e in envs]
        k_max = max(ks)
        needed = max(int(stack.widths[e, site]) + k for e, k in zip(envs, ks, strict=True))
        stack.ensure_capacity(site, needed)
        alphas, omegas, updates = [], [], []
        for e, k in zip(envs, ks, strict=True):
            sites, row = self._solutions[e]
            s = sites[site]
            alpha = _weights_and_bias(s.alpha[row, :k], k, caps[site])
            omega = F.pad(s.omega[row, :, :k], (0, 0, 0, caps[nxt + 1] - s.omega.shape[-2]))
            update = torch.cat([s.update_weight[row], s.update_bias[row].unsqueeze(1)], 1)
            update = _weights_and_bias(update, caps[nxt + 1], caps[nxt])
            alphas.append(F.pad(alpha, (0, 0, 0, k_max - k)))
            omegas.append(F.pad(omega, (0, k_max - k)))
            updates.append(update)
        in_mask = stack.in_mask(site, idx).unsqueeze(1)
        out_mask = stack.out_mask(nxt, idx)
        alpha = torch.stack(alphas) * in_mask
        omega = torch.stack(omegas) * out_mask.unsqueeze(2)
        update = torch.stack(updates) * out_mask.unsqueeze(2) * stack.in_mask(nxt, idx).unsqueeze(1)
        sx, sy = (t[idx] for t in self.data["search"])
        gammas = default_gammas(self.device, stack.dtype)
        losses = gamma_losses(stack, idx, site, sx, sy, self.loss_fn, alpha, omega, update, gammas)
        best = torch.argmin(losses, 1)
        rows = torch.arange(len(envs), device=self.device)
        gamma = gammas[best]
        drop = losses[:, 0] - losses[rows, best]
        host = torch.stack([gamma.double(), drop.double()], 1).cpu().numpy()
        n_gammas, n_stats = len(default_gammas()), sx.shape[1]
        for i, (e, k) in enumerate(zip(envs, ks, strict=True)):
            env = self.envs[e]
            env.episode.charge("search", env.family.search_macs(env.net, site, n_gammas, n_stats))
            stack.apply(e, site, alpha[i, :k], omega[i, :, :k], update[i], gamma[i])
            env.episode.record_growth(site, float(host[i, 0]), float(host[i, 1]))
        elapsed = time.perf_counter() - t0
        self.seconds["search"] += elapsed
        for e in envs:
            self.envs[e].episode.charge("search", seconds=elapsed / len(envs))

    # ------------------------------------------------------------------ VecEnv plumbing
    def close(self) -> None:
        self.stack = None

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        if method_name == "evaluate_candidates":
            raise NotImplementedError(
                "evaluate_candidates: not available in the lockstep env; use --vec dummy or "
                "subproc for policies that need real loss drops (greedy-loss, annealing, bic)"
            )
        return [
            getattr(self.envs[i], method_name)(*method_args, **method_kwargs)
            for i in self._get_indices(indices)
        ]

    def net(self, env: int):
        """Env ``env``'s current network as a stand-alone GrowingMLP (a copy)."""
        return self.stack.to_net(env, self.config.activation)
