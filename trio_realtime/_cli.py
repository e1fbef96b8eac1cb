"""The ``trio-realtime`` command line (also ``python -m trio_realtime``).

An expected failure (a port in use, a locked journal, a refused token, an unreachable server, a bad
``--data`` or ``--name``) ends a command with one line on stderr, ``trio-realtime COMMAND: error:
...``, and status 1 (2 for a bad argument); ``--debug`` prints the traceback too. Ctrl-C ends
``serve`` and ``chat`` at once, quietly, with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import ConfigError, JournalLocked, RealtimeError
from ._version import __version__

if TYPE_CHECKING:
    from .server import RealtimeServer, ServerConfig

__all__ = ["EXIT_INTERRUPTED", "build_parser", "main", "run_trio"]

EXIT_INTERRUPTED = 130
"""The status of a command ended by Ctrl-C (128 + SIGINT), as shells report it."""


def run_trio(
    function: Callable[[], Awaitable[object]],
    *,
    on_interrupt: Callable[[], Awaitable[object]] | None = None,
) -> int:
    """Run ``function()`` under trio. Ctrl-C (SIGINT) cancels it at once (after
    ``on_interrupt()``, given at most 0.5 s) and makes the status 130 (a second Ctrl-C while it
    cleans up raises ``KeyboardInterrupt``, also 130); otherwise 0."""
    import trio

    from ._groups import single_error

    interrupted = False

    async def main() -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                work = trio.CancelScope()

                async def watch() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        if interrupted:
                            raise KeyboardInterrupt
                        interrupted = True
                        if on_interrupt is not None:
                            with trio.move_on_after(0.5):
                                await on_interrupt()
                        work.cancel()

                nursery.start_soon(watch)
                with work:
                    await function()
                nursery.cancel_scope.cancel()

    with single_error():
        trio.run(main)
    return EXIT_INTERRUPTED if interrupted else 0


# --- journal and queue ---------------------------------------------------------------------------


def _fail(args: argparse.Namespace, message: str) -> int:
    print(f"trio-realtime {args.command}: error: {message}", file=sys.stderr)
    return 1


def _journal_inspect(args: argparse.Namespace) -> int:
    from ._errors import JournalError
    from ._journal import recover

    try:
        state = recover(args.directory, repair=False)
    except (JournalError, OSError) as exc:
        return _fail(args, str(exc))
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
        return _fail(args, f"no queue {args.name!r} at {directory}")
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


# --- the server and its data ---------------------------------------------------------------------


def _port(text: str) -> int:
    """A TCP port for argparse: 0 (any free) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {port}")
    return port


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def _server_config(args: argparse.Namespace) -> ServerConfig:
    """The ``serve`` options' :class:`ServerConfig` (raises ConfigError for a bad one)."""
    from .server import ServerConfig

    return ServerConfig(
        allowed_origins=frozenset(args.allow_origin) if args.allow_origin else None,
        heartbeat_timeout=args.heartbeat_timeout,
        presence_timeout=args.presence_timeout,
        rate_limit=args.rate_limit,
        send_queue_bytes=args.send_queue_bytes,
        max_lag=args.max_lag,
        node_lease=args.node_lease,
        node_poll_interval=args.node_poll_interval,
    )


