"""The ``growenv`` command line."""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _grow(args: argparse.Namespace) -> int:
    """Grow one network with the greedy first-order rule and print each step."""
    from growenv.amplitude import amplitude_search
    from growenv.growth import apply_growth
    from growenv.nets import GrowingMLP
    from growenv.report import bottleneck
    from growenv.tasks import make_task
    from growenv.training import evaluate, make_optimizer, train_steps

    torch.manual_seed(args.seed)
    task = make_task(args.task, seed=args.seed, device=args.device).flattened()
    gen = torch.Generator().manual_seed(args.seed)
    net = GrowingMLP(
        task.in_features,
        [args.start_width] * args.hidden_layers,
        task.out_features,
        activation=args.activation,
        device=args.device,
        generator=gen,
    )
    opt = make_optimizer(net, "adam", lr=args.lr)
    print(
        f"task {task.name}: {task.in_features} inputs, {task.out_features} outputs, "
        f"loss {task.loss}"
    )
    header = (
        f"{'step':>4}  {'architecture':<28} {'params':>7}  {'train':>9}  {'val':>9}  "
        f"{'site':>4}  {'gain':>9}  {'gamma':>8}  {'sec':>5}"
    )
    print(header)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        train_loss = train_steps(
            net, opt, task.train.x, task.train.y, task.loss, args.train_steps, args.batch_size, gen
        )
        val_loss, val_acc = evaluate(net, task.val.x, task.val.y, task.loss)
        site_txt = gain_txt = gamma_txt = ""
        if step < args.steps:
            report = bottleneck(net, task.stats.x, task.stats.y, loss=task.loss)
            gains = torch.stack([s.first_order_gain for s in report.sites])
            best = int(torch.argmax(gains))
            cand = report.sites[best].candidate(args.neurons)
            amp = amplitude_search(net, cand, task.stats.x, task.stats.y, loss=task.loss)
            apply_growth(net, cand, amp.gamma, optimizer=opt)
            site_txt, gain_txt, gamma_txt = (
                str(best),
                f"{float(gains[best]):.3e}",
                f"{float(amp.gamma):.2e}",
            )
        arch = "-".join(str(s) for s in net.layer_sizes)
        acc = f" acc {float(val_acc):.3f}" if val_acc is not None else ""
        print(
            f"{step:>4}  {arch:<28} {net.num_parameters():>7}  {float(train_loss):9.4f}  "
            f"{float(val_loss):9.4f}  {site_txt:>4}  {gain_txt:>9}  {gamma_txt:>8}  "
            f"{time.perf_counter() - start:5.1f}{acc}"
        )
    test_loss, test_acc = evaluate(net, task.test.x, task.test.y, task.loss)
    acc = f", test accuracy {float(test_acc):.3f}" if test_acc is not None else ""
    print(
        f"final: {net.layer_sizes}, {net.num_parameters()} parameters, "
        f"test loss {float(test_loss):.4f}{acc}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="growenv",
        description="Neural-network growth (TINY) as a reinforcement-learning problem.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    grow = sub.add_parser(
        "grow",
        help="grow one network with the greedy rule on an embedded task (the main job)",
        description="Grow a network from width 1 with the greedy first-order rule (TINY "
        "MaxEigenValue), training between growth steps, and print architecture and losses.",
    )
    grow.add_argument(
        "--task", default="teacher_student", help="teacher_student | multi_sin | digits | cifar10"
    )
    grow.add_argument("--steps", type=int, default=12, help="growth steps")
    grow.add_argument("--neurons", type=int, default=4, help="neurons added per growth step")
    grow.add_argument(
        "--train-steps", type=int, default=100, help="optimizer steps between growths"
    )
    grow.add_argument("--batch-size", type=int, default=128)
    grow.add_argument("--lr", type=float, default=3e-3)
    grow.add_argument("--hidden-layers", type=int, default=2)
    grow.add_argument("--start-width", type=int, default=1)
    grow.add_argument("--activation", default="selu")
    grow.add_argument("--seed", type=int, default=0)
    grow.add_argument("--device", default="cpu")
    grow.set_defaults(func=_grow)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    for name in ("steps", "neurons", "train_steps", "batch_size", "hidden_layers"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an int >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
