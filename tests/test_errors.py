"""Issue #20: errors that named the wrong cause, and wrong results that passed silently.

Every check raises one line that names the argument and says what was expected
(``name: expected ..., got ...``, :mod:`growenv.validation`).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

import growenv
from growenv.data.cifar import load_cifar10
from growenv.data.tasks import Split, Task, make_task
from growenv.env.growth_env import GrowthEnv
from growenv.errors import UserError
from growenv.nets.mlp.net import GrowingMLP
from growenv.training import make_optimizer, train_steps
from growenv.validation import real

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"n_train": 64, "n_stats": 32, "n_val": 32, "n_test": 32}
FINITE = r"expected finite values \(no NaN or inf\)"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def data(n=64, d=4, o=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, o, generator=g)


def net_and_candidate():
    torch.manual_seed(0)
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    return net, growenv.bottleneck(net, x, y).sites[0].candidate(2), x, y


# --------------------------------------------------------------------------- misleading errors


def test_diverged_training_names_the_step_the_loss_and_lr():
    torch.manual_seed(0)
    net = GrowingMLP(4, [8], 2)
    x, y = data()
    opt = make_optimizer(net, "adam", lr=1e12)
    with pytest.raises(ValueError) as err:
        train_steps(net, opt, x, y, "mse", steps=10, batch_size=16)
    assert isinstance(err.value, UserError)  # the command line prints it as one line
    message = one_line(err)
    assert message.startswith("lr: expected a learning rate at which training converges")
    assert "diverged" in message and "optimizer step" in message and "lower lr" in message
    assert "1000000000000.0" in message and "data" not in message


def test_training_on_nan_data_blames_the_data_not_lr():
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"^x: {FINITE}, got nan at index \(5, 1\)"):
        train_steps(net, make_optimizer(net), x, y, "mse", steps=3, batch_size=64)


def test_finite_training_is_unchanged_by_the_check():
    torch.manual_seed(0)
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    gen = torch.Generator().manual_seed(1)
    loss = train_steps(net, make_optimizer(net), x, y, "mse", 4, 16, gen, check_finite=False)
    torch.manual_seed(0)
    again = GrowingMLP(4, [3], 2)
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(train_steps(again, make_optimizer(again), x, y, "mse", 4, 16, gen), loss)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))


def test_env_with_a_diverging_lr_says_training_diverged():
    env = GrowthEnv(lr=1e12, train_steps=5, max_steps=2, batch_size=16, task_kwargs=SMALL)
    with pytest.raises(ValueError) as err:
        env.reset(seed=0)
        env.step(int(env.action_masks().nonzero()[0][0]))
    message = one_line(err)
    assert message.startswith("lr:") and "diverged" in message
    assert "data contain" not in message


def test_bottleneck_of_a_diverged_net_names_the_net():
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    with torch.no_grad():
        net.weights[0][0, 0] = float("inf")
    with pytest.raises(ValueError) as err:
        growenv.bottleneck(net, x, y)
    assert isinstance(err.value, UserError)
    message = one_line(err)
    assert message.startswith("net: expected finite weights") and "diverged" in message
    assert "data contain" not in message


def test_bottleneck_of_a_net_that_overflows_names_the_net():
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    with torch.no_grad():
        net.weights[1].fill_(1e30)  # finite, but the squared error overflows float32
    with pytest.raises(ValueError) as err:
        growenv.bottleneck(net, x, y)
    message = one_line(err)
    assert message.startswith("net: expected finite outputs on finite data")
    assert "largest 1e+30" in message and "diverged" in message


def test_bottleneck_on_nan_data_points_at_the_entry():
    net = GrowingMLP(4, [3], 2)
    x, y = data()
    y[7, 1] = float("inf")
    with pytest.raises(ValueError, match=rf"^y: {FINITE}, got inf at index \(7, 1\)"):
        growenv.bottleneck(net, x, y)


def test_out_of_range_labels_name_the_range_and_the_classes():
    net = GrowingMLP(4, [3], 3)
    x, _ = data()
    labels = torch.arange(64) % 5  # 0..4 for 3 classes
    with pytest.raises(ValueError) as err:
        growenv.bottleneck(net, x, labels, loss="cross_entropy")
    assert one_line(err) == (
        "y: expected class labels in [0, 2] for 3 classes, got labels in [0, 4]"
    )
    batches = [(x[:32], labels[:32]), (x[32:], labels[32:])]  # streamed: torch's check
    with pytest.raises(ValueError, match=r"^y: expected class labels in \[0, 2\] for 3 classes"):
        growenv.bottleneck(net, batches, loss="cross_entropy")
    cand = growenv.bottleneck(net, x, labels % 3, loss="cross_entropy").sites[0].candidate(1)
    with pytest.raises(ValueError, match=r"labels in \[0, 4\]"):
        growenv.amplitude_search(net, cand, x, labels, loss="cross_entropy")


def test_a_task_with_out_of_range_labels_is_refused_where_it_is_built():
    x = torch.zeros(4, 2)
    good, bad = Split(x, torch.tensor([0, 1, 2, 1])), Split(x, torch.tensor([0, 1, 3, -1]))
    splits = {"train": good, "stats": good, "val": bad, "test": good}
    with pytest.raises(ValueError) as err:
        Task("mine", "cross_entropy", (2,), 3, **splits)
    assert one_line(err) == (
        "val.y: expected class labels in [0, 2] for 3 classes, got labels in [-1, 3]"
    )
    Task("mine", "cross_entropy", (2,), 3, **{**splits, "val": good})


def test_bottleneck_of_a_plain_torch_model_names_from_sequential():
    x, y = data()
    seq = nn.Sequential(nn.Linear(4, 3), nn.SELU(), nn.Linear(3, 2))
    with pytest.raises(TypeError) as err:
        growenv.bottleneck(seq, x, y)
    message = one_line(err)
    assert message.startswith("net: expected a growing net") and "got Sequential" in message
    assert "GrowingMLP.from_sequential" in message


def test_missing_cifar_directory_names_the_path_and_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "nowhere")
    message = one_line(err)
    assert message.startswith("data_dir: expected the CIFAR-10 python release")
    assert str(tmp_path / "nowhere") in message and "no such file or directory" in message
    for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert name in message


# --------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), -1.0, torch.tensor(float("nan"))])
def test_apply_growth_refuses_a_nan_infinite_or_negative_gamma(gamma):
    net, cand, x, _ = net_and_candidate()
    before = net(x)
    with pytest.raises(ValueError) as err:
        growenv.apply_growth(net, cand, gamma)
    assert one_line(err).startswith("gamma: expected a finite")
    assert ">= 0" in str(err.value)
    assert net.hidden_widths == [3] and torch.equal(net(x), before)  # left unchanged
    with pytest.raises(ValueError, match="^gamma: expected a finite"):
        growenv.extended_forward(net, cand, x, gamma)


def test_apply_growth_accepts_the_whole_gamma_grid():
    net, cand, x, y = net_and_candidate()
    gammas = growenv.amplitude.default_gammas()
    assert float(gammas.min()) == 0.0 and bool(torch.isfinite(gammas).all())
    preview = growenv.extended_forward(net, cand, x, gammas)
    growenv.apply_growth(net, cand, gammas[-1])
    torch.testing.assert_close(net(x), preview[-1])


def test_amplitude_search_refuses_nan_and_inf_data():
    net, cand, x, y = net_and_candidate()
    bad_x, bad_y = x.clone(), y.clone()
    bad_x[0, 0], bad_y[3, 1] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=rf"^x: {FINITE}, got nan at index \(0, 0\)"):
        growenv.amplitude_search(net, cand, bad_x, y)
    with pytest.raises(ValueError, match=rf"^y: {FINITE}, got inf at index \(3, 1\)"):
        growenv.amplitude_search(net, cand, x, bad_y)
    with pytest.raises(ValueError, match=r"^gammas: expected finite values >= 0 \(no NaN"):
        growenv.amplitude_search(net, cand, x, y, gammas=torch.tensor([0.1, float("nan")]))
    with torch.no_grad():
        net.weights[1].fill_(float("nan"))
    with pytest.raises(ValueError, match=r"^net: expected a net with a finite loss"):
        growenv.amplitude_search(net, cand, x, y)


def test_oracle_check_refuses_a_task_without_a_teacher():
    from growenv.data.tasks import require_teacher

    require_teacher("teacher_student")
    require_teacher("teacher_student_distribution")
    require_teacher(make_task("teacher_student", hidden=(3,), **SMALL))
    for task in ("digits", make_task("multi_sin", **SMALL)):
        with pytest.raises(ValueError) as err:
            require_teacher(task)
        message = one_line(err)
        assert message.startswith("oracle: expected a teacher-student task")
        assert "teacher_student_distribution" in message
    with pytest.raises(ValueError, match="^oracle: .*got 'digits'"):
        require_teacher("digits")


# --------------------------------------------------------------------------- trained agents


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    """A run directory as training leaves it (an untrained agent is enough)."""
    pytest.importorskip("sb3_contrib")
    import numpy as np
    from sb3_contrib import MaskablePPO

    from growenv.policies.ppo import MODEL_FILE, NORM_FILE

    run = tmp_path_factory.mktemp("agent")
    env = GrowthEnv(train_steps=2, max_steps=2, task_kwargs=SMALL)
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
    model.save(run / MODEL_FILE)
    dim = env.observation_space.shape[0]
    np.savez(run / NORM_FILE, mean=np.zeros(dim), var=np.ones(dim), clip=np.array(10.0))
    (run / "config.json").write_text(json.dumps({"normalize_obs": True}))
    return run


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9, 0.99])
def test_a_truncated_model_is_named_truncated(agent_dir, tmp_path, keep):
    from growenv.policies.ppo import MODEL_FILE, load

    shutil.copytree(agent_dir, tmp_path / "run")
    model = tmp_path / "run" / MODEL_FILE
    raw = model.read_bytes()
    model.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError) as err:
        load(tmp_path / "run")
    message = one_line(err)
    assert message.startswith("path: expected a complete model zip")
    assert "truncated or corrupt" in message and str(model) in message


def test_resume_from_a_truncated_model_is_not_a_space_mismatch(agent_dir, tmp_path):
    from growenv.harness.ppo_training import PPOConfig, train
    from growenv.policies.ppo import MODEL_FILE

    model = tmp_path / MODEL_FILE
    model.write_bytes((agent_dir / MODEL_FILE).read_bytes()[:1000])
    config = PPOConfig(env_kwargs={"train_steps": 2, "max_steps": 2, "task_kwargs": SMALL})
    with pytest.raises(ValueError) as err:
        train(config, tmp_path / "out", resume=model, progress_bar=False)
    message = one_line(err)
    assert message.startswith("resume:") and str(model) in message
    assert "truncated or corrupt" in message and "does not fit" not in message


def test_an_agent_trained_with_normalisation_needs_its_statistics(agent_dir, tmp_path):
    from growenv.policies.ppo import NORM_FILE, load

    policy = load(agent_dir)
    assert policy.obs_mean is not None
    shutil.copytree(agent_dir, tmp_path / "run")
    (tmp_path / "run" / NORM_FILE).unlink()
    with pytest.raises(FileNotFoundError) as err:
        load(tmp_path / "run")
    message = one_line(err)
    assert message.startswith("path: expected the observation statistics obs_norm.npz")
    assert "normalize_obs=true" in message
    (tmp_path / "run" / "config.json").write_text(json.dumps({"normalize_obs": False}))
    assert load(tmp_path / "run").obs_mean is None  # trained without: nothing to apply


def test_an_observation_of_another_shape_names_max_sites(agent_dir):
    import numpy as np

    from growenv.policies.ppo import load

    policy = load(agent_dir)
    shape = policy.model.observation_space.shape
    with pytest.raises(UserError) as err:
        policy.act(np.zeros(shape[0] + 8, dtype=np.float32), {}, None)
    message = one_line(err)
    assert message.startswith(f"observation: expected shape {shape}") and "max_sites" in message


# --------------------------------------------------------------------------- the validators


def test_tensor_validators_say_where_and_what():
    from growenv.validation import class_labels, finite_values

    x = torch.zeros(3, 4)
    assert finite_values("x", x) is x
    x[2, 1] = float("-inf")
    with pytest.raises(UserError) as err:  # every validator's error is the user's
        finite_values("x", x)
    assert one_line(err) == (
        "x: expected finite values (no NaN or inf), got -inf at index (2, 1) (1 bad entry of 12)"
    )
    with pytest.raises(
        ValueError, match=r"^gamma: expected finite values >= 0 \(no NaN or inf\), got -0.5$"
    ):
        finite_values("gamma", torch.tensor(-0.5), minimum=0)
    with pytest.raises(ValueError, match=r"^y: expected class labels in \[0, 9\] for 10 classes"):
        class_labels("y", torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match=r"^gamma: expected a finite number >= 0, got inf$"):
        real("gamma", float("inf"), 0, finite=True)
    assert real("gamma", float("inf"), 0) == float("inf")  # without finite=True, as before
