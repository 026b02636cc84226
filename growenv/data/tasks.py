"""Data sets that growth episodes run on.

Every builder returns a :class:`Task` with four splits: ``train`` (inter-growth training steps),
``stats`` (a separate part of the training data for growth statistics and the amplitude search),
``val`` and ``test``. Builders are deterministic given ``seed`` and never touch global RNG state:
each random quantity (teacher weights, each split's inputs, label noise) comes from its own
generator seeded from ``(seed, stream)``, so e.g. changing ``n_train`` leaves the teacher and the
test set unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from growenv.data.cifar import IMAGE_SHAPE as CIFAR_IMAGE_SHAPE
from growenv.data.cifar import load_cifar10
from growenv.errors import UserError
from growenv.validation import choice, class_labels, integer, real

__all__ = [
    "TASK_NAMES",
    "TEACHER_TASK_NAMES",
    "Split",
    "Task",
    "TeacherNet",
    "TeacherStudentDistribution",
    "cifar10",
    "digits",
    "held_out_teachers",
    "make_task",
    "multi_sin",
    "require_teacher",
    "teacher_student",
]

Device = torch.device | str
LOSSES = ("mse", "cross_entropy")
SPLIT_NAMES = ("train", "stats", "val", "test")

# Generator streams of one task seed (see _generator).
_STREAM_WEIGHTS, _STREAM_NORM = 0, 1
_STREAM_SPLIT = {name: 10 + i for i, name in enumerate(SPLIT_NAMES)}
_STREAM_NOISE = {name: 20 + i for i, name in enumerate(SPLIT_NAMES)}

TEACHER_NORM_SAMPLES = 1 << 13  # inputs used to normalise a teacher's outputs
TEACHER_BIAS_STD = 0.1


@dataclass(frozen=True, eq=False)  # tensors have no boolean ==; compare fields explicitly
class Split:
    """One data split; ``x`` float32 ``(n, *input_shape)``, ``y`` float32 ``(n, out)`` or int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split has {len(self.x)} inputs but {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: Device) -> Split:
        """Return the split with both tensors on ``device``."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(eq=False)
class Task:
    """A supervised data set with train / stats / val / test splits.

    ``loss`` is ``"mse"`` (per-sample loss ``||f(x_i) - y_i||^2`` summed over outputs) or
    ``"cross_entropy"`` (``y`` holds int64 class labels in ``[0, out_features)``, checked at
    construction). ``teacher`` is the generating network for teacher-student tasks, else
    ``None``.
    """

    name: str
    loss: str
    input_shape: tuple[int, ...]
    out_features: int
    train: Split
    stats: Split
    val: Split
    test: Split
    teacher: nn.Module | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("loss", self.loss, LOSSES)
        self.input_shape = tuple(int(d) for d in self.input_shape)
        if self.loss == "cross_entropy":
            for name in SPLIT_NAMES:
                class_labels(f"{name}.y", getattr(self, name).y, self.out_features)

    @property
    def in_features(self) -> int:
        """Number of input features, ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    @property
    def is_classification(self) -> bool:
        """Whether targets are class labels (cross-entropy loss)."""
        return self.loss == "cross_entropy"

    def splits(self) -> dict[str, Split]:
        """The four splits by name."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def to(self, device: Device) -> Task:
        """Return a copy with every tensor (and the teacher) on ``device``."""
        teacher = None if self.teacher is None else copy.deepcopy(self.teacher).to(device)
        moved = {name: split.to(device) for name, split in self.splits().items()}
        return dataclasses.replace(self, teacher=teacher, info=dict(self.info), **moved)

    def flattened(self) -> Task:
        """Return a copy with inputs reshaped to ``(n, in_features)`` (for MLPs)."""
        info = dict(self.info)
        if len(self.input_shape) > 1:
            info.setdefault("image_shape", self.input_shape)
        flat = {name: Split(s.x.reshape(len(s), -1), s.y) for name, s in self.splits().items()}
        return dataclasses.replace(self, input_shape=(self.in_features,), info=info, **flat)


# --------------------------------------------------------------------------- helpers


def _generator(seed: int, stream: int) -> torch.Generator:
    """Independent CPU generator for one purpose (``stream``) of one task seed."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _check_kwargs(builder: Callable, task: str, kwargs: dict) -> None:
    accepted = inspect.signature(builder).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"task {task!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"it accepts {', '.join(accepted)}"
        )