def _serve(args: argparse.Namespace) -> int:
    import sqlite3

    import trio

    from ._chat import Failure, listen_error, load_secret
    from ._groups import single_error
    from .server import serve, store_from_url

    config = _server_config(args)
    store = store_from_url(args.store) if args.store else None
    load_secret(args.data, create=True)
    _setup_logging(args.log_level)
    logger = logging.getLogger("trio_realtime.server")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            try:
                with single_error():
                    server = await nursery.start(
                        lambda task_status: serve(
                            args.data,
                            store=store,
                            host=args.host,
                            port=args.port,
                            config=config,
                            task_status=task_status,
                        )
                    )
            except JournalLocked as exc:
                raise Failure(
                    f"another server ({exc.holder}) already uses --data {args.data}: stop it, or "
                    "choose another --data"
                ) from exc
            except (OSError, sqlite3.Error) as exc:
                message = listen_error(args.host, args.port, exc)
                raise Failure(message or f"cannot open the store: {exc}") from exc
            started.append(server)
            url = f"ws://{args.host}:{server.port}/realtime"
            logger.info(
                "trio-realtime %s serving %s (data: %s, store: %s, origins: %s); Ctrl-C stops",
                __version__,
                url,
                args.data,
                args.store or "SQLite in the data directory",
                ", ".join(sorted(args.allow_origin)) if args.allow_origin else "any",
            )
            # Tools read this line on stdout for the port. One write (print() writes the end of
            # line separately when stdout is unbuffered), and a reader that closed our stdout
            # after reading it must not end the server.
            with contextlib.suppress(OSError):
                sys.stdout.write(
                    f"trio-realtime server on {url} (data: {args.store or args.data})\n"
                )
                sys.stdout.flush()

    async def stop() -> None:
        if started:
            await started[0].drop_connections()

    started: list[RealtimeServer] = []
    status = run_trio(main, on_interrupt=stop)
    if status == EXIT_INTERRUPTED:
        logger.info("stopped (Ctrl-C)")
    return status


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


