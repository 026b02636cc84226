"""``growenv grow``: grow one network with a policy and print every step (parsing and
printing only)."""

from __future__ import annotations

import argparse
import time

from growenv.cli.options import (
    add_env_options,
    add_run_options,
    check_policy,
    env_settings,
    nonnegative_int,
    use_threads,
    user_input,
)
from growenv.env.config import TASK_CHOICES
from growenv.env.growth_env import GrowthEnv
from growenv.policies import policy_specs
from growenv.training import evaluate

__all__ = ["add_grow_parser", "grow_main"]


def add_grow_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``growenv grow`` on ``sub`` (from ``add_subparsers``)."""
    grow = sub.add_parser(
        "grow",
        help="grow one network on an embedded task and print every step (the main job)",
        description="Grow a network from width 1 with a policy (default: greedy, TINY's "
        "MaxEigenValue rule), training between growth steps; print architecture and losses "
        "after every step (one line each: no progress bar).",
    )
    grow.add_argument(
        "--task",
        default=None,
        help="task: " + ", ".join(TASK_CHOICES) + " (default: teacher_student)",
    )
    # bench's plural spelling, hidden (registered first: the visible one's help is the dest's)
    grow.add_argument("--policies", dest="policy", default="greedy", help=argparse.SUPPRESS)
    grow.add_argument(
        "--policy",
        default="greedy",
        help="growth policy: " + ", ".join(policy_specs()[:-1]) + " or " + policy_specs()[-1],
    )
    grow.add_argument("--seed", type=nonnegative_int, default=0, help="episode seed")
    add_env_options(grow, {})
    add_run_options(grow, progress=False)
    grow.set_defaults(func=grow_main)


def architecture(net: object) -> str:
    """One-line architecture: layer sizes of a chain (``20-4-4-1``), or a DAG's hidden nodes
    with their widths and its edge count (``h1:10 h2:4, 5 edges``)."""
    sizes = getattr(net, "layer_sizes", None)
    if sizes is not None:
        return "-".join(str(s) for s in sizes)
    hidden = " ".join(f"{v}:{net.nodes[v]}" for v in net.hidden_nodes) or "no hidden node"
    return f"{hidden}, {len(net.edges)} edges"


def grow_main(args: argparse.Namespace) -> int:
    """Grow one network with a policy (greedy by default) and print every step.

    Raises
    ------
    UserError
        For bad input, before any work starts.
    """
    env_kwargs = env_settings(args)
    policy = check_policy(args.policy, env_kwargs)
    use_threads(env_kwargs)
    argument = "--env-kwargs" if "task_kwargs" in env_kwargs else "--task"
    with user_input(argument):  # builds the task: a missing data directory is reported here
        env = GrowthEnv(**env_kwargs)
    obs, info = env.reset(seed=args.seed)
    policy.reset(args.seed)
    task = env.task
    print(
        f"task {task.name}: {task.in_features} inputs, {task.out_features} outputs, "
        f"loss {task.loss}; policy {args.policy}; seed {args.seed}"
    )
    dag = not hasattr(env.net, "layer_sizes")
    aw, rw = (26, 30) if dag else (12, 24)  # DAG actions and architectures are longer
    print(
        f"{'step':>4}  {'action':<{aw}} {'architecture':<{rw}} {'params':>7}  {'train':>9}  "
        f"{'val':>9}  {'gamma':>8}  {'sec':>6}"
    )
    start = time.perf_counter()

    def line(step: int, action: str, info: dict) -> None:
        arch = architecture(env.net)
        acc = f"  acc {info['val_accuracy']:.3f}" if info["val_accuracy"] is not None else ""
        print(
            f"{step:>4}  {action:<{aw}} {arch:<{rw}} {info['params']:>7}  {info['train_loss']:9.4f}"
            f"  {info['val_loss']:9.4f}  {info['gamma']:8.2e}  "
            f"{time.perf_counter() - start:6.1f}{acc}"
        )

    line(0, "reset", info)
    done = False
    while not done:
        action = policy.act(obs, info, env)
        obs, reward, terminated, truncated, info = env.step(action)
        line(info["step"], env.describe_action(action), info)
        done = terminated or truncated
    test_loss, test_acc = evaluate(env.net, task.test.x, task.test.y, task.loss)
    acc = f", test accuracy {float(test_acc):.3f}" if test_acc is not None else ""
    if dag:  # the graph, one line per node
        print(env.net.describe())
    print(
        f"final: {architecture(env.net)}, {env.net.num_parameters()} parameters, "
        f"test loss {float(test_loss):.4f}{acc}, compute {info['compute']:.3g} MACs"
    )
    return 0
