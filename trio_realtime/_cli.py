"""The ``trio-realtime`` command line (also ``python -m trio_realtime``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from ._errors import ConfigError
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
    print(f"pending:    {len(state.backlog())}")
    if state.truncated_bytes:
        print(
            f"torn tail:  {state.truncated_bytes} bytes (cut off when the journal is next opened)"
        )
    for channel, (offset, epoch) in sorted(state.cursors.items()):
        print(f"cursor:     {channel} offset={offset} epoch={epoch}")
    return 0


def _queue_inspect(args: argparse.Namespace) -> int:
    import time

    from .queue import queue_directory
    from .queue._consumer import inspect_queue

    try:
        directory = queue_directory(args.name, args.directory)
    except ValueError as exc:
        raise ConfigError("name", str(exc)) from None
    if not os.path.isdir(directory):
        print(f"error: no queue {args.name!r} at {directory}", file=sys.stderr)
        return 1
    pending, alive = inspect_queue(directory)
    print(f"queue:      {args.name} ({directory})")
    print(f"pending:    {len(pending)}")
    for producer, running in alive.items():
        count = sum(1 for p in pending if p.producer_id == producer)
        state = "running" if running else "gone"
        print(f"producer:   {producer} ({state}) pending={count}")
    for item in pending[: args.limit]:
        age = time.time() - item.enqueued_at
        print(f"  {item.producer_id} #{item.seq} {age:.1f}s ago {item.size} B: {item.preview}")
    if len(pending) > args.limit:
        print(f"  ... and {len(pending) - args.limit} more")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import functools

    import trio

    from .server import ServerConfig, serve, store_from_url

    config = ServerConfig(
        allowed_origins=frozenset(args.allow_origin) if args.allow_origin else None,
        heartbeat_timeout=args.heartbeat_timeout,
        presence_timeout=args.presence_timeout,
        rate_limit=args.rate_limit,
        send_queue_bytes=args.send_queue_bytes,
        max_lag=args.max_lag,
    )
    store = store_from_url(args.store) if args.store else None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve, args.data, store=store, host=args.host, port=args.port, config=config
                )
            )
            where = args.store or args.data
            line = (
                f"trio-realtime server on ws://{args.host}:{server.port}/realtime (data: {where})"
            )
            # One write (print() writes the end of line separately when stdout is unbuffered), and
            # a reader that closed our stdout after reading it must not end the server.
            with contextlib.suppress(OSError):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    return 0


_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_TTL = 3650 * 86400


def _duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` as seconds (for ``--ttl``)."""
    import re

    match = re.fullmatch(r"([0-9]{1,9})([smhd]?)", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use seconds or a number with s, m, h or d (90, 15m, 1h, 7d)"
        )
    seconds = int(match[1]) * _TTL_UNITS[match[2]]
    if not 0 < seconds <= _MAX_TTL:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 and at most 3650d")
    return seconds


def _token(args: argparse.Namespace) -> int:
    from .server import load_or_create_secret, make_token

    subscribe: tuple[str, ...] | None = None
    publish: tuple[str, ...] | None = None
    if args.channels or args.subscribe or args.publish:
        # Once any channel is named, an action not named is allowed nowhere.
        subscribe = tuple(dict.fromkeys([*args.channels, *args.subscribe]))
        publish = tuple(dict.fromkeys([*args.channels, *args.publish]))
    try:
        secret = load_or_create_secret(args.data)
    except (OSError, ValueError) as exc:
        raise ConfigError("data", str(exc)) from None
    try:
        token = make_token(secret, args.user, ttl=args.ttl, subscribe=subscribe, publish=publish)
    except ValueError as exc:
        raise ConfigError("token", str(exc)) from None
    print(token)
    return 0


