"""EnvConfig: every setting of a growth environment, validated once, JSON round-tripping.

:class:`~growenv.env.growth_env.GrowthEnv` and :class:`~growenv.env.lockstep.LockstepVecEnv`
take the same config; training configs and the harness pass it around as JSON
(:meth:`EnvConfig.to_json` / :meth:`EnvConfig.from_json`). A task given as an object (a
``Task``, a ``TeacherStudentDistribution`` or a callable) is not JSON and stays a separate
``task`` argument of the env; the config then records ``task=None``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from growenv.data.tasks import TASK_NAMES
from growenv.nets.family import EXPANSIONS, SITES, STACKABLE, NetFamily, format_choices
from growenv.nets.registry import FAMILIES, get_family
from growenv.validation import boolean, choice, integer, real

DISTRIBUTION_NAME = "teacher_student_distribution"
TASK_CHOICES = (*TASK_NAMES, DISTRIBUTION_NAME)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
REWARDS = ("log_ratio", "relative")
METHODS = ("tiny", "gradmax", "random")
INVALID_ACTIONS = ("raise", "skip")
FIT_SCOPES = ("all", "chosen")
SEARCH_SPLITS = ("train", "stats")
# family options that are EnvConfig fields (each validated by the families that take it)
FAMILY_OPTIONS = ("kernel", "neuron_fit", "start_graph")
# capabilities of the families the env can drive (numbered sites, or DAG expansion slots)
DRIVABLE = (SITES, EXPANSIONS)

# one line per field for the docs' arguments table (docs/environment.md, GrowthEnv docstring)
HELP = {
    "task": "task name (a `Task`, `TeacherStudentDistribution` or callable `rng -> Task` "
    "is passed to the env beside the config)",
    "task_kwargs": "keyword arguments of the task builder (or of the distribution)",
    "device": "torch device of the env's nets and data",
    "hidden_layers": "hidden layers (conv: stages) of the start network",
    "start_width": "neurons (conv: channels) per hidden layer at the start",
    "activation": "activation of the hidden layers",
    "max_sites": "site slots of the action and observation spaces (>= hidden_layers); "
    "ignored by `dag` (its slots follow from `max_nodes`)",
    "neurons_per_growth": 'neurons one growth adds, or "auto" (the significant ones)',
    "train_steps": "optimizer steps after every decision",
    "batch_size": "minibatch size of the training steps",
    "optimizer": "optimizer of the training steps",
    "lr": "learning rate",
    "max_steps": "decisions per episode (truncation)",
    "max_params": "parameter budget (growth that does not fit is masked), or none",
    "max_compute": "compute budget in multiply-adds (termination), or none",
    "cost_per_param": "reward cost per added parameter",
    "cost_per_flop": "reward cost per added multiply-add per sample",
    "reward": "`log_ratio` (telescopes) or `relative` validation-loss decrease",
    "method": "new neurons: `tiny`, `gradmax` or `random`",
    "invalid_action": "a masked action becomes the skip action, flagged in "
    "`info['invalid_action']` (`skip`), or raises `ValueError` (`raise`)",
    "dtype": "floating-point type of nets, data and statistics",
    "net": "net family: `mlp`, `conv` (image tasks) or `dag` (any DAG of fully connected "
    "layers, grown by new edges, new nodes and wider nodes)",
    "kernel": "conv family: `full` or `restricted` TINY channels",
    "max_nodes": "dag family: most hidden nodes (sets the expansion slots of the action and "
    "observation spaces)",
    "neuron_fit": "dag family: new neurons fitted with the activation (`nonlinear`, needs an "
    "int `neurons_per_growth`) or by TINY's closed form (`tiny`, blind once `in` feeds `out`)",
    "start_graph": "dag family: episodes start from the `empty` graph (in, out, no edge) or a "
    "`chain` of `hidden_layers` nodes of `start_width`",
    "fit_scope": "dag family with `neuron_fit='nonlinear'`: fit the new neurons of `all` "
    "expansions in every statistics phase (charged to `statistics`), or only of the `chosen` "
    "ones, when searched or grown (TINY's closed form for the features; charged to `fit`)",
    "search_split": "data of the amplitude line search of a growth: the first `n_stats` "
    "samples of the `train` split (disjoint from the statistics the new neurons are solved "
    "on) or the `stats` split itself (growenv <= 0.1 behaviour: the closed form and its "
    "amplitude then see the same samples, which overfits when inputs are many)",
    "augment": "random crop and flip of training minibatches (image tasks)",
    "threads": "torch CPU threads of the env's own work (the caller's count is restored "
    "after each call), or none to leave torch's setting alone",
}


def arguments_table() -> str:
    """The Markdown table of the config's fields (argument, default, meaning), generated
    from the dataclass, as ``docs/environment.md`` shows it."""
    lines = ["| argument | default | meaning |", "|---|---|---|"]
    defaults = EnvConfig()
    for f in dataclasses.fields(EnvConfig):
        value = getattr(defaults, f.name)
        lines.append(f"| `{f.name}` | `{json.dumps(value)}` | {HELP[f.name]} |")
    return "\n".join(lines)


def _drivable_family(name: Any) -> NetFamily:
    """The registered family ``name`` if the env can drive it (capability ``"sites"`` or
    ``"expansions"``).

    Raises
    ------
    ValueError
        One line: ``"net: expected 'mlp', 'conv' or 'dag', got 'x'"`` for an unknown name;
        for a registered family with neither capability, that the env cannot drive it.
    """
    drivable = format_choices(
        tuple(n for n, f in FAMILIES.items() if f.capabilities & set(DRIVABLE))
    )
    try:
        family = get_family(name)
    except ValueError:
        raise ValueError(f"net: expected {drivable}, got {name!r}") from None
    if not family.capabilities & set(DRIVABLE):
        raise ValueError(
            f"net: expected a family the env can drive ({drivable}); {name!r} grows neither "
            "by numbered sites nor by DAG expansions"
        )
    return family


def _device(value: Any) -> str:
    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device: expected a torch device such as 'cpu' or 'cuda', got {value!r}"
        ) from None


def _dtype(value: Any) -> str:
    for name, dtype in DTYPES.items():
        if value == name or value is dtype:
            return name
    raise ValueError(
        f"dtype: expected one of {', '.join(map(repr, DTYPES))} (or the torch dtypes), "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class EnvConfig:
    """The settings of a growth environment (all of GrowthEnv's arguments but ``render_mode``).

    Every field is checked when the config is built; a bad value raises ``ValueError`` with
    one line, ``"name: expected ..., got ..."``. Values are stored in canonical form (ints,
    floats, ``dtype`` and ``device`` as strings), so :meth:`to_json` / :meth:`from_json`
    round-trip exactly. See ``docs/environment.md`` for the meaning of each field.
    """

    task: str | None = "teacher_student"
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    hidden_layers: int = 2
    start_width: int = 1
    activation: str = "selu"
    max_sites: int = 4
    neurons_per_growth: int | str = 4
    train_steps: int = 100
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 3e-3
    max_steps: int = 20
    max_params: int | None = None
    max_compute: float | None = None
    cost_per_param: float = 0.0
    cost_per_flop: float = 0.0
    reward: str = "log_ratio"
    method: str = "tiny"
    invalid_action: str = "skip"
    dtype: str = "float32"
    net: str = "mlp"
    kernel: str = "full"
    augment: bool = False
    threads: int | None = 1
    max_nodes: int = 8
    neuron_fit: str = "nonlinear"
    start_graph: str = "empty"
    fit_scope: str = "all"
    search_split: str = "train"

    def __post_init__(self) -> None:
        canonical = {
            "hidden_layers": integer("hidden_layers", self.hidden_layers, 1),
            "max_sites": integer("max_sites", self.max_sites, 1),
            "start_width": integer("start_width", self.start_width, 0),
            "train_steps": integer("train_steps", self.train_steps, 0),
            "batch_size": integer("batch_size", self.batch_size, 1),
            "max_steps": integer("max_steps", self.max_steps, 1),
            "max_params": integer("max_params", self.max_params, 1, allow_none=True),
            "max_compute": real("max_compute", self.max_compute, 1.0, allow_none=True),
            "cost_per_param": real("cost_per_param", self.cost_per_param, 0.0),
            "cost_per_flop": real("cost_per_flop", self.cost_per_flop, 0.0),
            "lr": real("lr", self.lr, 1e-12),
            "reward": choice("reward", self.reward, REWARDS),
            "method": choice("method", self.method, METHODS),
            "invalid_action": choice("invalid_action", self.invalid_action, INVALID_ACTIONS),
            "augment": boolean("augment", self.augment),
            "threads": integer("threads", self.threads, 1, allow_none=True),
            "max_nodes": integer("max_nodes", self.max_nodes, 1),
            "fit_scope": choice("fit_scope", self.fit_scope, FIT_SCOPES),
            "search_split": choice("search_split", self.search_split, SEARCH_SPLITS),
            "dtype": _dtype(self.dtype),
            "device": _device(self.device),
        }
        drive = _drivable_family(self.net)  # "net: expected 'mlp', 'conv' or 'dag', got ..."
        for family in FAMILIES.values():
            family.validate_options(
                **{name: getattr(self, name) for name in FAMILY_OPTIONS if name in family.options}
            )
        if SITES in drive.capabilities and canonical["hidden_layers"] > canonical["max_sites"]:
            raise ValueError(
                f"max_sites: expected an int >= hidden_layers ({canonical['hidden_layers']}), "
                f"got {self.max_sites!r}"
            )
        if (
            EXPANSIONS in drive.capabilities
            and self.start_graph == "chain"
            and canonical["hidden_layers"] > canonical["max_nodes"]
        ):
            raise ValueError(
                f"max_nodes: expected an int >= hidden_layers ({canonical['hidden_layers']}, "
                f"the chain start graph's nodes), got {self.max_nodes!r}"
            )
        if self.neurons_per_growth != "auto":
            canonical["neurons_per_growth"] = integer(
                "neurons_per_growth", self.neurons_per_growth, 1
            )
        elif EXPANSIONS in drive.capabilities and self.neuron_fit == "nonlinear":
            raise ValueError(
                "neurons_per_growth: expected an int >= 1 with neuron_fit='nonlinear' (the "
                "fit needs the number of neurons), got 'auto'"
            )
        if EXPANSIONS in drive.capabilities and canonical["method"] != "tiny":
            raise ValueError(
                f"method: expected 'tiny' with net={self.net!r} (its new neurons are set by "
                f"neuron_fit), got {self.method!r}"
            )
        if canonical["fit_scope"] != "all" and not (
            EXPANSIONS in drive.capabilities and self.neuron_fit == "nonlinear"
        ):
            raise ValueError(
                f"fit_scope: expected 'all' unless net='dag' with neuron_fit='nonlinear' (only "
                f"those fits can be deferred), got {self.fit_scope!r} with net={self.net!r}, "
                f"neuron_fit={self.neuron_fit!r}"
            )
        if self.task is not None:
            choice("task", self.task, TASK_CHOICES)
        if self.task_kwargs is None:  # GrowthEnv's historical default
            object.__setattr__(self, "task_kwargs", {})
        if not isinstance(self.task_kwargs, dict):
            raise ValueError(f"task_kwargs: expected a dict, got {self.task_kwargs!r}")
        for name in ("activation", "optimizer"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a name (str), got {getattr(self, name)!r}")
        for name, value in canonical.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "task_kwargs", dict(self.task_kwargs))

    # ------------------------------------------------------------------ derived
    @property
    def candidate_neurons(self) -> int | None:
        """The neurons of a grown candidate as its solvers take them: ``neurons_per_growth``,
        or ``None`` for ``"auto"`` (the significant ones)."""
        return None if self.neurons_per_growth == "auto" else self.neurons_per_growth

    @property
    def family(self) -> NetFamily:
        """The net family (:func:`~growenv.nets.registry.get_family` of ``net``)."""
        return get_family(self.net)

    @property
    def family_options(self) -> dict[str, Any]:
        """The options ``net``'s family takes (conv: ``{"kernel": ...}``; mlp: ``{}``; dag:
        ``{"neuron_fit": ..., "start_graph": ...}``)."""
        return {name: getattr(self, name) for name in self.family.options}

    @property
    def expansions(self) -> bool:
        """Whether growth locations are DAG expansion slots (the ``"expansions"``
        capability, ``net="dag"``), not numbered sites."""
        return EXPANSIONS in self.family.capabilities

    @property
    def num_slots(self) -> int:
        """Growth actions of the env: ``max_sites`` sites, or the family's expansion slots of
        ``max_nodes`` hidden nodes (dag: ``2 (max_nodes + 1)^2 - max_nodes``)."""
        if self.expansions:
            return self.family.num_slots(self.max_nodes)
        return self.max_sites

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a ``torch.dtype``."""
        return DTYPES[self.dtype]

    @property
    def torch_device(self) -> torch.device:
        """``device`` as a ``torch.device``."""
        return torch.device(self.device)

    def lockstep_obstacle(self) -> str | None:
        """Why the lockstep env cannot batch envs of this config (one line naming the
        setting), or ``None`` when it can: a family with the ``"stackable"`` capability (or
        the DAG family, batched by :class:`~growenv.env.lockstep_dag.LockstepDagVecEnv`),
        Adam, TINY neurons and no augmentation."""
        if STACKABLE not in self.family.capabilities and not self.expansions:
            return (
                f"net: the lockstep env stacks families with the {STACKABLE!r} capability; "
                f"{self.net!r} has not"
            )
        if self.optimizer != "adam":
            return f"optimizer: the lockstep env implements 'adam' only, got {self.optimizer!r}"
        if self.augment:
            return "augment: not implemented in the lockstep env"
        if self.method != "tiny":
            return f"method: the lockstep env implements 'tiny' neurons only, got {self.method!r}"
        return None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """A config from GrowthEnv-style keywords; an unknown keyword raises ``TypeError``
        naming it (as a function call would)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(
                f"EnvConfig got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
            )
        return cls(**kwargs)

    def replace(self, **changes: Any) -> EnvConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self, **dumps_kwargs: Any) -> str:
        """The config as a JSON object (every field, canonical values)."""
        return json.dumps(self.to_dict(), **dumps_kwargs)

    @classmethod
    def from_json(cls, text: str) -> EnvConfig:
        """The config a :meth:`to_json` string (or any JSON object of fields) describes;
        missing fields take their defaults."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"text: expected a JSON object of EnvConfig fields, got {text!r}")
        return cls.from_kwargs(**data)
