"""The ``growenv`` command line: ``grow`` (the main job), ``bench``, ``train``.

Parsing and printing only: the work is done by :mod:`growenv.env`, :mod:`growenv.policies` and
:mod:`growenv.harness`; no library module imports this package.
"""

from __future__ import annotations

import argparse
import sys

from growenv.cli.bench import add_bench_parser
from growenv.cli.grow import add_grow_parser
from growenv.cli.train import add_train_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``growenv`` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="growenv",
        description="Neural-network growth (TINY) as a reinforcement-learning problem.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_grow_parser(sub)
    add_bench_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``growenv`` with ``argv`` (default: the process's); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    for name in ("steps", "neurons", "timesteps", "n_envs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an int >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