def _chat(args: argparse.Namespace) -> int:
    import trio

    from ._chat import chat

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(
            lambda: chat(
                name=args.name, url=args.url, room=args.room, data_dir=args.data, token=args.token
            )
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    import trio

    from ._chat import demo

    return 0 if trio.run(lambda: demo(total=args.messages)) else 1


def _demo_sender(args: argparse.Namespace) -> int:
    import trio

    from ._chat import demo_sender

    trio.run(demo_sender, args.url, args.journal, args.token, args.total, args.report_fd)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._paths import data_dir

    parser = argparse.ArgumentParser(
        prog="trio-realtime",
        description="Durable realtime messaging for trio: server, chat, demo and journal tools.",
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

    queue = commands.add_parser("queue", help="durable local queues (trio_realtime.queue)")
    queue_commands = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND")
    queue_inspect = queue_commands.add_parser(
        "inspect", help="list a queue's pending items without changing it (safe while in use)"
    )
    queue_inspect.add_argument("name", help="the queue's name")
    queue_inspect.add_argument("--directory", default=None, help="default: found by name")
    queue_inspect.add_argument("--limit", type=int, default=20, help="items to list")
    queue_inspect.set_defaults(handler=_queue_inspect)

    data = data_dir()
    serve = commands.add_parser("serve", help="run the reference server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument(
        "--data", default=os.path.join(data, "server"), help="SQLite store and token secret"
    )
    serve.add_argument(
        "--store",
        default=None,
        help="where events are kept: sqlite:///path/to/db or memory: (default: SQLite in --data)",
    )
    serve.add_argument(
        "--allow-origin", action="append", help="allowed Origin (repeatable; default: any)"
    )
    serve.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        help="seconds of client silence before closing (4008)",
    )
    serve.add_argument(
        "--presence-timeout",
        type=float,
        default=10.0,
        help="seconds a user stays present after their last connection went away",
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=2000.0,
        help="WebSocket messages per second per connection, bursts twice that (beyond: 4029)",
    )
    serve.add_argument(
        "--send-queue-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="bytes queued for one connection; past it a slow subscriber catches up from the store",
    )
    serve.add_argument(
        "--max-lag",
        type=float,
        default=60.0,
        help="seconds a connection may accept none of the data waiting for it (beyond: 4029)",
    )
    serve.set_defaults(handler=_serve)

    token = commands.add_parser(
        "token",
        help="print a token the server with the same --data accepts",
        description=(
            "Print a token signed with the secret in --data (created if missing), which a server "
            "started with the same --data accepts. Without --channels, --subscribe or --publish "
            "the token allows every channel; with any of them it allows only the channels named, "
            "and an action given no pattern is allowed on no channel. Patterns are globs (*, ?, "
            "[seq]), matched case-sensitively against the whole channel name."
        ),
    )
    token.add_argument("--user", required=True, help="the user the token stands for")
    token.add_argument(
        "--data",
        default=os.path.join(data, "server"),
        help="the server's data directory, holding its token secret (default: %(default)s)",
    )
    token.add_argument(
        "--channels",
        action="append",
        default=[],
        metavar="PATTERN",
        help="channels the user may subscribe and publish to (repeatable)",
    )
    token.add_argument(
        "--subscribe",
        action="append",
        default=[],
        metavar="PATTERN",
        help="channels the user may subscribe to, including presence, typing and receipts "
        "(repeatable)",
    )
    token.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="PATTERN",
        help="channels the user may publish to (repeatable)",
    )
    token.add_argument(
        "--ttl",
        type=_duration,
        default=30 * 24 * 3600,
        metavar="DURATION",
        help="validity: seconds, or a number with s, m, h or d, e.g. 90, 15m, 1h, 7d; "
        "at most 3650d (default: 30d)",
    )
    token.set_defaults(handler=_token)

    chat = commands.add_parser("chat", help="line-based chat (starts an embedded server if needed)")
    chat.add_argument("--name", required=True)
    chat.add_argument("--url", default="ws://127.0.0.1:8765/realtime")
    chat.add_argument("--room", default="lobby")
    chat.add_argument("--data", default=data, help="journals (and an embedded server's data)")
    chat.add_argument("--token", default=None, help="default: made from the local server's secret")
    chat.set_defaults(handler=_chat)

    demo = commands.add_parser(
        "demo", help="non-interactive: two clients, a server restart, a SIGKILL"
    )
    demo.add_argument("--messages", type=int, default=400, help="messages bob sends")
    demo.set_defaults(handler=_demo)

    sender = commands.add_parser("_demo-sender")  # the demo's client process
    sender.add_argument("url")
    sender.add_argument("journal")
    sender.add_argument("token")
    sender.add_argument("total", type=int)
    sender.add_argument("report_fd", type=int)
    sender.set_defaults(handler=_demo_sender)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        status: int = handler(args)
    except ConfigError as exc:
        parser.error(str(exc))  # exits with status 2
    return status
