"""The transport conformance kit: :func:`check_transport` checks that a transport keeps the
:class:`~trio_realtime.transports.Transport` contract, for a new transport's own tests.

Checking a transport
--------------------

Give :func:`check_transport` a factory of connected pairs, and call it from a trio test::

    @asynccontextmanager
    async def my_pair():
        async with open_my_link() as (client_end, server_end):
            yield client_end, server_end

    async def test_my_transport_keeps_the_contract():
        await check_transport(my_pair)

``make_pair()`` is an async context manager yielding ``(client_end, server_end)``: two ends of
one fresh, open link. The kit opens a new pair for each check (and each direction), closes both
ends when the check is done, and leaves the rest of the clean-up to the context manager. Every
wait is bounded (``step_timeout`` seconds per step), so a transport that hangs fails instead of
hanging the test. A failure is an :class:`AssertionError` naming the rule broken and which end
did what.

The contract, as checked (both ways: client end to server end, and back):

* Messages arrive whole, once, in the order sent. :meth:`~Transport.send` takes a ``str`` or
  UTF-8 ``bytes``; the receiver gets the same text either way, as a ``str`` or as its UTF-8
  ``bytes`` (the transport's choice: the WebSocket transport sends text frames and gives ``str``,
  the memory transport gives back the object it was given). Receivers must accept both; the
  protocol's codec does. (Rule: the *text* is the message; its Python type is not.)
* A large message (``large_message`` bytes of text, 4 MiB by default) arrives whole.
* One task sends while another receives, on both ends at once.
* ``aclose(code, reason)`` reaches the peer: its :meth:`~Transport.receive` returns the messages
  sent before the close, then raises :class:`~trio_realtime.transports.LinkClosed` with that code
  and reason (``aclose()`` with no arguments: code 1000).
* Closing is harmless whenever it happens: twice, after :meth:`~Transport.abort`, after the peer
  closed; it returns without error in bounded time, and the peer still sees the first close.
* :meth:`~Transport.abort` drops the link: the peer's receive raises ``LinkClosed`` with code
  1006 (or ``None``, for a transport without codes).
* After this end's ``aclose()`` or ``abort()``, its send and receive raise ``LinkClosed`` (never
  another error, never a hang), messages that were waiting included; a receive already waiting
  in another task when this end closes raises ``LinkClosed`` too.
* Once receive has raised ``LinkClosed`` for the peer's close or abort, receive and send keep
  raising ``LinkClosed``. (Before that, a send may still succeed: a network transport cannot know
  of the close sooner.)
"""

from __future__ import annotations

import reprlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from typing import NoReturn, TypeVar

import trio
import trio.testing

from ..transports import LinkClosed, Transport

__all__ = ["check_transport"]

T = TypeVar("T")

#: Makes one connected pair of ends, ``(client_end, server_end)``, for the duration of the block.
PairFactory = Callable[[], AbstractAsyncContextManager[tuple[Transport, Transport]]]

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 80


# --- The rules, as the failures name them -----------------------------------------------------

ORDER = "each message sent is received whole, once, and in the order sent"
TEXT = (
    "receive() gives the text that was sent, as str or as its UTF-8 bytes, whether send() "
    "was given str or UTF-8 bytes"
)
LARGE = "a large message arrives whole"
CONCURRENT = "one task sends while another receives, on both ends at once"
CLOSE_CODE = (
    "aclose(code, reason) reaches the peer: its receive() returns the messages sent before the "
    "close, then raises LinkClosed with that code and reason (aclose(): code 1000)"
)
CLOSE_HARMLESS = (
    "aclose() is harmless whenever it is called (twice, after abort(), after the peer closed): "
    "it returns without error in bounded time, and the peer still sees the first close"
)
ABORT = "abort() drops the link: the peer's receive() raises LinkClosed with code 1006 or None"
OWN_CLOSE = (
    "after this end's aclose() or abort(), its send() and receive() raise LinkClosed (never "
    "another error, never a hang), even with messages waiting"
)
WAKES = "a receive() waiting in another task when this end closes or aborts raises LinkClosed"
PEER_CLOSE = (
    "once receive() raised LinkClosed for the peer's close or abort, receive() and send() keep "
    "raising LinkClosed"
)

