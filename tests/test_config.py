"""The project's validators (growenv.validation) and the env config (EnvConfig)."""

import dataclasses

import numpy as np
import pytest
import torch

from growenv.env.config import EnvConfig
from growenv.validation import boolean, choice, integer, real


def test_validators_accept_and_canonicalise():
    assert integer("n", np.int64(3), 1) == 3 and type(integer("n", np.int64(3), 1)) is int
    assert integer("n", None, 1, allow_none=True) is None
    assert real("lr", 1, 0.0) == 1.0 and type(real("lr", 1, 0.0)) is float
    assert real("f", 0.5, 0.0, 1.0, exclusive=True) == 0.5
    assert real("x", None, allow_none=True) is None
    assert choice("kind", "b", ("a", "b")) == "b"
    assert boolean("flag", np.bool_(True)) is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: integer("n", 0, 1), "n: expected an int >= 1, got 0"),
        (lambda: integer("n", True, 0), "n: expected an int >= 0, got True"),
        (lambda: integer("n", 2.0, 0), "n: expected an int >= 0, got 2.0"),
        (lambda: integer("site", 5, 0, 3), "site: expected an int in [0, 3], got 5"),
        (lambda: integer("m", "x", 1, allow_none=True), "m: expected an int >= 1 or None, got 'x'"),
        (lambda: real("lr", -1.0, 0.0), "lr: expected a number >= 0.0, got -1.0"),
        (lambda: real("lr", float("nan"), 0.0), "lr: expected a number >= 0.0, got nan"),
        (lambda: real("lr", "1e-3"), "lr: expected a number, got '1e-3'"),
        (
            lambda: real("f", 1.0, 0.0, 1.0, exclusive=True),
            "f: expected a number in (0.0, 1.0), got 1.0",
        ),
        (lambda: choice("kind", "c", ("a", "b")), "kind: expected one of 'a', 'b', got 'c'"),
        (lambda: choice("kind", ["a"], ("a", "b")), "kind: expected one of 'a', 'b', got ['a']"),
        (lambda: boolean("flag", 1), "flag: expected True or False, got 1"),
    ],
)
def test_validators_reject_with_one_line(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


# --------------------------------------------------------------------------- EnvConfig


def test_config_round_trips_through_json_with_canonical_values():
    cfg = EnvConfig(
        task="digits",
        task_kwargs={"test_fraction": 0.2},
        dtype=torch.float64,
        max_params=np.int64(500),
        max_compute=10**9,
        lr=1,
        neurons_per_growth="auto",
        net="conv",
        kernel="restricted",
    )
    assert cfg.dtype == "float64" and cfg.torch_dtype is torch.float64
    assert type(cfg.max_params) is int and type(cfg.max_compute) is float and cfg.lr == 1.0
    again = EnvConfig.from_json(cfg.to_json())
    assert again == cfg and again.to_json() == cfg.to_json()
    assert EnvConfig.from_json("{}") == EnvConfig()
    assert cfg.replace(lr=0.5).lr == 0.5 and cfg.lr == 1.0
    assert cfg.family_options == {"kernel": "restricted"}
    assert EnvConfig().family_options == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_layers": 0}, "hidden_layers: expected an int >= 1, got 0"),
        ({"max_sites": 1}, "max_sites: expected an int >= hidden_layers (2), got 1"),
        ({"start_width": -1}, "start_width: expected an int >= 0, got -1"),
        ({"neurons_per_growth": 0}, "neurons_per_growth: expected an int >= 1, got 0"),
        ({"neurons_per_growth": "many"}, "neurons_per_growth: expected an int >= 1, got 'many'"),
        ({"train_steps": -1}, "train_steps: expected an int >= 0, got -1"),
        ({"batch_size": 0}, "batch_size: expected an int >= 1, got 0"),
        ({"max_steps": 2.5}, "max_steps: expected an int >= 1, got 2.5"),
        ({"max_params": 0}, "max_params: expected an int >= 1 or None, got 0"),
        ({"max_compute": 0.5}, "max_compute: expected a number >= 1.0 or None, got 0.5"),
        ({"cost_per_param": -1}, "cost_per_param: expected a number >= 0.0, got -1"),
        ({"cost_per_flop": "x"}, "cost_per_flop: expected a number >= 0.0, got 'x'"),
        ({"lr": 0.0}, "lr: expected a number >= 1e-12, got 0.0"),
        ({"reward": "loss"}, "reward: expected one of 'log_ratio', 'relative', got 'loss'"),
        (
            {"method": "firefly"},
            "method: expected one of 'tiny', 'gradmax', 'random', got 'firefly'",
        ),
        (
            {"invalid_action": "ignore"},
            "invalid_action: expected one of 'raise', 'skip', got 'ignore'",
        ),
        ({"net": "resnet"}, "net: expected 'mlp', 'conv' or 'dag', got 'resnet'"),
        ({"kernel": "half"}, "kernel: expected 'full' or 'restricted', got 'half'"),
        ({"augment": 1}, "augment: expected True or False, got 1"),
        ({"threads": 0}, "threads: expected an int >= 1 or None, got 0"),
        ({"threads": 1.5}, "threads: expected an int >= 1 or None, got 1.5"),
        (
            {"dtype": "float16"},
            "dtype: expected one of 'float32', 'float64' (or the torch dtypes), got 'float16'",
        ),
        ({"device": "gpu"}, "device: expected a torch device such as 'cpu' or 'cuda', got 'gpu'"),
        ({"task": "imagenet"}, "task: expected one of"),
        ({"task_kwargs": [1]}, "task_kwargs: expected a dict, got [1]"),
        ({"activation": 3}, "activation: expected a name (str), got 3"),
    ],
)
def test_config_rejects_each_bad_argument_with_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        EnvConfig(**kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_config_rejects_unknown_fields_as_a_call_would():
    with pytest.raises(TypeError, match="'n_train'"):
        EnvConfig.from_json('{"n_train": 5}')


def test_threads_field_round_trips():
    for threads in (None, 1, 3):
        config = EnvConfig(threads=threads)
        assert EnvConfig.from_json(config.to_json()) == config and config.threads == threads
    assert EnvConfig.from_json("{}").threads == 1  # configs written before the field
