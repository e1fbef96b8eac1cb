"""The example chat (``trio-realtime chat``) and the self-checking demo (``trio-realtime demo``).

The chat, in a terminal: messages scroll above the line being typed; others see that you are typing
while that line holds text (and stop seeing it when you send or erase it, or pause for a few
seconds); colours and timestamps come from ``rich``. With stdin or stdout not a terminal it reads
and writes plain lines. On joining it shows the room's last messages; ``/help`` lists the commands.

If nothing listens at the URL (on this machine), the chat runs an embedded server until it ends.
Should that chat go away, another chat on the same ``--data`` takes over: it starts the server
again, with the same data, and everyone reconnects to it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from ._config import RealtimeConfig
from ._errors import (
    AuthenticationFailed,
    ConnectionFailed,
    JournalLocked,
    LinkClosed,
    RealtimeError,
    RequestRefused,
)
from ._groups import single_error
from ._paths import safe_name
from ._protocol import Gap, Message, PresenceStatus
from ._realtime import Connection, open_realtime
from ._service import ConnectionState
from .server import RealtimeServer, load_or_create_secret, make_token, serve
from .server._auth import SECRET_NAME

__all__ = [
    "ChatOptions",
    "Failure",
    "Hosting",
    "chat",
    "chat_journal_dir",
    "check_name",
    "check_room",
    "clean",
    "demo",
    "demo_sender",
    "listen_error",
    "load_secret",
    "room_history",
]

Out = Callable[[str], None]


# --- failures, for the command line ---------------------------------------------------------


class Failure(Exception):
    """An expected failure, said to the user in one line (the command then exits with 1)."""


def load_secret(data: str, *, create: bool) -> bytes:
    """The token secret in the server data directory ``data`` (``data/server.secret``), created
    if missing when ``create``; :class:`Failure` saying why it cannot be had."""
    path = os.path.join(data, SECRET_NAME)
    if not create and not os.path.isfile(path):
        raise Failure(
            f"no token secret in {data} ({SECRET_NAME} is missing): give the --data the server "
            "was started with, or a --token"
        )
    try:
        return load_or_create_secret(data)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failure(f"cannot use --data {data}: {reason}") from exc


def listen_error(host: str, port: int, exc: BaseException) -> str | None:
    """One line for a failure to listen on ``host:port``, or ``None`` when ``exc`` is not one."""
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}: unknown host ({exc.strerror})"
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another server is running there?): "
            "stop it, or choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {host}:{port}: permission denied"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,30}[A-Za-z0-9])?")
_ROOM = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]{0,62}[A-Za-z0-9])?")
_MAX_TEXT = 2000  # characters of one message
_TAKE_OVER_JITTER = 0.5  # seconds: chats that would take over the server do not all try at once


def _config(options: ChatOptions) -> RealtimeConfig:
    """Quick to reconnect (a chat that took over the server is found at once), brief to close,
    and an attempt to connect lasts at most ``--connect-timeout``."""
    return RealtimeConfig(
        initial_retry_delay=0.2,
        max_retry_delay=3.0,
        close_grace_period=3.0,
        connect_timeout=options.connect_timeout,
    )


def check_name(name: str) -> str:
    """``name`` if it is a usable chat name (it names the chat's journal directory as it is)."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a usable name: use 1 to 32 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_room(room: str) -> str:
    """``room`` if it is a usable room (channel) name."""
    if not _ROOM.fullmatch(room):
        raise ValueError(
            f"{room!r} is not a usable room: use 1 to 64 letters, digits, '.', '_', ':' or '-', "
            "starting and ending with a letter or digit"
        )
    return room


def clean(text: str, limit: int = _MAX_TEXT) -> str:
    """``text`` as one safe line: control and format characters (escape sequences, bidi
    overrides, Ctrl-L...) dropped, tabs and line breaks made spaces, at most ``limit`` characters.
    Applied to what is typed before it is sent, and to what others sent before it is shown."""
    kept: list[str] = []
    for char in text[: limit * 2]:
        if char in "\t\n\r":
            kept.append(" ")
        elif char == "\u200d" or unicodedata.category(char) not in ("Cc", "Cf", "Cs"):
            kept.append(char)  # (the zero-width joiner holds emoji sequences together)
    return "".join(kept)[:limit]


def chat_journal_dir(data_dir: str, name: str) -> str:
    """The journal of user ``name``'s chat: ``DATA/chat/<safe_name(name)>``. A journal that an
    older version kept under the raw name (when that differs but was a plain file name) is kept
    on while the new place does not exist."""
    path = os.path.join(data_dir, "chat", safe_name(name))
    old = os.path.join(data_dir, "chat", name)
    plain = name not in ("", ".", "..") and os.sep not in name and "/" not in name
    if plain and old != path and os.path.isdir(old) and not os.path.exists(path):
        return old
    return path


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise Failure(f"{url!r} is not a usable URL: the port is not a number") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise Failure(f"{url!r} is not a usable URL: use ws://HOST:PORT/realtime")
    return parts.hostname, port or (443 if parts.scheme == "wss" else 80)


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _unreachable(host: str, port: int) -> str | None:
    """``None`` when something accepts TCP connections at ``host:port``; else why not."""
    with trio.move_on_after(3):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except socket.gaierror as exc:
            return f"unknown host {host!r} ({exc.strerror})"
        except OSError as exc:
            group = exc.__cause__
            causes = list(group.exceptions) if isinstance(group, BaseExceptionGroup) else [exc]
            reasons = {
                (os.strerror(c.errno) if c.errno else str(c)).lower()
                for c in causes
                if isinstance(c, OSError)
            }
            return ", ".join(sorted(reasons)) or str(exc)
        await stream.aclose()
        return None
    return "no answer within 3 s"


# --- the screen ----------------------------------------------------------------------------------

_PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_blue",
)
_CLEAR_LINE = "\r\x1b[K"

