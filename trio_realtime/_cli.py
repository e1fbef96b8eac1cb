"""The ``trio-realtime`` command line (also ``python -m trio_realtime``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _journal_inspect(args: argparse.Namespace) -> int:
    from ._errors import JournalError
    from ._journal import recover

    try:
        state = recover(args.directory, repair=False)
    except (JournalError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"directory:  {args.directory}")
    print(f"segments:   {len(state.segments)}")
    print(f"last_seq:   {state.last_seq}")
    print(f"ack_seq:    {state.ack_seq}")
    print(f"pending:    {len(state.pending)}")
    if state.truncated_bytes:
        print(
            f"torn tail:  {state.truncated_bytes} bytes (cut off when the journal is next opened)"
        )
    for channel, (offset, epoch) in sorted(state.cursors.items()):
        print(f"cursor:     {channel} offset={offset} epoch={epoch}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-realtime",
        description="Durable realtime messaging for trio: tools for the client journal.",
    )
    parser.add_argument("--version", action="version", version=f"trio-realtime {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    journal = commands.add_parser("journal", help="inspect a client journal directory")
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    inspect = journal_commands.add_parser(
        "inspect", help="print a journal's state without changing it (safe while it is in use)"
    )
    inspect.add_argument("directory", help="the journal directory")
    inspect.set_defaults(handler=_journal_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status