CLOSE_REASON = "check_transport: closing"


def _short(value: object) -> str:
    if isinstance(value, str | bytes) and len(value) > 200:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{len(value)} {unit} starting {value[:40]!r}"
    return _repr.repr(value)


def _first_difference(got: str, want: str) -> str:
    if len(got) != len(want):
        return f"{len(got)} characters received, {len(want)} sent"
    index = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
    return (
        f"same length ({len(want)}), first difference at character {index}: "
        f"{got[index : index + 20]!r} received, {want[index : index + 20]!r} sent"
    )


class _Check:
    """One check on one pair: ``a`` acts, ``b`` is its peer."""

    def __init__(
        self, name: str, a: Transport, b: Transport, a_name: str, b_name: str, timeout: float
    ) -> None:
        self.name = name
        self.a, self.b = a, b
        self.names = {id(a): a_name, id(b): b_name}
        self.timeout = timeout

    def __getitem__(self, end: Transport) -> str:
        return self.names[id(end)]

    def failure(self, rule: str, detail: str) -> AssertionError:
        return AssertionError(f"check_transport [{self.name}] {rule}.\n  {detail}")

    def fail(self, rule: str, detail: str) -> NoReturn:
        raise self.failure(rule, detail)

    @contextmanager
    def within(self, rule: str, what: str) -> Iterator[None]:
        """Bound a step: a hang is a failure of ``rule``."""
        try:
            with trio.fail_after(self.timeout):
                yield
        except trio.TooSlowError:
            self.fail(rule, f"{what} did not return within {self.timeout} s")

    async def call(self, rule: str, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """``step()``, which must return (in bounded time, without raising)."""
        with self.within(rule, what):
            try:
                return await step()
            except Exception as exc:
                self.fail(rule, f"{what} raised {exc!r}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def closed(
        self, rule: str, what: str, step: Callable[[], Awaitable[object]]
    ) -> LinkClosed:
        """``step()``, which must raise LinkClosed (in bounded time)."""
        with self.within(rule, what):
            try:
                result = await step()
            except LinkClosed as exc:
                return exc
            except Exception as exc:
                self.fail(rule, f"{what} raised {exc!r}, not LinkClosed")
        raise self.failure(rule, f"{what} returned {_short(result)} instead of raising LinkClosed")

    async def send(self, rule: str, end: Transport, data: bytes | str, what: str) -> None:
        await self.call(rule, f"{self[end]}.send({what})", lambda: end.send(data))

    async def receive(self, rule: str, end: Transport, what: str) -> str:
        """The text of the next message ``end`` receives."""
        got = await self.call(rule, f"{self[end]}.receive() ({what})", end.receive)
        if isinstance(got, str):
            return got
        if isinstance(got, bytes):
            try:
                return got.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(TEXT, f"{self[end]}.receive() ({what}) gave bytes that are not UTF-8")
        raise self.failure(
            TEXT, f"{self[end]}.receive() ({what}) gave {type(got).__name__}, not str or bytes"
        )

    async def stream(
        self, rule: str, sender: Transport, receiver: Transport, messages: list[bytes | str]
    ) -> None:
        """Send ``messages`` from ``sender`` (one task) while ``receiver`` receives (another):
        they must arrive as sent."""
        direction = f"{self[sender]} -> {self[receiver]}"

        async def send_all() -> None:
            for i, message in enumerate(messages):
                await self.send(rule, sender, message, f"message #{i}")

        async def receive_all() -> None:
            for i, message in enumerate(messages):
                want = message.decode("utf-8") if isinstance(message, bytes) else message
                got = await self.receive(
                    rule, receiver, f"waiting for message #{i} of {len(messages)}, {direction}"
                )
                if got != want:
                    self.fail(
                        rule,
                        f"{direction}: message #{i} sent as {type(message).__name__} "
                        f"{_short(want)}, received {_short(got)}"
                        + (f" ({_first_difference(got, want)})" if len(want) > 200 else ""),
                    )

        await _together(send_all, receive_all)

    async def close(self, rule: str, end: Transport, code: int | None = None) -> None:
        if code is None:
            await self.call(rule, f"{self[end]}.aclose()", end.aclose)
        else:
            await self.call(
                rule,
                f"{self[end]}.aclose({code}, {CLOSE_REASON!r})",
                lambda: end.aclose(code, CLOSE_REASON),
            )

    async def abort(self, rule: str, end: Transport) -> None:
        await self.call(rule, f"{self[end]}.abort()", end.abort)

    async def peer_sees(
        self, rule: str, end: Transport, codes: tuple[int | None, ...], reason: str | None, why: str
    ) -> LinkClosed:
        """``end``'s receive raises LinkClosed with one of ``codes`` (and ``reason``)."""
        exc = await self.closed(rule, f"{self[end]}.receive() after {why}", end.receive)
        if exc.code not in codes or (reason is not None and exc.reason != reason):
            want = " or ".join(str(c) for c in codes)
            self.fail(
                rule,
                f"{self[end]}.receive() after {why} raised LinkClosed(code={exc.code!r}, "
                f"reason={exc.reason!r}); expected code {want}"
                + (f" and reason {reason!r}" if reason is not None else ""),
            )
        return exc


async def _together(*steps: Callable[[], Awaitable[None]]) -> None:
    """Run ``steps`` concurrently; a failure comes out as itself, not in an ExceptionGroup."""
    with _unwrapped():
        async with trio.open_nursery() as nursery:
            for step in steps:
                nursery.start_soon(step)


@contextmanager
def _unwrapped() -> Iterator[None]:
    """A check's failure (an AssertionError) comes out of nurseries (ours, or one in the pair's
    context manager) as itself, not in an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        failed, _ = group.split(AssertionError)
        if failed is None:
            raise
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


# --- The checks ------------------------------------------------------------------------------

_TEXTS: list[bytes | str] = [
    "hello",
    b"bytes, sent as UTF-8",
    '{"type": "publish", "channel": "room:1", "payload": [1, 2.5, null, true]}',
    "non-ASCII text: \u00e9\u00fc\u00df \u20ac \u4e2d\u6587 \U0001f600",
    "non-ASCII bytes: caf\u00e9 \u20ac \U0001f600".encode(),
    "x",
    "  leading and trailing spaces, a\ttab and a\nnewline  ",
]


async def _check_order(c: _Check) -> None:
    numbered: list[bytes | str] = [
        f"message {i:03d}".encode() if i % 2 else f"message {i:03d} \u00e9" for i in range(200)
    ]
    await c.stream(ORDER, c.a, c.b, numbered)
    await c.stream(ORDER, c.b, c.a, numbered)
    await c.stream(TEXT, c.a, c.b, list(_TEXTS))
    await c.stream(TEXT, c.b, c.a, list(_TEXTS))


def _large_text(size: int, salt: str) -> str:
    """``size`` characters of numbered lines: a piece lost, doubled or moved changes the text."""
    text = "".join(f"{salt}{i:09d}\n" for i in range(size // (len(salt) + 10) + 1))
    return text[:size]


async def _check_large(c: _Check, size: int) -> None:
    rule = f"{LARGE} ({size} bytes)"
    await c.stream(rule, c.a, c.b, [_large_text(size, "a"), "after the large message"])
    await c.stream(rule, c.b, c.a, [_large_text(size, "b").encode(), "after the large message"])


async def _check_concurrent(c: _Check) -> None:
    def messages(prefix: str) -> list[bytes | str]:
        return [f"{prefix} {i:04d} " + "." * (i % 97) for i in range(500)]

    await _together(
        lambda: c.stream(CONCURRENT, c.a, c.b, messages(c[c.a])),
        lambda: c.stream(CONCURRENT, c.b, c.a, messages(c[c.b])),
    )


async def _check_close_code(c: _Check) -> None:
    await c.send(CLOSE_CODE, c.a, "sent before the close 1", "'sent before the close 1'")
    await c.send(CLOSE_CODE, c.a, b"sent before the close 2", "b'sent before the close 2'")
    await c.close(CLOSE_CODE, c.a, 4001)
    why = f"{c[c.a]}.aclose(4001, {CLOSE_REASON!r})"
    for i in (1, 2):
        got = await c.receive(CLOSE_CODE, c.b, f"message {i} sent before {why}")
        if got != f"sent before the close {i}":
            c.fail(
                CLOSE_CODE, f"{c[c.b]} received {_short(got)}, not message {i} sent before {why}"
            )
    await c.peer_sees(CLOSE_CODE, c.b, (4001,), CLOSE_REASON, why)


async def _check_default_close(c: _Check) -> None:
    await c.close(CLOSE_CODE, c.a)
    await c.peer_sees(CLOSE_CODE, c.b, (1000,), None, f"{c[c.a]}.aclose()")


async def _check_close_twice(c: _Check) -> None:
    await c.close(CLOSE_HARMLESS, c.a, 4002)
    await c.close(CLOSE_HARMLESS, c.a)
    await c.close(CLOSE_HARMLESS, c.a, 4003)
    await c.abort(CLOSE_HARMLESS, c.a)
    why = f"{c[c.a]}.aclose(4002, {CLOSE_REASON!r}) then aclose(), aclose(4003, ...), abort()"
    await c.peer_sees(CLOSE_HARMLESS, c.b, (4002,), CLOSE_REASON, why)
    # The peer closes too, after it saw the close, and again.
    await c.close(CLOSE_HARMLESS, c.b)
    await c.close(CLOSE_HARMLESS, c.b)


async def _check_close_after_abort(c: _Check) -> None:
    await c.abort(CLOSE_HARMLESS, c.a)
    await c.abort(CLOSE_HARMLESS, c.a)
    await c.close(CLOSE_HARMLESS, c.a, 4004)
    await c.peer_sees(ABORT, c.b, (1006, None), None, f"{c[c.a]}.abort() then aclose(4004, ...)")


async def _check_close_after_peer(c: _Check) -> None:
    # The peer closes, and this end closes without having received anything.
    await c.close(CLOSE_HARMLESS, c.b, 4005)
    await c.close(CLOSE_HARMLESS, c.a)
    await c.close(CLOSE_HARMLESS, c.a)


async def _check_abort(c: _Check) -> None:
    await c.abort(ABORT, c.a)
    await c.peer_sees(ABORT, c.b, (1006, None), None, f"{c[c.a]}.abort()")


async def _check_own_close(c: _Check, how: str) -> None:
    # A message waits for c.a (sent to it, never received) when it closes.
    await c.send(OWN_CLOSE, c.b, "waiting", "'waiting'")
    if how == "abort":
        await c.abort(OWN_CLOSE, c.a)
        done = f"{c[c.a]}.abort()"
    else:
        await c.close(OWN_CLOSE, c.a, 4006)
        done = f"{c[c.a]}.aclose(4006, ...)"
    for attempt in ("", " again"):
        await c.closed(OWN_CLOSE, f"{c[c.a]}.send(){attempt} after {done}", lambda: c.a.send("x"))
        await c.closed(OWN_CLOSE, f"{c[c.a]}.receive(){attempt} after {done}", c.a.receive)
    await c.closed(
        OWN_CLOSE, f"{c[c.a]}.send(bytes) after {done}", lambda: c.a.send(b"bytes after the close")
    )


async def _check_wakes(c: _Check, how: str) -> None:
    done = f"{c[c.a]}.{how}() from another task"
    woken = trio.Event()

    async def receive() -> None:
        await c.closed(WAKES, f"{c[c.a]}.receive() waiting when {done}", c.a.receive)
        woken.set()

    async def close() -> None:
        with trio.move_on_after(c.timeout):
            await trio.testing.wait_all_tasks_blocked()  # the receive is waiting
        if how == "abort":
            await c.abort(WAKES, c.a)
        else:
            await c.close(WAKES, c.a, 4007)
        with c.within(WAKES, f"{c[c.a]}.receive() waiting when {done}"):
            await woken.wait()

    await _together(receive, close)


async def _check_peer_close(c: _Check, how: str) -> None:
    if how == "abort":
        await c.abort(PEER_CLOSE, c.b)
        why = f"{c[c.b]}.abort()"
    else:
        await c.close(PEER_CLOSE, c.b, 4008)
        why = f"{c[c.b]}.aclose(4008, ...)"
    if how == "abort":
        await c.peer_sees(ABORT, c.a, (1006, None), None, why)
    else:
        await c.peer_sees(CLOSE_CODE, c.a, (4008,), CLOSE_REASON, why)
    for attempt in ("again ", "a third time "):
        await c.closed(PEER_CLOSE, f"{c[c.a]}.receive() {attempt}after {why}", c.a.receive)
        await c.closed(PEER_CLOSE, f"{c[c.a]}.send() {attempt}after {why}", lambda: c.a.send("x"))


# --- The kit ---------------------------------------------------------------------------------


async def check_transport(
    make_pair: PairFactory,
    *,
    large_message: int = 4 * 1024 * 1024,
    step_timeout: float = 10.0,
) -> None:
    """Check that a transport keeps the :class:`~trio_realtime.transports.Transport` contract
    (the rules are listed in this module's docstring); raises :class:`AssertionError` naming the
    rule it broke. Call it from a trio test of your transport::

        async def test_my_transport_keeps_the_contract():
            await check_transport(my_pair)

    ``make_pair()`` returns an async context manager yielding ``(client_end, server_end)``, two
    connected, open ends; it is entered once per check and direction. ``large_message``: the size
    in bytes of the large message (lower it to your transport's limit if that is below 4 MiB).
    ``step_timeout``: the longest any one step (a send, a receive, a close) may take.
    """
    checks: list[tuple[str, Callable[[_Check], Awaitable[None]]]] = [
        ("order", _check_order),
        ("large", lambda c: _check_large(c, large_message)),
        ("concurrent", _check_concurrent),
        ("close code", _check_close_code),
        ("default close", _check_default_close),
        ("close twice", _check_close_twice),
        ("close after abort", _check_close_after_abort),
        ("close after the peer", _check_close_after_peer),
        ("abort", _check_abort),
        ("send/receive after aclose", lambda c: _check_own_close(c, "aclose")),
        ("send/receive after abort", lambda c: _check_own_close(c, "abort")),
        ("aclose wakes a receive", lambda c: _check_wakes(c, "aclose")),
        ("abort wakes a receive", lambda c: _check_wakes(c, "abort")),
        ("after the peer's aclose", lambda c: _check_peer_close(c, "aclose")),
        ("after the peer's abort", lambda c: _check_peer_close(c, "abort")),
    ]
    for name, check in checks:
        for forward in (True, False):
            with _unwrapped():
                async with _pair(make_pair, step_timeout) as (client, server):
                    if forward:
                        c = _Check(name, client, server, "client_end", "server_end", step_timeout)
                    else:
                        c = _Check(name, server, client, "server_end", "client_end", step_timeout)
                    await check(c)
                    # Both ends close cleanly at the end of every check.
                    await c.close(CLOSE_HARMLESS, c.a)
                    await c.close(CLOSE_HARMLESS, c.b)


@asynccontextmanager
async def _pair(
    make_pair: PairFactory, close_within: float
) -> AsyncIterator[tuple[Transport, Transport]]:
    """A pair from ``make_pair``, whose ends are closed (best effort) if a check fails."""
    async with make_pair() as (client, server):
        try:
            yield client, server
        except BaseException:
            with trio.move_on_after(close_within) as scope:
                scope.shield = True
                for end in (client, server):
                    with suppress(Exception):  # the check's failure is what matters
                        await end.aclose()
            raise