def _run_services(args: argparse.Namespace) -> int:
    from .service import Service, ServiceTagFilter, check_services, load_services, run_services
    from .service._config import with_line

    services = [Service(config) for config in load_services(args.file)]
    try:
        check_services(services)  # what run checks before it starts, --check checks too
    except ConfigError as exc:
        raise with_line(args.file, exc) from None
    if args.check:
        names = ", ".join(f"{s.config.name} ({s.config.profile})" for s in services)
        print(f"{args.file}: {len(services)} service(s) ok: {names}")
        return 0
    import functools

    import trio

    handler = logging.StreamHandler()
    handler.addFilter(ServiceTagFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s [%(service)s] %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    trio.run(functools.partial(run_services, services, handle_signals=True))
    return 0


def _token(args: argparse.Namespace) -> int:
    from ._chat import load_secret
    from .server import make_token
    from .server._auth import SECRET_NAME

    subscribe: tuple[str, ...] | None = None
    publish: tuple[str, ...] | None = None
    if args.channels or args.subscribe or args.publish:
        # Once any channel is named, an action not named is allowed nowhere.
        subscribe = tuple(dict.fromkeys([*args.channels, *args.subscribe]))
        publish = tuple(dict.fromkeys([*args.channels, *args.publish]))
    existed = os.path.isfile(os.path.join(args.data, SECRET_NAME))
    secret = load_secret(args.data, create=True)
    if not existed:
        print(
            f"trio-realtime token: note: made a new token secret in {args.data}: only a server "
            f"started with --data {args.data} accepts this token",
            file=sys.stderr,
        )
    try:
        token = make_token(secret, args.user, ttl=args.ttl, subscribe=subscribe, publish=publish)
    except ValueError as exc:
        raise ConfigError("token", str(exc)) from None
    print(token)
    return 0


# --- chat and demo -------------------------------------------------------------------------------


def _name(text: str) -> str:
    from ._chat import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _room(text: str) -> str:
    from ._chat import check_room

    try:
        return check_room(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chat(args: argparse.Namespace) -> int:
    from ._chat import ChatOptions, Hosting, chat, chat_journal_dir
    from ._paths import APP_DIR, data_dir

    data = args.data
    if data == data_dir("server"):  # the default: earlier versions kept chat journals elsewhere
        journal = data_dir("server", "chat", args.name, legacy=[(APP_DIR, "chat", args.name)])
    else:
        journal = chat_journal_dir(data, args.name)
    options = ChatOptions(
        name=args.name,
        url=args.url,
        room=args.room,
        data_dir=data,
        journal_dir=journal,
        token=args.token,
        history=args.history,
        connect_timeout=args.connect_timeout,
        embedded_server=args.embedded_server,
        debug=args.debug,
    )
    hosting = Hosting()
    return run_trio(lambda: chat(options, hosting=hosting), on_interrupt=hosting.stop)


def _demo(args: argparse.Namespace) -> int:
    import trio

    from ._chat import demo

    return 0 if trio.run(lambda: demo(total=args.messages)) else 1


def _demo_sender(args: argparse.Namespace) -> int:
    import trio

    from ._chat import demo_sender

    trio.run(demo_sender, args.url, args.journal, args.token, args.total, args.report_fd)
    return 0


# --- the parser ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``--help`` has the rest), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.HelpFormatter):
    """Shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def _number(kind: Callable[[str], Any], *, zero: bool) -> Callable[[str], Any]:
    """An argument type: a number of ``kind``, more than 0 (or ``zero`` too)."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= 0 if zero else value > 0) or value != value:  # (NaN)
            raise argparse.ArgumentTypeError(
                f"{text!r}: must be {'0 or more' if zero else 'more than 0'}"
            )
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    from ._paths import data_dir

    parser = _Parser(
        prog="trio-realtime",
        description="Durable realtime messaging for trio: server, chat, demo and journal tools.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"trio-realtime {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on failure, print the traceback as well"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name, formatter_class=_Formatter, **kwargs
        )
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on failure, print the traceback as well",
        )
        return sub

    journal = command("journal", help="inspect a client journal directory")
    journal_commands = journal.add_subparsers(dest="journal_command", metavar="SUBCOMMAND")
    inspect = journal_commands.add_parser(
        "inspect",
        help="print a journal's state without changing it (safe while it is in use)",
        formatter_class=_Formatter,
    )
    inspect.add_argument("directory", help="the journal directory")
    inspect.set_defaults(handler=_journal_inspect)

    queue = command("queue", help="durable local queues (trio_realtime.queue)")
    queue_commands = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND")
    queue_inspect = queue_commands.add_parser(
        "inspect",
        help="list a queue's pending items without changing it (safe while in use)",
        formatter_class=_Formatter,
    )
    queue_inspect.add_argument("name", help="the queue's name")
    queue_inspect.add_argument("--directory", default=None, help="default: found by name")
    queue_inspect.add_argument("--limit", type=int, default=20, help="items to list")
    queue_inspect.set_defaults(handler=_queue_inspect)

    server_data = data_dir("server")
    data_help = (
        "the server's data directory: its token secret (server.secret) and SQLite store; "
        "serve, token and chat take the same one"
    )
    serve = command(
        "serve",
        help="run the reference server",
        description="Run the reference server until Ctrl-C. It prints `trio-realtime server on "
        "URL` on stdout once it listens, and logs connections, refused tokens and errors on "
        "stderr.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8765, help="port to listen on (0: any free)")
    serve.add_argument("--data", default=server_data, help=data_help)
    serve.add_argument(
        "--store",
        default=None,
        help=(
            "where events are kept: sqlite:///path/to/db, memory:, redis://host:port/db or "
            "redis+cluster://host:port,... (several nodes share a Redis store; "
            "default: SQLite in --data)"
        ),
    )
    serve.add_argument(
        "--allow-origin", action="append", help="allowed Origin (repeatable; default: any)"
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the least severe log messages to print",
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
    serve.add_argument(
        "--node-lease",
        type=float,
        default=15.0,
        help="several nodes on one --store: seconds a node's lease lasts (renewed every third); "
        "a dead node's users leave this long after its last renewal, plus --presence-timeout",
    )
    serve.add_argument(
        "--node-poll-interval",
        type=float,
        default=1.0,
        help="several nodes on one --store: seconds between a node's reads of the channel heads "
        "(events whose notice was lost reach its subscribers within this)",
    )
    serve.set_defaults(handler=_serve)

    token = command(
        "token",
        help="print a token the server with the same --data accepts",
        description=(
            "Print a token signed with the secret in --data (created if missing, with a note on "
            "stderr), which a server started with the same --data accepts. Without --channels, "
            "--subscribe or --publish the token allows every channel; with any of them it allows "
            "only the channels named, and an action given no pattern is allowed on no channel. "
            "Patterns are globs (*, ?, [seq]), matched case-sensitively against the whole "
            "channel name."
        ),
    )
    token.add_argument("--user", required=True, help="the user the token stands for")
    token.add_argument("--data", default=server_data, help=data_help)
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

    run = command(
        "run",
        help="run the services of a TOML file side by side (--check: only validate it)",
        description=(
            "Run every [services.NAME] of FILE in this process, each with its own journal and "
            "log tag, until SIGTERM or Ctrl-C (pending events wait in the journals for the next "
            "run). --check validates the file and names the offending key and line."
        ),
    )
    run.add_argument("file", metavar="FILE", help="the services file (TOML)")
    run.add_argument("--check", action="store_true", help="validate FILE and exit")
    run.add_argument("--log-level", default="INFO", help="the services' log level (default: INFO)")
    run.set_defaults(handler=_run_services)

    chat = command(
        "chat",
        help="chat in a room (starts an embedded server if nothing listens at --url)",
        description=(
            "Chat in a room: type a line to send it; /help lists the commands. If nothing "
            "listens at --url (on this machine), the chat runs an embedded server with --data "
            "until it ends; if that chat goes away, another chat on the same --data takes over. "
            "The token is made from the secret in --data unless --token is given. This chat's "
            "journal (what it sent and read) is --data/chat/NAME."
        ),
    )
    chat.add_argument("--name", required=True, type=_name, help="your user name")
    chat.add_argument(
        "--url",
        default=os.environ.get("TRIO_REALTIME_URL") or "ws://127.0.0.1:8765/realtime",
        help="the server's URL; $TRIO_REALTIME_URL sets the default (default: %(default)s)",
    )
    chat.add_argument("--room", default="lobby", type=_room, help="the room (channel) to join")
    chat.add_argument(
        "--data", default=server_data, help=f"{data_help}; also holds the chat journals"
    )
    chat.add_argument(
        "--token", default=None, help="the token to connect with (default: made from --data)"
    )
    chat.add_argument(
        "--history",
        type=_number(int, zero=True),
        default=20,
        metavar="N",
        help="messages of the room shown on joining",
    )
    chat.add_argument(
        "--connect-timeout",
        type=_number(float, zero=False),
        default=10.0,
        metavar="SECONDS",
        help="give up when not connected within this time at start",
    )
    chat.add_argument(
        "--no-embedded-server",
        dest="embedded_server",
        action="store_false",
        help="never start a server: fail when nothing listens at --url",
    )
    chat.set_defaults(handler=_chat)

    demo = command("demo", help="non-interactive: two clients, a server restart, a SIGKILL")
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


def _describe(exc: BaseException) -> str | None:
    """One line for an error of ours that reached the top without a more specific message."""
    from ._chat import Failure

    if isinstance(exc, Failure):
        return str(exc)
    if isinstance(exc, JournalLocked):
        return f"the journal {exc.directory} is in use by {exc.holder}"
    if isinstance(exc, RealtimeError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status (a usage error raises
    ``SystemExit(2)``, as argparse does)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    args.debug = getattr(args, "debug", False)
    prog = f"trio-realtime {args.command}"
    try:
        status: int = handler(args)
    except BaseException as raised:
        exc = raised
        if isinstance(exc, BaseExceptionGroup):
            from ._groups import single

            exc = single(exc)
        if isinstance(exc, KeyboardInterrupt):  # before trio ran, or a second Ctrl-C
            return EXIT_INTERRUPTED
        if isinstance(exc, BrokenPipeError):  # stdout closed by its reader: nothing to say
            return 1
        if not isinstance(exc, Exception):  # SystemExit and the like
            raise
        if args.debug:
            traceback.print_exception(exc)
        if isinstance(exc, ConfigError):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None  # a usage error, as argparse ends those
        message = _describe(exc)
        if message is None:
            if args.debug:
                return 1
            message = f"unexpected {type(exc).__name__}: {exc} (--debug shows where)"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    return status