Segments = list[tuple[str, str]]  # (text, rich style)


def _colour(name: str) -> str:
    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def _clock(milliseconds: int) -> str:
    moment = time.localtime(milliseconds / 1000)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M", moment)
    return time.strftime("%Y-%m-%d %H:%M", moment)


class Screen:
    """Where the chat writes. Interactive (a terminal on both ends): lines scroll above the input
    line, which is drawn again below each one. Colours (``rich``) when stdout is a terminal;
    plain lines otherwise."""

    def __init__(self, out: TextIO, room: str, *, interactive: bool, colour: bool) -> None:
        self._out = out
        self.room = room
        self.interactive = interactive
        self.buffer = ""
        self.status = ""
        self._console: Any = None
        if colour:
            with contextlib.suppress(ImportError):
                from rich.console import Console

                self._console = Console(
                    file=out,
                    force_terminal=True,
                    highlight=False,
                    markup=False,
                    emoji=False,
                    soft_wrap=True,
                )

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed stdout
            self._out.write(text)
            self._out.flush()

    def show(self, segments: Segments) -> None:
        """A line above the input line."""
        if self.interactive:
            self._write(_CLEAR_LINE)
        if self._console is not None:
            from rich.text import Text

            with contextlib.suppress(OSError, ValueError):
                self._console.print(Text.assemble(*segments))
        else:
            self._write("".join(text for text, _ in segments) + "\n")
        if self.interactive:
            self._write(self._input_line())

    def info(self, text: str) -> None:
        self.show([("* " + text, "dim")])

    def warn(self, text: str) -> None:
        self.show([("! " + text, "yellow")])

    def message(self, when: int, sender: str, text: str, *, me: bool, mine: bool) -> None:
        name_style = "bold" if mine else f"bold {_colour(sender)}"
        if me:
            self.show(
                [
                    (_clock(when) + " ", "dim"),
                    ("* ", ""),
                    (sender, name_style),
                    (f" {text}", "italic"),
                ]
            )
        else:
            self.show([(_clock(when) + " ", "dim"), (sender, name_style), (f": {text}", "")])

    def set_input(self, buffer: str) -> None:
        if buffer != self.buffer:
            self.buffer = buffer
            self._write(self._input_line())

    def set_status(self, status: str) -> None:
        """A note before the prompt (who is typing); interactive only."""
        if status != self.status:
            self.status = status
            if self.interactive:
                self._write(self._input_line())

    def _input_line(self) -> str:
        width = max(20, os.get_terminal_size(self._out.fileno()).columns if self._isatty() else 80)
        status = f"({self.status}) " if self.status else ""
        status = status[: width // 2]
        prompt = f"{self.room}> "
        room_left = max(1, width - len(status) - len(prompt) - 1)
        shown = self.buffer[-room_left:]
        if status and self._console is not None:
            status = f"\x1b[2;3m{status}\x1b[0m"
        return f"{_CLEAR_LINE}{status}{prompt}{shown}"

    def _isatty(self) -> bool:
        try:
            return self._out.isatty()
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if self.interactive:
            self._write(_CLEAR_LINE)


class _ScreenLog(logging.Handler):
    """The library's warnings, shown as chat lines (not over the input line)."""

    def __init__(self, screen: Screen, level: int) -> None:
        super().__init__(level)
        self._screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._screen.warn(clean(record.getMessage(), 500))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _log_into(screen: Screen, debug: bool) -> Iterator[None]:
    logger = logging.getLogger("trio_realtime")
    # The chat says itself what happens to the connection; --debug adds the library's account.
    handler = _ScreenLog(screen, logging.INFO if debug else logging.CRITICAL)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    if debug:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# --- the keyboard --------------------------------------------------------------------------------


@contextlib.contextmanager
def _cbreak(fd: int, enabled: bool) -> Iterator[None]:
    """Keys one at a time and no echo (the chat draws the line); Ctrl-C still interrupts."""
    if not enabled:
        yield
        return
    import termios

    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    """What arrives on ``fd``, without a thread (so Ctrl-C ends the chat at once), until EOF."""
    pollable = True
    while True:
        if pollable:
            try:
                await trio.lowlevel.wait_readable(fd)
            except OSError:  # a regular file or /dev/null: never blocks, cannot be polled
                pollable = False
        if not pollable:
            await trio.lowlevel.checkpoint()
        data = os.read(fd, 4096)
        if not data:
            return
        yield data


class LineEditor:
    """The line being typed, from keys read in cbreak mode. :meth:`feed` returns the lines
    entered (Enter), and ``None`` for the end of input (Ctrl-D on an empty line)."""

    def __init__(self, limit: int = _MAX_TEXT) -> None:
        self.buffer = ""
        self._limit = limit
        self._escape: str | None = None  # inside an escape sequence (arrow keys...): ignored

    def feed(self, text: str) -> list[str | None]:
        entered: list[str | None] = []
        for char in text:
            if self._escape is not None:
                if self._escape == "\x1b" and char in "[O":
                    self._escape = char
                elif self._escape == "[" and not "\x40" <= char <= "\x7e":
                    pass  # a parameter of the sequence
                else:
                    self._escape = None
            elif char == "\x1b":
                self._escape = char
            elif char in "\r\n":
                entered.append(self.buffer)
                self.buffer = ""
            elif char in "\x7f\x08":  # backspace
                self.buffer = self.buffer[:-1]
            elif char == "\x15":  # Ctrl-U: erase the line
                self.buffer = ""
            elif char == "\x17":  # Ctrl-W: erase a word
                self.buffer = self.buffer.rstrip()
                self.buffer = self.buffer[: self.buffer.rfind(" ") + 1]
            elif char == "\x04":  # Ctrl-D: the end, on an empty line
                if not self.buffer:
                    entered.append(None)
            elif char == "\t":
                self.buffer += " "
            elif clean(char) and len(self.buffer) < self._limit:
                self.buffer += char
        return entered


async def _lines(fd: int) -> AsyncIterator[str]:
    """Lines read from ``fd`` (not a terminal), until EOF."""
    decoder = _decoder()
    rest = ""
    async for data in _chunks(fd):
        *lines, rest = (rest + decoder.decode(data)).split("\n")
        for line in lines:
            yield line
    if rest:
        yield rest


def _decoder() -> Any:
    import codecs

    return codecs.getincrementaldecoder("utf-8")(errors="replace")


# --- history -------------------------------------------------------------------------------------

_HISTORY_TIMEOUT = 5.0  # seconds for reading the history (else the chat starts without)


async def room_history(
    url: str, token: str, room: str, count: int
) -> tuple[int | None, list[Message]]:
    """The offset of ``room``'s newest message (its head) and its last ``count`` messages, read
    by a short-lived second connection that journals nothing (so the chat's own journal, and its
    position in the room, are left alone). ``(None, [])`` if they could not be had in time.

    The head is where a new subscription starts (``subscribe`` returns it); then the last
    ``count`` messages are read by subscribing again from ``head - count``."""
    config = RealtimeConfig(
        durability="memory", log_level="CRITICAL", network_monitor=False, close_grace_period=0
    )
    timeout = _HISTORY_TIMEOUT
    with trio.move_on_after(timeout), contextlib.suppress(RealtimeError, OSError):  # noqa: SIM117
        with single_error():
            async with open_realtime(url, token=token, config=config) as probe:
                await probe.wait_connected(timeout)
                head = await probe.subscribe(room)
                if head is None:
                    return None, []
                if not count or not head:
                    return head, []
                await probe.unsubscribe(room)
                await probe.subscribe(room, from_offset=max(0, head - count))
                kept: dict[int, Message] = {}
                async with probe.messages(room) as items:
                    async for item in items:
                        if isinstance(item, Message):
                            if item.offset <= head:
                                kept[item.offset] = item
                            reached = item.offset
                        else:  # retention dropped some: what is left is shown
                            reached = item.last_missing or 0
                        if reached >= head:
                            break
                return head, [kept[offset] for offset in sorted(kept)]
    return None, []


# --- the chat ------------------------------------------------------------------------------------


@attrs.frozen
class ChatOptions:
    name: str
    url: str
    room: str
    data_dir: str
    """The server's data directory (secret, store): the embedded server's, and where the token
    comes from when none is given."""
    journal_dir: str
    token: str | None = None
    history: int = 20
    connect_timeout: float = 10.0
    embedded_server: bool = True
    debug: bool = False


class Hosting:
    """The embedded server a chat runs, if any; :meth:`stop` drops its connections at once (on
    Ctrl-C, before everything is cancelled)."""

    def __init__(self) -> None:
        self.server: RealtimeServer | None = None
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        if self.server is not None:
            await self.server.drop_connections()


class _EmbeddedServer:
    """The server a chat runs when nothing listens at its URL (at start, or to take over)."""

    def __init__(
        self, nursery: trio.Nursery, data_dir: str, host: str, port: int, hosting: Hosting
    ) -> None:
        self._nursery = nursery
        self._data_dir = data_dir
        self._host = host
        self._port = port
        self.hosting = hosting
        self.running = False

    async def start(self) -> None:
        load_secret(self._data_dir, create=True)
        try:
            with single_error():
                server: RealtimeServer = await self._nursery.start(
                    functools.partial(serve, self._data_dir, host=self._host, port=self._port)
                )
        except JournalLocked as exc:
            raise Failure(
                f"a server ({exc.holder}) already uses {self._data_dir}, but nothing listens at "
                f"{self._host}:{self._port}: check --url (it must be that server's)"
            ) from exc
        except OSError as exc:
            reason = listen_error(self._host, self._port, exc) or str(exc)
            raise Failure(f"cannot start an embedded server: {reason}") from exc
        self._port = server.port or self._port
        self.running = True
        self.hosting.server = server


def _typing_text(users: list[str]) -> str:
    if not users:
        return ""
    if len(users) == 1:
        return f"{users[0]} is typing"
    if len(users) <= 3:
        return f"{', '.join(users[:-1])} and {users[-1]} are typing"
    return f"{len(users)} people are typing"


_HELP = (
    ("/help", "this list"),
    ("/who", "who is in the room"),
    ("/me ACTION", "say what you do: /me waves"),
    ("/away, /busy, /online", "set your status"),
    ("/quit", "leave (so do Ctrl-D on an empty line and Ctrl-C)"),
    ("//text", "send a line that starts with /"),
)


class _Room:
    """One chat session in a room, over a connected ``conn``."""

    def __init__(
        self,
        conn: Connection,
        options: ChatOptions,
        screen: Screen,
        server: _EmbeddedServer,
        token: str,
    ) -> None:
        self.conn = conn
        self.options = options
        self.screen = screen
        self.server = server
        self.token = token
        self.name = options.name
        self.room = options.room
        self.host, self.port = _host_port(options.url)
        self.hoster: str | None = None
        """The last user seen running the server in their chat (presence metadata)."""
        self.my_last = 0  # offset of the newest message of mine shown
        self.my_status = PresenceStatus.ONLINE  # as last announced
        self.seen_by: set[str] = set()
        self.typing = False

    async def run(self, stdin: int) -> None:
        conn, room, screen = self.conn, self.room, self.screen
        head, history = await room_history(self.options.url, self.token, room, self.options.history)
        if history:
            screen.info(
                f"the last {len(history)} message{'s' if len(history) != 1 else ''} of {room}:"
            )
            for message in history:
                await self._show(message)
        try:
            await conn.subscribe(room, from_offset=head)
        except RequestRefused as exc:
            raise Failure(f"cannot join {room}: {exc}") from exc
        await self._announce(PresenceStatus.ONLINE)
        screen.info(
            f"you are {self.name} in {room} at {self.options.url}; type to chat, /help for more"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._messages, head)
            nursery.start_soon(self._presence)
            nursery.start_soon(self._typing)
            nursery.start_soon(self._receipts)
            nursery.start_soon(self._link, nursery)
            await self._input(stdin)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(2), contextlib.suppress(RealtimeError):
            await conn.presence.update(PresenceStatus.OFFLINE, channel=room)  # gone at once
            # A request's answer comes after the server took what was sent before it: the
            # update is not lost in the close that follows.
            if conn.state is ConnectionState.CONNECTED:
                await conn.receipts.get_receipts(room, max(1, self.my_last))
        others = [user for user in conn.presence.members(room) if user != self.name]
        if self.server.running and others:
            screen.info(
                "others chatting here used this chat's server: one of their chats takes it over"
            )

    async def _announce(self, status: PresenceStatus) -> None:
        self.my_status = status  # /who shows it at once, not once the server echoed it
        metadata = {"hosting": True} if self.server.running else {}
        await self.conn.presence.update(status, channel=self.room, metadata=metadata)

    # --- what arrives ----------------------------------------------------------------------------

    async def _messages(self, head: int | None) -> None:
        async with self.conn.messages(self.room) as items:
            async for item in items:
                if isinstance(item, Gap):
                    last = item.last_missing
                    if head is None or last is None or last > head:
                        shown = (
                            f"{item.first_missing}..{last}" if last else f"{item.first_missing}.."
                        )
                        self.screen.info(f"messages #{shown} of {self.room} are no longer kept")
                elif head is None or item.offset > head:  # (up to the head: history, shown)
                    await self._show(item)

    async def _show(self, message: Message) -> None:
        payload = message.payload
        sender = clean(message.sender or "?", 64)
        me = False
        if isinstance(payload, dict) and isinstance(payload.get("text"), str):
            text = clean(payload["text"])
            me = payload.get("me") is True
        else:
            text = clean(f"[{message.event}] {orjson.dumps(payload).decode()}")
        mine = message.sender == self.name
        self.screen.message(message.timestamp, sender, text, me=me, mine=mine)
        if mine:
            self.my_last = message.offset
            self.seen_by.clear()
        else:
            with contextlib.suppress(RealtimeError):
                await self.conn.receipts.mark_read(self.room, message.offset)  # shown is read

    async def _presence(self) -> None:
        known: dict[str, PresenceStatus] = {}
        async with self.conn.presence.changes(self.room) as changes:
            async for change in changes:
                for user, member in change.joins.items():
                    if member.metadata.get("hosting") is True:
                        self.hoster = user
                    if user == self.name:
                        continue  # you know where you are (and a reconnect is no news)
                    before = known.get(user)
                    known[user] = member.status
                    shown = clean(user, 64)
                    if before is None:
                        status = member.status
                        here = "" if status is PresenceStatus.ONLINE else f" ({status.value})"
                        self.screen.info(f"{shown} is here{here}")
                    elif before is not member.status:
                        self.screen.info(f"{shown} is {member.status.value}")
                for user in change.leaves:
                    if user != self.name and known.pop(user, None) is not None:
                        self.screen.info(f"{clean(user, 64)} left")

    async def _typing(self) -> None:
        async with self.conn.typing.changes(self.room) as changes:
            async for users in changes:
                typing = sorted(clean(user, 64) for user in users if user != self.name)
                if self.screen.interactive:
                    self.screen.set_status(_typing_text(typing))
                elif typing:
                    self.screen.info(_typing_text(typing))

    async def _receipts(self) -> None:
        async with self.conn.receipts.changes(self.room) as receipts:
            async for receipt in receipts:
                user = receipt.user
                if (
                    user != self.name
                    and self.my_last
                    and receipt.offset >= self.my_last
                    and user not in self.seen_by
                ):
                    self.seen_by.add(user)
                    self.screen.show([(f"  seen by {clean(user, 64)}", "dim")])

    async def _link(self, nursery: trio.Nursery) -> None:
        lost = False
        async with self.conn.states() as states:
            async for state in states:
                if state is ConnectionState.CONNECTED and lost:
                    lost = False
                    self.screen.info("connected again")
                elif state is ConnectionState.RECONNECTING and not lost:
                    lost = True
                    if self.server.hosting.stopping:
                        return  # Ctrl-C: this chat's server dropped every connection, its own too
                    self.screen.warn(
                        f"lost the connection to {self.options.url} "
                        f"({_why(self.conn.last_error)}): reconnecting"
                    )
                    nursery.start_soon(self._take_over)
                elif state is ConnectionState.FAILED:
                    why = _why(self.conn.last_error)
                    raise Failure(f"the connection to {self.options.url} failed: {why}")

    async def _take_over(self) -> None:
        """The link went down. If nothing listens at the URL any more and the server was a chat's
        (presence said so), start it here, with the same data; otherwise say what to run."""
        await trio.sleep(random.uniform(0.05, _TAKE_OVER_JITTER))
        if self.conn.state is ConnectionState.CONNECTED:
            return
        if await _unreachable(self.host, self.port) is None:
            return  # something listens: the connection gets there by itself
        data = self.options.data_dir
        hoster = self.hoster if self.hoster != self.name else None
        can_host = (
            self.options.embedded_server
            and _is_local(self.host)
            and self.options.token is None  # a token of ours is one the new server accepts
        )
        if hoster is None or not can_host:
            who = (
                f"{hoster}'s chat, which ran the server, has ended" if hoster else "nothing answers"
            )
            self.screen.warn(
                f"{who}: start the server again (trio-realtime serve --data {data}); "
                "this chat reconnects by itself"
            )
            return
        try:
            await self.server.start()
        except Failure:
            return  # another chat took over first: the connection gets there
        self.screen.info(
            f"{hoster}'s chat, which ran the server, has ended: this chat runs it now "
            f"(data in {data}); keep it open while others chat"
        )
        with contextlib.suppress(RealtimeError):
            await self._announce(PresenceStatus.ONLINE)
        self.conn.notify_network_change()  # reconnect now, not after the backoff

    # --- what is typed ---------------------------------------------------------------------------

    async def _input(self, stdin: int) -> None:
        if not self.screen.interactive:
            async for text in _lines(stdin):
                if not await self._enter(text):
                    return
            return
        editor = LineEditor()
        decoder = _decoder()
        async for data in _chunks(stdin):
            for line in editor.feed(decoder.decode(data)):
                self.screen.set_input(editor.buffer)
                if line is None or not await self._enter(line):
                    return
            self.screen.set_input(editor.buffer)
            await self._set_typing(editor.buffer)

    async def _set_typing(self, buffer: str) -> None:
        typing = bool(buffer.strip()) and not buffer.startswith("/")
        if typing or self.typing:  # (a True again refreshes it; the service sends at most one)
            self.typing = typing
            with contextlib.suppress(RealtimeError):
                await self.conn.typing.set(self.room, typing)

    async def _enter(self, line: str) -> bool:
        """Act on a line entered; ``False`` to leave."""
        text = clean(line).strip()
        if text.startswith("//"):
            await self._send(text[1:])
        elif text.startswith("/"):
            return await self._command(text)
        elif text:
            await self._send(text)
        return True

    async def _send(self, text: str, *, me: bool = False) -> None:
        payload: dict[str, Any] = {"text": text}
        if me:
            payload["me"] = True
        self.typing = False  # sending ends it (receivers clear it when the message arrives)
        try:
            await self.conn.send(self.room, "chat_message", payload)
        except ConnectionFailed as exc:
            raise Failure(f"cannot send: {exc}") from exc
        if self.conn.state is not ConnectionState.CONNECTED:
            self.screen.info("not connected: sent once the server is back")

    async def _command(self, text: str) -> bool:
        command, _, rest = text.partition(" ")
        rest = rest.strip()
        screen = self.screen
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            for usage, what in _HELP:
                screen.info(f"{usage:<24} {what}")
        elif command == "/who":
            statuses = {u: m.status for u, m in self.conn.presence.members(self.room).items()}
            statuses[self.name] = self.my_status
            names = [
                f"{clean(user, 64)}{' (you)' if user == self.name else ''}"
                + ("" if status is PresenceStatus.ONLINE else f" ({status.value})")
                for user, status in sorted(statuses.items())
            ]
            screen.info(f"in {self.room}: {', '.join(names) or 'nobody'}")
        elif command == "/me" and rest:
            await self._send(rest, me=True)
        elif command in ("/away", "/busy", "/online") and not rest:
            with contextlib.suppress(RealtimeError):
                await self._announce(PresenceStatus(command[1:]))
            screen.info(f"you are {command[1:]}")
        else:
            screen.info(f"unknown command {command}: /help lists them (//text sends /text)")
        return True


def _why(error: LinkClosed | None) -> str:
    if error is None:
        return "no answer"
    if error.reason:
        return error.reason
    return f"closed with code {error.code}" if error.code is not None else "the link dropped"


def _refused(options: ChatOptions) -> str:
    if options.token is not None:
        return (
            f"the server at {options.url} refused the --token (4001): it expired, or was made "
            "for another server"
        )
    return (
        f"the server at {options.url} refused the token made from the secret in "
        f"{options.data_dir} (4001): give the --data the server was started with, or a --token "
        "it accepts"
    )


async def _wait_connected(conn: Connection, options: ChatOptions) -> None:
    try:
        await conn.wait_connected(options.connect_timeout)
    except AuthenticationFailed as exc:
        raise Failure(_refused(options)) from exc
    except ConnectionFailed as exc:
        code = f" ({exc.code})" if exc.code is not None else ""
        raise Failure(f"the server at {options.url} refused this chat{code}: {exc}") from exc
    except TimeoutError as exc:
        raise Failure(
            f"cannot connect to {options.url} within {options.connect_timeout:g} s: "
            + _why(conn.last_error)
        ) from exc


async def chat(
    options: ChatOptions,
    *,
    hosting: Hosting | None = None,
    stdin: int = 0,
    stdout: TextIO | None = None,
) -> None:
    """Chat in ``options.room`` until ``/quit``, the end of input or cancellation. An expected
    failure raises :class:`Failure` (one line for the user)."""
    hosting = hosting if hosting is not None else Hosting()
    out = stdout if stdout is not None else sys.stdout
    interactive = os.isatty(stdin) and out.isatty()
    screen = Screen(out, options.room, interactive=interactive, colour=out.isatty())
    host, port = _host_port(options.url)
    try:
        os.makedirs(os.path.dirname(options.journal_dir), exist_ok=True)
    except OSError as exc:
        raise Failure(f"cannot use --data {options.data_dir}: {exc.strerror or exc}") from exc
    with _cbreak(stdin, interactive), _log_into(screen, options.debug):
        try:
            async with trio.open_nursery() as nursery:
                server = _EmbeddedServer(nursery, options.data_dir, host, port, hosting)
                why = await _unreachable(host, port)
                if why is not None:
                    if not (options.embedded_server and _is_local(host)):
                        raise Failure(f"cannot reach {options.url}: {why}")
                    await server.start()
                    screen.info(
                        f"nothing listened at {options.url}: this chat runs the server (data in "
                        f"{options.data_dir}); keep it open while others chat"
                    )
                token = options.token
                if token is None:
                    token = make_token(load_secret(options.data_dir, create=False), options.name)
                try:
                    with single_error():
                        async with open_realtime(
                            options.url,
                            journal_dir=options.journal_dir,
                            token=token,
                            config=_config(options),
                        ) as conn:
                            await _wait_connected(conn, options)
                            await _Room(conn, options, screen, server, token).run(stdin)
                except JournalLocked as exc:
                    raise Failure(
                        f"{options.name} is already chatting here ({exc.holder} holds the journal "
                        f"{exc.directory}): close that chat, or choose another --name"
                    ) from exc
                nursery.cancel_scope.cancel()
        finally:
            screen.close()


# --- the demo ------------------------------------------------------------------------------------


async def demo_sender(url: str, journal_dir: str, token: str, total: int, report: int) -> None:
    """The demo's client process: sends ``{"n": i}`` for i up to ``total`` - 1, continuing where
    its journal says it stopped; writes each seq whose send returned to file descriptor ``report``."""
    config = RealtimeConfig(initial_retry_delay=0.05, max_retry_delay=0.5, close_grace_period=30)
    async with open_realtime(url, journal_dir=journal_dir, token=token, config=config) as conn:
        for n in range(conn.last_seq, total):
            receipt = await conn.send("demo", "count", {"n": n, "from": "bob"})
            os.write(report, f"{receipt.seq}\n".encode())
            await trio.sleep(0.01)  # paced, so the demo can kill it midway
        await conn.drain()


async def demo(*, out: Out = print, total: int = 400) -> bool:
    """Two clients, a server restart and a client SIGKILL; prints a summary; True if nothing was
    lost or duplicated."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trio-realtime-demo-") as tmp:
        server_dir = os.path.join(tmp, "server")
        secret = load_or_create_secret(server_dir)
        config = RealtimeConfig(
            initial_retry_delay=0.05, max_retry_delay=0.5, close_grace_period=10
        )
        async with trio.open_nursery() as nursery:
            server_scopes: list[trio.CancelScope] = []
            server_stopped: list[trio.Event] = []

            async def run_server(
                port: int, *, task_status: trio.TaskStatus[RealtimeServer]
            ) -> None:
                scope = trio.CancelScope()
                stopped = trio.Event()
                server_scopes.append(scope)
                server_stopped.append(stopped)
                try:
                    with scope:
                        await serve(server_dir, port=port, task_status=task_status)
                finally:
                    stopped.set()

            port = (await nursery.start(run_server, 0)).port
            url = f"ws://127.0.0.1:{port}/realtime"
            out(f"* server listening on {url} (SQLite in {server_dir})")
            received: list[Message] = []
            gaps: list[Gap] = []
            all_in = trio.Event()
            async with open_realtime(
                url,
                journal_dir=os.path.join(tmp, "alice"),
                token=make_token(secret, "alice"),
                config=config,
            ) as alice:
                await alice.subscribe("demo")

                async def watch() -> None:
                    async for item in alice.messages("demo"):
                        if isinstance(item, Gap):
                            gaps.append(item)
                        else:
                            received.append(item)
                        if len(received) >= total + 100:
                            all_in.set()

                nursery.start_soon(watch)
                bob_dir = os.path.join(tmp, "bob")
                token = make_token(secret, "bob")

                procs: list[subprocess.Popen[bytes]] = []

                def start_bob() -> tuple[subprocess.Popen[bytes], int]:
                    read_fd, write_fd = os.pipe()
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "trio_realtime",
                            "_demo-sender",
                            url,
                            bob_dir,
                            token,
                            str(total),
                            str(write_fd),
                        ],
                        pass_fds=[write_fd],
                    )
                    procs.append(proc)
                    os.close(write_fd)
                    return proc, read_fd

                returned: set[int] = set()

                async def read_reports(fd: int) -> None:
                    stream = trio.lowlevel.FdStream(fd)
                    buffer = b""
                    async for chunk in stream:
                        buffer += chunk
                        *done, buffer = buffer.split(b"\n")
                        returned.update(int(x) for x in done if x)

                bob, fd = start_bob()
                nursery.start_soon(read_reports, fd)
                out("* bob (a separate process) is sending; alice sends too")
                try:
                    for i in range(100):
                        await alice.send("demo", "count", {"n": i, "from": "alice"})
                        if i == 30:
                            server_scopes[-1].cancel()
                            out("* server stopped (alice and bob keep sending into their journals)")
                        if i == 50:
                            await server_stopped[-1].wait()  # its port is free again
                            await nursery.start(run_server, port)
                            out("* server restarted on the same port with the same data")
                        if i == 70:
                            bob.send_signal(signal.SIGKILL)
                            await trio.to_thread.run_sync(bob.wait)
                            out(
                                f"* bob SIGKILLed after {len(returned)} sends returned; restarting it"
                            )
                            bob, fd = start_bob()
                            nursery.start_soon(read_reports, fd)
                        await trio.sleep(0.01)
                    with trio.fail_after(120):
                        code = await trio.to_thread.run_sync(bob.wait, abandon_on_cancel=True)
                    await alice.drain()
                    with trio.move_on_after(30):
                        await all_in.wait()
                    reconnects = alice.total_reconnects
                finally:
                    for proc in procs:  # never leave a child behind, whatever happened
                        if proc.poll() is None:
                            proc.kill()
            nursery.cancel_scope.cancel()
    from_bob = [m.payload["n"] for m in received if m.payload.get("from") == "bob"]
    from_alice = [m.payload["n"] for m in received if m.payload.get("from") == "alice"]
    offsets = [m.offset for m in received]
    ok = (
        code == 0
        and from_bob == list(range(total))
        and from_alice == list(range(100))
        and offsets == list(range(1, len(offsets) + 1))
        and not gaps
    )
    lost = total - len(set(from_bob)) + 100 - len(set(from_alice))
    duplicated = len(from_bob) - len(set(from_bob)) + len(from_alice) - len(set(from_alice))
    out("")
    out(f"sent:        bob {total} (in two processes, one SIGKILLed), alice 100")
    out(
        f"received:    {len(received)} messages by alice, offsets 1..{offsets[-1] if offsets else 0}"
    )
    out(f"lost:        {lost}")
    out(f"duplicated:  {duplicated}")
    out(f"in order:    {from_bob == sorted(from_bob) and from_alice == sorted(from_alice)}")
    out(f"gaps:        {len(gaps)}; alice made {reconnects} reconnect attempts (each retry counts)")
    out(
        f"result:      {'OK: nothing lost, nothing duplicated' if ok else 'FAILED'} ({time.monotonic() - started:.1f} s)"
    )
    return ok
