"""The ``growenv`` command line: ``grow`` (the main job), ``bench``, ``train``, ``sweep``.

Parsing and printing only: the work is done by :mod:`growenv.env`, :mod:`growenv.policies` and
:mod:`growenv.harness`; no library module imports this package. The commands share one
vocabulary (:mod:`growenv.cli.options`). Errors:

* bad input is one line, ``growenv CMD: error: --option: expected ..., got ...``, exit
  status 2 (argparse's errors and every :class:`growenv.errors.UserError`, which the commands
  raise after checking their input before any work starts);
* Ctrl-C is one line, exit status 130;
* anything else is a bug: its traceback, a hint, exit status 1.

``--debug`` shows the traceback of every error instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from growenv.cli.bench import add_bench_parser
from growenv.cli.grow import add_grow_parser
from growenv.cli.options import Parser
from growenv.cli.sweep import add_sweep_parser
from growenv.cli.train import add_train_parser
from growenv.errors import UserError
from growenv.harness.lifecycle import EXIT_USAGE, report_ending

__all__ = ["build_parser", "main"]

EXIT_BUG = 1


def build_parser() -> argparse.ArgumentParser:
    """The ``growenv`` parser with its subcommands."""
    parser = Parser(
        prog="growenv",
        description="Neural-network growth (TINY) as a reinforcement-learning problem.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        dest="debug_all",
        help="show the traceback of every error (also as the command's --debug)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_grow_parser(sub)
    add_bench_parser(sub)
    add_train_parser(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``growenv`` with ``argv`` (default: the process's); returns the exit status."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's parser: "growenv bench: error: ..."
            commands = next(a for a in parser._actions if a.dest == "command").choices
            commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # --help (0) or a one-line usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"growenv {args.command}"
    debug = args.debug or args.debug_all
    try:
        return args.func(args)
    except (UserError, KeyboardInterrupt) as err:  # RunInterrupted says what it kept
        if debug:
            raise
        return report_ending(err, prog)
    except Exception:
        if debug:
            raise
        traceback.print_exc()
        print(
            f"{prog}: unexpected error (a bug? please report it with the traceback above); "
            "re-run with --debug to raise it, e.g. under python -m pdb",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
