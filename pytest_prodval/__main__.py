"""The `prodval` command (also `python -m pytest_prodval`): subcommands over a results folder."""

from __future__ import annotations

import argparse
import sys

from . import analyze, compare


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(prog="prodval", description="pytest-prodval tools over k6 results")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub = commands.add_parser("analyze", help="Go/no-go over the latest SLO report of each scenario",
                              description="Go/no-go over the latest SLO report of each scenario in a results folder. "
                                          "Exit code 0 on GO, 1 on NO-GO, 2 on ERROR or when nothing usable is found.")
    analyze.add_arguments(sub)
    sub.set_defaults(handler=analyze.run)
    sub = commands.add_parser("compare", help="Two runs side by side per criterion; exit 1 on a regression",
                              description="Compare two runs (SLO reports or run folders), or a run with the median "
                                          "of the last N GO runs before it (--baseline). Writes <B>_compare.json and "
                                          ".md beside B. Exit code 0: no regression, 1: regression, 2: bad input.")
    compare.add_arguments(sub)
    sub.set_defaults(handler=compare.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: dispatch to the subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