def _make(name: str, loss: str, input_shape: tuple[int, ...], out: int, splits: dict, **extra):
    return Task(
        name=name,
        loss=loss,
        input_shape=input_shape,
        out_features=out,
        **{k: Split(*v) for k, v in splits.items()},
        **extra,
    )


# --------------------------------------------------------------------------- teacher-student

_ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    # name: (module, init gain); gain**2 / fan_in is the weight variance
    "selu": (nn.SELU, 1.0),
    "tanh": (nn.Tanh, 1.0),
    "gelu": (nn.GELU, math.sqrt(2.0)),
    "relu": (nn.ReLU, math.sqrt(2.0)),
}


class TeacherNet(nn.Module):
    """Random MLP teacher with an optional skip connection from the input to the last hidden state.

    ``h_1 = act(W_1 x + b_1)``, ``h_l = act(W_l h_{l-1} + b_l)``, and with the skip (only when
    there are at least two hidden states) ``h_L = act(W_L h_{L-1} + b_L + S x + c)``;
    ``y = W_o h_L + b_o``. The skip linear has its own bias ``c``.

    Parameters
    ----------
    in_features, hidden, out_features
        Input size, hidden state sizes (at least one), output size.
    skip
        Add the direct input -> last hidden state connection (ignored for one hidden state).
    activation
        One of ``"selu"``, ``"relu"``, ``"tanh"``, ``"gelu"``.
    generator
        Source of the initial weights (``None``: torch's global generator). Weights are
        ``N(0, gain^2 / fan_in)`` with ``fan_in`` the total fan-in of the receiving state
        (LeCun normal for SELU; gain sqrt(2) for ReLU/GELU), biases ``N(0, 0.1^2)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        skip: bool = True,
        activation: str = "selu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        dims = (in_features, *hidden)
        linear = nn.utils.skip_init  # allocate without touching the global RNG
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.hidden = nn.ModuleList(linear(nn.Linear, a, b) for a, b in pairs)
        has_skip = skip and len(hidden) >= 2
        self.skip = linear(nn.Linear, in_features, hidden[-1]) if has_skip else None
        self.output = linear(nn.Linear, hidden[-1], out_features)
        module, self.gain = _ACTIVATIONS[activation]
        self.activation = module()
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw fresh random weights (see the class docstring)."""
        last = len(self.hidden) - 1
        for i, layer in enumerate(self.hidden):
            fan_in = layer.in_features + (self.skip.in_features if i == last and self.skip else 0)
            parts = [layer, self.skip] if i == last and self.skip is not None else [layer]
            for part in parts:
                part.weight.normal_(0.0, self.gain / math.sqrt(fan_in), generator=generator)
                part.bias.normal_(0.0, TEACHER_BIAS_STD, generator=generator)
        self.output.weight.normal_(
            0.0, 1.0 / math.sqrt(self.output.in_features), generator=generator
        )
        self.output.bias.normal_(0.0, TEACHER_BIAS_STD, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher output ``y`` of shape ``(n, out_features)``."""
        h = x
        last = len(self.hidden) - 1
        for i, layer in enumerate(self.hidden):
            z = layer(h)
            if i == last and self.skip is not None:
                z = z + self.skip(x)
            h = self.activation(z)
        return self.output(h)


def _uniform_inputs(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, d, generator=generator) * 2.0 - 1.0


def teacher_student(
    seed: int = 0,
    in_features: int = 20,
    hidden: Sequence[int] = (50, 50),
    out_features: int = 1,
    skip: bool = True,
    activation: str = "selu",
    n_train: int = 2048,
    n_stats: int = 1024,
    n_val: int = 1024,
    n_test: int = 2048,
    noise_std: float = 0.0,
    classes: int = 0,
    device: Device = "cpu",
) -> Task:
    """Regression on the outputs of a random teacher network (Douka et al., 2025), or
    classification by its largest output (``classes >= 2``).

    The default teacher is 20 -> 50 -> 50 -> 1 with SELU and a skip from the input to the second
    hidden state: 4,701 parameters. Inputs are uniform on ``[-1, 1]^in_features``. The teacher's
    output layer is rescaled so that each output has mean 0 and variance 1 over
    ``TEACHER_NORM_SAMPLES`` independent inputs; ``task.teacher(x)`` is thus exactly the
    (noise-free) target. ``noise_std`` adds Gaussian noise to the train, stats and val targets;
    test targets stay noise-free, so test loss measures the distance to the teacher.

    With ``classes = k >= 2`` the teacher has ``k`` (normalised) outputs and the label of
    ``x`` is the index of the largest, ``argmax teacher(x)`` (``noise_std`` is then added to
    the outputs before the argmax: label noise near the class boundaries); ``out_features``
    must be left at 1 or equal ``k``. ``classes=0`` is regression.

    Returns
    -------
    Task
        ``loss="mse"`` (``"cross_entropy"`` with int64 labels for ``classes >= 2``),
        ``input_shape=(in_features,)``, with the teacher (eval mode, no grad).
    """
    seed = integer("seed", seed, 0)
    in_features = integer("in_features", in_features, 1)
    out_features = integer("out_features", out_features, 1)
    if isinstance(hidden, numbers.Integral) or len(hidden) == 0:
        raise ValueError(f"hidden: expected a non-empty sequence of widths, got {hidden!r}")
    hidden = tuple(integer(f"hidden[{i}]", w, 1) for i, w in enumerate(hidden))
    sizes = dict(zip(SPLIT_NAMES, (n_train, n_stats, n_val, n_test), strict=True))
    sizes = {name: integer(f"n_{name}", n, 1) for name, n in sizes.items()}
    real("noise_std", noise_std, 0.0)
    classes = integer("classes", classes, 0)
    if classes == 1:
        raise ValueError(f"classes: expected 0 (regression) or an int >= 2, got {classes!r}")
    if classes and out_features not in (1, classes):
        raise ValueError(
            f"out_features: expected 1 or classes ({classes}) for a classification teacher, "
            f"got {out_features!r}"
        )
    if classes:
        out_features = classes

    teacher = TeacherNet(
        in_features, hidden, out_features, skip, activation, _generator(seed, _STREAM_WEIGHTS)
    )
    teacher.eval().requires_grad_(False)
    with torch.no_grad():
        y_norm = teacher(
            _uniform_inputs(TEACHER_NORM_SAMPLES, in_features, _generator(seed, _STREAM_NORM))
        )
        y_norm = y_norm.double()
        mean, std = y_norm.mean(0), y_norm.std(0).clamp_min(1e-12)
        w, b = teacher.output.weight, teacher.output.bias
        w.copy_(w.double() / std[:, None])
        b.copy_((b.double() - mean) / std)

    splits = {}
    for name in SPLIT_NAMES:
        x = _uniform_inputs(sizes[name], in_features, _generator(seed, _STREAM_SPLIT[name]))
        with torch.no_grad():
            y = teacher(x)
        if noise_std > 0 and name != "test":
            y = y + noise_std * torch.randn(
                y.shape, generator=_generator(seed, _STREAM_NOISE[name])
            )
        if classes:
            y = y.argmax(dim=1)
        splits[name] = (x.to(device), y.to(device))
    info = {
        "seed": seed,
        "in_features": in_features,
        "hidden": hidden,
        "out_features": out_features,
        "skip": teacher.skip is not None,
        "activation": activation,
        "n_params": sum(p.numel() for p in teacher.parameters()),
        "noise_std": float(noise_std),
        "classes": classes,
        "input_distribution": "uniform[-1, 1]",
        "raw_output_mean": mean.tolist(),
        "raw_output_std": std.tolist(),
    }
    return _make(
        "teacher_student",
        "cross_entropy" if classes else "mse",
        (in_features,),
        out_features,
        splits,
        teacher=teacher.to(device),
        info=info,
    )


@dataclass(frozen=True)
class TeacherStudentDistribution:
    """Distribution over random teacher-student tasks, for training an agent on many teachers.

    A draw picks a teacher seed uniformly from ``seeds``, a number of hidden states uniformly in
    ``depth = (min, max)`` and each hidden width uniformly in ``width = (min, max)`` (inclusive),
    then, when ``classes`` lists more than one value, one of them uniformly (0: regression,
    ``k >= 2``: classification into ``k`` classes, see :func:`teacher_student`); with a single
    value nothing more is drawn, so the draws of regression-only distributions are unchanged.
    """

    in_features: int = 20
    out_features: int = 1
    depth: tuple[int, int] = (2, 2)
    width: tuple[int, int] = (10, 80)
    seeds: Sequence[int] = range(0, 10**6)
    classes: Sequence[int] = (0,)

    def __post_init__(self) -> None:
        integer("in_features", self.in_features, 1)
        integer("out_features", self.out_features, 1)
        for name in ("depth", "width"):
            lo, hi = getattr(self, name)
            integer(f"{name}[0]", lo, 1)
            if integer(f"{name}[1]", hi, 1) < lo:
                raise ValueError(f"{name}: expected (min, max) with min <= max, got {(lo, hi)}")
        if len(self.seeds) == 0:
            raise ValueError(f"seeds: expected a non-empty sequence of seeds, got {self.seeds!r}")
        if isinstance(self.classes, (str, numbers.Integral)) or len(self.classes) == 0:
            raise ValueError(
                f"classes: expected a non-empty sequence of class counts (0: regression), "
                f"got {self.classes!r}"
            )
        for i, k in enumerate(self.classes):
            if integer(f"classes[{i}]", k, 0) == 1:
                raise ValueError(f"classes[{i}]: expected 0 or an int >= 2, got 1")

    def _hidden(self, rng: np.random.Generator) -> tuple[int, ...]:
        depth = int(rng.integers(self.depth[0], self.depth[1] + 1))
        return tuple(int(w) for w in rng.integers(self.width[0], self.width[1] + 1, size=depth))

    def _classes(self, rng: np.random.Generator) -> int:
        if len(self.classes) == 1:
            return int(self.classes[0])
        return int(self.classes[int(rng.integers(len(self.classes)))])

    def _build(self, seed: int, hidden: tuple[int, ...], overrides: dict, classes: int = 0) -> Task:
        kwargs = {
            "seed": seed,
            "in_features": self.in_features,
            "hidden": hidden,
            "out_features": self.out_features,
            **({"classes": classes} if classes else {}),
            **overrides,
        }
        _check_kwargs(teacher_student, "teacher_student", kwargs)
        return teacher_student(**kwargs)

    def sample(self, rng: np.random.Generator, **overrides: object) -> Task:
        """Draw a teacher seed and hidden sizes from ``rng`` and build the task.

        ``overrides`` are passed to :func:`teacher_student` (e.g. ``n_train``, ``device``).
        """
        seed = int(self.seeds[int(rng.integers(len(self.seeds)))])
        hidden = self._hidden(rng)
        return self._build(seed, hidden, overrides, self._classes(rng))

    def held_out_teachers(
        self, n: int, seed_offset: int = 10**6, **overrides: object
    ) -> list[Task]:
        """``n`` tasks with teacher seeds ``seed_offset .. seed_offset + n - 1``, none in ``seeds``.

        Hidden sizes follow the same distribution, drawn from ``default_rng(seed_offset)``, so
        the first k held-out teachers do not depend on ``n``.
        """
        n = integer("n", n, 1)
        held = range(integer("seed_offset", seed_offset, 0), seed_offset + n)
        train = self.seeds if isinstance(self.seeds, range) else frozenset(self.seeds)
        clash = [s for s in held if s in train]
        if clash:
            raise ValueError(
                f"held-out seeds {held} overlap the training seeds (e.g. {clash[0]}); "
                "choose a seed_offset outside the distribution's seeds"
            )
        rng = np.random.default_rng(seed_offset)
        tasks = []
        for s in held:
            hidden = self._hidden(rng)
            tasks.append(self._build(s, hidden, overrides, self._classes(rng)))
        return tasks


def held_out_teachers(
    n: int,
    seed_offset: int = 10**6,
    distribution: TeacherStudentDistribution | None = None,
    **overrides: object,
) -> list[Task]:
    """Held-out teacher tasks of ``distribution`` (default: ``TeacherStudentDistribution()``).

    See :meth:`TeacherStudentDistribution.held_out_teachers`.
    """
    dist = TeacherStudentDistribution() if distribution is None else distribution
    return dist.held_out_teachers(n, seed_offset=seed_offset, **overrides)


# --------------------------------------------------------------------------- multi-sin


def multi_sin(
    seed: int = 0,
    in_features: int = 50,
    n_classes: int = 10,
    n_train: int = 4096,
    n_stats: int = 1024,
    n_val: int = 1024,
    n_test: int = 2048,
    device: Device = "cpu",
) -> Task:
    """Synthetic classification from the TINY slides: ``y = argmax_k sin(k * sum_j x_j)``.

    ``x ~ N(0, I_in_features)``, ``k = 1..n_classes``; label ``k - 1`` (int64). The labels are
    computed in float64 from the stored float32 inputs.
    """
    seed = integer("seed", seed, 0)
    in_features = integer("in_features", in_features, 1)
    n_classes = integer("n_classes", n_classes, 1)
    sizes = dict(zip(SPLIT_NAMES, (n_train, n_stats, n_val, n_test), strict=True))
    k = torch.arange(1, n_classes + 1, dtype=torch.float64)
    splits = {}
    for name, n in sizes.items():
        n = integer(f"n_{name}", n, 1)
        x = torch.randn(n, in_features, generator=_generator(seed, _STREAM_SPLIT[name]))
        y = torch.sin(x.double().sum(1, keepdim=True) * k).argmax(1)
        splits[name] = (x.to(device), y.to(device))
    info = {"seed": seed, "n_classes": n_classes, "input_distribution": "normal(0, I)"}
    return _make("multi_sin", "cross_entropy", (in_features,), n_classes, splits, info=info)


# --------------------------------------------------------------------------- digits


def digits(
    seed: int = 0,
    stats_fraction: float = 0.15,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    device: Device = "cpu",
) -> Task:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; no download).

    Pixels are scaled to ``[0, 1]`` (divided by 16) and then standardised per pixel with the
    train split's mean and std (std 1 for pixels constant on train). Stratified random split:
    test ``round(test_fraction * 1797)`` = 359, val 270, stats 270, train the rest (898) with
    the defaults. ``info`` holds ``split_indices`` (into ``load_digits()`` order), ``mean``,
    ``std`` and ``image_shape = (1, 8, 8)``.
    """
    from sklearn.datasets import load_digits  # deferred: sklearn is slow to import
    from sklearn.model_selection import train_test_split

    seed = integer("seed", seed, 0)
    fractions = {
        "test": real("test_fraction", test_fraction, 0.0, 1.0, exclusive=True),
        "val": real("val_fraction", val_fraction, 0.0, 1.0, exclusive=True),
        "stats": real("stats_fraction", stats_fraction, 0.0, 1.0, exclusive=True),
    }
    if sum(fractions.values()) >= 1.0:
        raise ValueError(
            "stats_fraction, val_fraction, test_fraction: expected a sum < 1, got "
            f"{sum(fractions.values())!r}"
        )
    data = load_digits()
    x_all = data.data.astype(np.float64) / 16.0
    y_all = data.target.astype(np.int64)
    rest = np.arange(len(y_all))
    indices = {}
    for i, (name, frac) in enumerate(fractions.items()):
        size = round(frac * len(y_all))
        rest, indices[name] = train_test_split(
            rest, test_size=size, stratify=y_all[rest], random_state=(seed * 4 + i) % 2**32
        )
    indices["train"] = rest
    indices = {name: np.sort(indices[name]) for name in SPLIT_NAMES}
    mean = x_all[indices["train"]].mean(0)
    std = x_all[indices["train"]].std(0)
    std[std < 1e-8] = 1.0
    splits = {}
    for name, idx in indices.items():
        x = torch.from_numpy((x_all[idx] - mean) / std).float()
        splits[name] = (x.to(device), torch.from_numpy(y_all[idx]).to(device))
    info = {
        "seed": seed,
        "source": "sklearn.datasets.load_digits",
        "image_shape": (1, 8, 8),
        "split_indices": indices,
        "mean": mean,
        "std": std,
    }
    return _make("digits", "cross_entropy", (64,), 10, splits, info=info)


# --------------------------------------------------------------------------- CIFAR-10


def _channel_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 images ``(n, 3, H, W)`` scaled to ``[0, 1]``."""
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        m = counts @ values / counts.sum()
        mean.append(m)
        std.append(math.sqrt(counts @ (values - m) ** 2 / counts.sum()))
    return np.array(mean), np.array(std)


def cifar10(
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    flatten: bool = True,
    n_train: int | None = None,
    n_val: int | None = None,
    n_stats: int | None = None,
    n_test: int | None = None,
    pool: int = 1,
    device: Device = "cpu",
) -> Task:
    """CIFAR-10 from local files (see :func:`~growenv.data.cifar.load_cifar10`; never downloads).

    The official training images are shuffled with ``seed``; ``val`` takes the first ``n_val``
    (default 10 % of them), ``stats`` the next ``n_stats`` (default 10 %), ``train`` the next
    ``n_train`` (default: all the rest, 40,000 on full CIFAR-10). ``test`` is the first
    ``n_test`` images of ``test_batch`` (default all). Pixels are scaled to ``[0, 1]`` and
    normalised per channel with the train split's mean and std. ``flatten=True`` gives
    ``input_shape (3072,)``, else ``(3, 32, 32)``; ``info["image_shape"]`` is ``(3, 32, 32)``.

    ``pool = p > 1`` averages the normalised images over ``p x p`` blocks first (``p`` divides
    32): ``pool=4`` gives 8 x 8 images, 192 features flattened. A flattened DAG student's
    input expansions cost O(d^3) in the input size d (a 3,072-square covariance to factor
    per statistics pass), so the growth experiments use ``pool=4``.
    """
    seed = integer("seed", seed, 0)
    pool = integer("pool", pool, 1)
    if CIFAR_IMAGE_SHAPE[1] % pool:
        raise ValueError(f"pool: expected a divisor of {CIFAR_IMAGE_SHAPE[1]}, got {pool!r}")
    data = load_cifar10(data_dir)
    n_all = len(data.y_train)
    n_val = round(0.1 * n_all) if n_val is None else integer("n_val", n_val, 1)
    n_stats = round(0.1 * n_all) if n_stats is None else integer("n_stats", n_stats, 1)
    if n_train is None:
        n_train = n_all - n_val - n_stats
    if integer("n_train", n_train, 1) + n_val + n_stats > n_all:
        raise ValueError(
            f"n_train + n_val + n_stats = {n_train + n_val + n_stats} exceeds the {n_all} "
            "training images"
        )
    n_test = len(data.y_test) if n_test is None else integer("n_test", n_test, 1)
    if n_test > len(data.y_test):
        raise ValueError(f"n_test = {n_test} exceeds the {len(data.y_test)} test images")

    perm = np.random.default_rng(seed).permutation(n_all)
    bounds = np.cumsum([0, n_val, n_stats, n_train])
    indices = {
        "val": perm[bounds[0] : bounds[1]],
        "stats": perm[bounds[1] : bounds[2]],
        "train": perm[bounds[2] : bounds[3]],
    }
    mean, std = _channel_moments(data.x_train[indices["train"]])
    shift = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    scale = torch.tensor(255.0 * std, dtype=torch.float32)[:, None, None]
    side = CIFAR_IMAGE_SHAPE[1] // pool
    image_shape = (CIFAR_IMAGE_SHAPE[0], side, side)
    input_shape = (image_shape[0] * side * side,) if flatten else image_shape

    def convert(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(images).float().sub_(255.0 * shift).div_(scale)
        if pool > 1:
            x = torch.nn.functional.avg_pool2d(x, pool)
        x = x.reshape(len(x), *input_shape)
        return x.to(device), torch.from_numpy(labels).to(device)

    splits = {name: convert(data.x_train[idx], data.y_train[idx]) for name, idx in indices.items()}
    splits["test"] = convert(data.x_test[:n_test], data.y_test[:n_test])
    info = {
        "seed": seed,
        "source": str(data_dir if data_dir is not None else os.environ.get("GROWENV_DATA")),
        "label_names": data.label_names,
        "image_shape": CIFAR_IMAGE_SHAPE,
        "pool": pool,
        "mean": tuple(mean.tolist()),
        "std": tuple(std.tolist()),
        "split_indices": {**indices, "test": np.arange(n_test)},
    }
    return _make("cifar10", "cross_entropy", input_shape, 10, splits, info=info)


# --------------------------------------------------------------------------- dispatch

_BUILDERS: dict[str, Callable[..., Task]] = {
    "teacher_student": teacher_student,
    "multi_sin": multi_sin,
    "digits": digits,
    "cifar10": cifar10,
}
TASK_NAMES = tuple(_BUILDERS)
#: The task names whose tasks have a teacher network (the env's distribution name included).
TEACHER_TASK_NAMES = ("teacher_student", "teacher_student_distribution")


def require_teacher(task: object, name: str = "oracle") -> None:
    """Raise unless ``task`` has a known teacher (what the oracle baseline trains).

    Parameters
    ----------
    task
        A task name (one of :data:`TEACHER_TASK_NAMES` passes), a :class:`Task` (with a
        ``teacher``) or a :class:`TeacherStudentDistribution`.
    name
        The argument that asked for the teacher (it starts the error message).

    Raises
    ------
    ValueError
        ``"oracle: expected a teacher-student task (teacher_student,
        teacher_student_distribution), got 'digits'"``.
    """
    if isinstance(task, TeacherStudentDistribution):
        return
    if isinstance(task, Task):
        if task.teacher is not None:
            return
        task = task.name
    elif isinstance(task, str) and task in TEACHER_TASK_NAMES:
        return
    raise UserError(
        f"{name}: expected a teacher-student task ({', '.join(TEACHER_TASK_NAMES)}: the "
        f"oracle trains the teacher's architecture), got {task!r}"
    )


def make_task(name: str, seed: int = 0, device: Device = "cpu", **kwargs: object) -> Task:
    """Build a task by name: one of ``TASK_NAMES``; ``kwargs`` go to its builder.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or bad sizes.
    TypeError
        For a keyword the task's builder does not accept.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASK_NAMES)}")
    builder = _BUILDERS[name]
    _check_kwargs(builder, name, kwargs)
    return builder(seed=seed, device=device, **kwargs)
