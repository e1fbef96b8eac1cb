"""Every exception trio_realtime raises, in one place.

The hierarchy follows trio's Closed-versus-Broken distinction:

* :class:`RealtimeClosedError` means *you* closed the object (or left its ``async with`` block) and then
  used it again. It is a bug in the calling code, like :class:`trio.ClosedResourceError`.
* :class:`RealtimeBrokenError` means something outside your control failed (a disk, a peer, a link) and
  the object can no longer keep its promises, like :class:`trio.BrokenResourceError`.

Everything derives from :class:`RealtimeError`, so ``except RealtimeError`` catches all of our errors and
nothing else. This module imports nothing from the rest of the package.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ConfigError",
    "ConnectTimeout",
    "ConnectionFailed",
    "JournalBroken",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "LinkClosed",
    "LocalProtocolError",
    "OutboxFull",
    "ProtocolError",
    "RealtimeBrokenError",
    "RealtimeClosedError",
    "RealtimeError",
    "RemoteProtocolError",
    "RequestRefused",
    "StoreConflict",
    "TokenRefreshFailed",
]


class RealtimeError(Exception):
    """Base class of every error raised by trio_realtime."""


class RealtimeClosedError(RealtimeError):
    """The object was closed by this process and then used again."""


class RealtimeBrokenError(RealtimeError):
    """The object failed because of something outside the caller's control and cannot be used."""


class RequestRefused(RealtimeError):
    """The server refused a request (a subscription, a receipts query...). ``code`` is the
    server's error code, e.g. ``"forbidden"``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class OutboxFull(RealtimeError):
    """``send`` found the outbox full and ``outbox_full="raise"`` is configured.

    Attributes:
        pending: events waiting for an ack.
        pending_bytes: their encoded size.
    """

    def __init__(self, pending: int, pending_bytes: int) -> None:
        super().__init__(
            f"the outbox is full: {pending} events ({pending_bytes} bytes) unacknowledged"
        )
        self.pending = pending
        self.pending_bytes = pending_bytes


class ConfigError(RealtimeError, ValueError):
    """A configuration value is invalid. Raised at construction, naming the option.

    Attributes:
        option: the name of the offending option.
        message: what is wrong with it.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message

    def renamed(self, option: str) -> ConfigError:
        """The same error about ``option`` (e.g. a field named by where it was written)."""
        return ConfigError(option, self.message)


# --- wire protocol -------------------------------------------------------------------------------


class ProtocolError(RealtimeError):
    """The wire protocol (PROTOCOL.md) was broken, by the peer (:class:`RemoteProtocolError`) or by
    this side (:class:`LocalProtocolError`). Catch the subclass you mean: they call for opposite
    actions (close the link and retry, or fix the calling code).

    Attributes:
        field: the JSON field at fault (dotted path, e.g. ``"channels.room:1.offset"``), or ``None`` when
            the message as a whole is at fault (not JSON, wrong frame for the state, ...).
        close_code: the WebSocket close code the connection should be closed with.
    """

    def __init__(self, message: str, *, field: str | None = None, close_code: int = 4000) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.close_code = close_code


class RemoteProtocolError(ProtocolError):
    """Data received from the peer breaks the wire protocol: the link must be closed with
    ``close_code``. A client then reconnects; the peer's next message may be fine."""


class LocalProtocolError(ProtocolError):
    """This side tried to send something the protocol forbids in the current state, or could not
    encode it: a bug in the calling code, raised to it and never retried as a link failure."""


# --- links and connections -----------------------------------------------------------------------


class LinkClosed(RealtimeBrokenError):
    """A link (a :class:`~trio_realtime.transports.Transport`) is closed: by either side, or dropped
    (``code`` 1006), or it could not be opened (``code`` ``None``). A connection treats it as a
    link failure and reconnects.

    Attributes:
        code: the WebSocket close code, or ``None`` when there was none.
        reason: the close reason, or why the link could not be opened.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        if code is None:
            text = f"link closed: {reason}" if reason else "link closed"
        else:
            text = f"link closed ({code}{': ' + reason if reason else ''})"
        super().__init__(text)
        self.code = code
        self.reason = reason


class ConnectionFailed(RealtimeBrokenError):
    """The connection reached the ``failed`` state.

    Attributes:
        code: the last close code, if the server sent one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectTimeout(RealtimeBrokenError, TimeoutError):
    """``wait_connected(timeout)`` ran out: the connection is still trying (it goes on trying in
    the background; nothing sent is lost).

    Attributes:
        last_error: why the last attempt failed (a :class:`LinkClosed`), if one did.
    """

    def __init__(self, message: str, last_error: LinkClosed | None) -> None:
        super().__init__(message)
        self.last_error = last_error


class AuthenticationFailed(ConnectionFailed):
    """The server kept refusing the token (close 4001): there was no auth delegate to refresh
    it, the delegate failed, or ``max_auth_failures`` refreshed tokens were refused in a row."""


class TokenRefreshFailed(RealtimeError):
    """The function that fetches tokens raised, or returned something that is not a token."""


# --- server stores -------------------------------------------------------------------------------


class StoreConflict(RealtimeError):
    """A :meth:`Store.write` found rows other than its preconditions say (another writer, such as
    another server node, wrote first): nothing was written. Load again and plan again."""


# --- client journal ------------------------------------------------------------------------------


class JournalError(RealtimeError):
    """Base class of the journal's errors."""


class JournalLocked(JournalError):
    """Another process holds the journal directory's lock.

    Attributes:
        directory: the journal directory.
        pid: the process id written by the holder, or ``None`` if it could not be read.
    """

    def __init__(self, directory: str, pid: int | None) -> None:
        self.holder = f"process {pid}" if pid is not None else "another process"
        """Who holds it, in words ("process 1234")."""
        super().__init__(f"journal {directory!r} is locked by {self.holder}")
        self.directory = directory
        self.pid = pid


class JournalCorrupt(JournalError):
    """A journal record is damaged and valid records follow it: this is not a torn tail from a crash,
    so recovery refuses to skip it silently.

    Attributes:
        segment: path of the damaged segment file.
        offset: byte offset of the damaged record inside that segment.
    """

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        super().__init__(f"journal segment {segment!r} is corrupt at byte {offset}: {reason}")
        self.segment = segment
        self.offset = offset
        self.reason = reason


class JournalClosed(JournalError, RealtimeClosedError):
    """The journal was closed by this process and then used."""


class JournalBroken(JournalError, RealtimeBrokenError):
    """A write or fsync failed (ENOSPC, EIO, ...). The journal has failed closed: this append and every
    later one raise this error, because data whose fsync failed can never be assumed safe.

    Attributes:
        errno: the OS error number of the first failure, when there was one.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
