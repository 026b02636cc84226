"""Static baselines (growenv.harness.baselines) and the CIFAR experiment script end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from growenv.env.growth_env import GrowthEnv
from growenv.harness.baselines import (
    fixed_widths_row,
    forward_macs,
    small_cnn,
    small_cnn_row,
    small_cnn_width,
)
from growenv.harness.episodes import ROW_FIELDS
from tests.experiment_scripts import load_experiment
from tests.test_env import write_tiny_cifar

ROOT = Path(__file__).resolve().parents[1]
TS = {
    "task": "teacher_student",
    "task_kwargs": {"n_train": 256, "n_stats": 64, "n_val": 64, "n_test": 64},
    "train_steps": 10,
    "max_steps": 3,
    "batch_size": 32,
}


def conv_kwargs(tmp_path: Path) -> dict:
    return {
        "task": "cifar10",
        "task_kwargs": {"data_dir": write_tiny_cifar(tmp_path)},
        "net": "conv",
        "hidden_layers": 3,
        "start_width": 2,
        "train_steps": 2,
        "max_steps": 2,
        "batch_size": 8,
        "augment": True,
    }


def small_cnn_macs(width: int, in_channels: int = 3, classes: int = 10) -> int:
    """Closed form for 32x32 inputs: 3x3 convs at 32x32, 16x16 and 8x8 positions."""
    return 9 * (32 * 32 * in_channels * width + 16 * 16 * width**2 + 8 * 8 * width**2) + (
        width * classes
    )


@pytest.mark.parametrize("width", [1, 5])
def test_forward_macs_of_a_plain_cnn_match_the_closed_form(width):
    seq = small_cnn(3, width, 10)
    assert forward_macs(seq, (3, 32, 32)) == small_cnn_macs(width)


def test_forward_macs_uses_growing_nets_own_count(tmp_path):
    env = GrowthEnv(**conv_kwargs(tmp_path))
    env.reset(seed=0)
    net = env.build_net([3, 4, 5])
    assert forward_macs(net, (3, 32, 32)) == net.flops()


def test_small_cnn_width_is_the_closest_parameter_count():
    for target in (50, 700, 2714, 6000):
        width = small_cnn_width(target, 3, 10)
        counts = {w: sum(p.numel() for p in small_cnn(3, w, 10).parameters()) for w in range(1, 40)}
        best = min(counts, key=lambda w: (abs(counts[w] - target), w))
        assert abs(counts[width] - target) == abs(counts[best] - target)
    with pytest.raises(ValueError, match="target_params"):
        small_cnn_width(0, 3, 10)
    with pytest.raises(ValueError, match="width"):
        small_cnn(3, 0, 10)


def test_fixed_widths_row_trains_the_envs_network_of_that_size():
    row = fixed_widths_row(TS, seed=0, widths="8-6", policy="static")
    assert set(row) == set(ROW_FIELDS)
    env = GrowthEnv(**TS)
    env.reset(seed=0)
    # 20 inputs
    assert row["params"] == env.build_net([8, 6]).num_parameters() == 21 * 8 + 9 * 6 + 7
    assert row["widths"] == "8-6" and row["policy"] == "static" and row["step"] == 3
    again = fixed_widths_row(TS, seed=0, widths=[8, 6], policy="static")
    assert again["test_loss"] == row["test_loss"]
    untrained = fixed_widths_row(TS, seed=0, widths=[8, 6], total_steps=0)
    assert row["val_loss"] < untrained["val_loss"]
    # compute: 3 x forward MACs x samples of 40 steps, plus one validation pass
    fwd = 20 * 8 + 8 * 6 + 6 * 1
    assert row["flops"] == fwd
    assert row["compute"] == 3 * fwd * 40 * 32 + fwd * 64
    for bad, match in (("8", "expected 2 widths"), ("8-x", "widths"), ([8, -1], "non-negative")):
        with pytest.raises(ValueError, match=match):
            fixed_widths_row(TS, seed=0, widths=bad)


def test_conv_baselines_on_a_tiny_cifar_archive(tmp_path):
    kwargs = conv_kwargs(tmp_path)
    row = fixed_widths_row(kwargs, seed=1, widths=[2, 3, 4], policy="greedy-arch")
    env = GrowthEnv(**kwargs)
    env.reset(seed=1)
    net = env.build_net([2, 3, 4])
    assert row["params"] == net.num_parameters() and row["flops"] == net.flops()
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert fixed_widths_row(kwargs, 1, [2, 3, 4])["test_loss"] == row["test_loss"]

    cnn = small_cnn_row(kwargs, seed=1, width=3)
    assert cnn["params"] == sum(p.numel() for p in small_cnn(3, 3, 10).parameters())
    assert cnn["flops"] == small_cnn_macs(3) and cnn["widths"] == "3-3-3"
    assert small_cnn_row(kwargs, seed=1, width=3)["test_loss"] == cnn["test_loss"]
    assert small_cnn_row(kwargs, seed=2, width=3)["test_loss"] != cnn["test_loss"]
    assert math.isfinite(cnn["compute"]) and cnn["compute"] > 0
    with pytest.raises(ValueError, match="image inputs"):
        small_cnn_row(TS, seed=0, width=3)


def test_oracle_and_build_net_need_a_reset_first():
    env = GrowthEnv(**TS)
    with pytest.raises(RuntimeError, match="reset"):
        env.build_net([2, 2])


def test_cifar_experiment_end_to_end_on_a_tiny_archive(tmp_path, capsys):
    torch.set_num_threads(1)
    cifar = load_experiment("cifar")
    out = tmp_path / "out"
    argv = ["--profile", "smoke", "--seeds", "1", "--workers", "1"]
    argv += ["--data-dir", write_tiny_cifar(tmp_path), "--out", str(out)]
    assert cifar.main(argv) == 0
    for name in ("results.csv", "summary.json", "table.md", "cifar.png"):
        assert (out / name).exists(), name
    table = (out / "table.md").read_text()
    learned = ["ppo-digits", "ppo-cifar", "ppo-digits+cifar"]
    expected = [*cifar.HEURISTICS, *learned, "greedy-arch", "small-cnn"]
    for policy in expected:
        assert f"| {policy} | 1 |" in table, policy
    assert "CIFAR-10 subset (150 train / 20 test images)" in table
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["summary"]["cifar10"]) == set(expected)
    assert saved["config"]["agents"]["ppo-cifar"]["vec"] == "subproc"
    # results are never overwritten without --force; trained agents are reused
    with pytest.raises(SystemExit):
        cifar.main(argv)
    capsys.readouterr()
    assert cifar.main([*argv, "--force"]) == 0
    assert capsys.readouterr().out.count("reusing the agent") == 3
    assert "(fine-tuning ppo-digits)" in (out / "table.md").read_text()


def test_cifar_experiment_names_missing_data_before_running(tmp_path, capsys):
    cifar = load_experiment("cifar")
    with pytest.raises(SystemExit):
        cifar.main(["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
