"""The store conformance kit: :func:`check_store` checks that a server store keeps the store
contract (:class:`~trio_realtime.server.Store`), for a third-party store's own tests."""

from __future__ import annotations

import reprlib
import secrets
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, NoReturn

import attrs
import trio

from ..server import (
    Append,
    ChannelInfo,
    ClientRow,
    ClientUpdate,
    Message,
    Notice,
    PresenceEntry,
    SharedStore,
    Snapshot,
    Store,
    StoreConflict,
    WriteBatch,
)

__all__ = ["check_store"]

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 200
_repr.maxlist = _repr.maxdict = _repr.maxtuple = 8


def _short(value: object) -> str:
    return _repr.repr(value)


def _row(value: object) -> str:
    return "no row" if value is None else _short(value)


# --- The rules, as the failures name them ---------------------------------------------------

OPEN = "open(), load() and aclose() work on a store made by make_store()"
EPOCH = "Snapshot.epoch is a non-empty str, the same in every load (and after a reopen)"
ABSENT = "load() returns only rows that exist: an empty Snapshot for rows never written"
ONLY_ASKED = "load() returns only the rows asked for"
EMPTY_BATCH = "an empty WriteBatch is accepted and changes nothing"
CHANNEL_ROW = (
    "a channel's row (load(channels=...)) is ChannelInfo(epoch of its first append, "
    "head = offset of its newest event, first = oldest retained offset or head + 1)"
)
READ = (
    "read(channel, after, limit) returns the retained events with offset > after, oldest first, "
    "every field as written: exactly `limit` of them when there are more (the server takes a "
    "short page for the end of the log), [] past the head"
)
CLIENT_ROW = "a ClientUpdate writes its `after` row, and load(clients=...) returns it as written"
CLIENT_PRECONDITION = (
    "a ClientUpdate applies only if the client's row is its `before` (None: no row), else "
    "write() raises StoreConflict"
)
APPEND_PRECONDITION = (
    "an Append applies only if the channel's head is its `after` (0: no row), else write() "
    "raises StoreConflict"
)
ATOMIC = "a write that raises StoreConflict applies nothing of its batch (atomicity)"
APPLIES = "a write whose preconditions hold applies (no StoreConflict)"
KEYS = (
    "a key row (user, key) is stored at its batch's time, replacing an older row of the pair, "
    "and load(keys=...) returns it"
)
FORGET_KEYS = "forget_keys_before drops the key rows stored before it, and only those"
KEEP_FROM = "retention: keep_from drops the channel's events with lower offsets (head stays)"
DROP_BEFORE = (
    "retention: drop_before drops the channel's events stored (batch time) before it, "
    "and no other channel's"
)
ALL_DROPPED = (
    "a channel whose every event is dropped keeps its row: its epoch and head, first = head + 1, "
    "and the next append continues after that head"
)
RECEIPTS = (
    "mark_read raises a reader's watermark only forwards and returns whether it moved; "
    "receipts(channel) returns every reader's watermark in that channel"
)
CONCURRENT = "concurrent writes to different rows all apply"
RACE = (
    "of two concurrent writes with the same precondition (same channel and `after`, or same "
    "client and `before`), exactly one applies and the other raises StoreConflict"
)
LARGE = "a 1 MiB event, and 5,000 events in one append, round-trip through write() and read()"
PERSISTENT = (
    "a persistent store keeps everything (rows, events, keys, receipts, its epoch) when closed "
    "and reopened (a new make_store() on the same data)"
)
AFTER_REOPEN = "a reopened store takes writes that continue from the rows it had"


# --- A model of what the kit wrote: the contract, applied the simplest way -------------------


@attrs.define
class _Log:
    epoch: str
    head: int
    events: list[tuple[float, Message]] = attrs.Factory(list)

    def info(self) -> ChannelInfo:
        first = self.events[0][1].offset if self.events else self.head + 1
        return ChannelInfo(self.epoch, self.head, first)


@attrs.define
class _Model:
    epoch: str = ""
    logs: dict[str, _Log] = attrs.Factory(dict)
    clients: dict[str, ClientRow] = attrs.Factory(dict)
    keys: dict[tuple[str, str], float] = attrs.Factory(dict)
    receipts: dict[str, dict[str, int]] = attrs.Factory(dict)

    def head(self, channel: str) -> int:
        log = self.logs.get(channel)
        return log.head if log is not None else 0

    def conflict(self, batch: WriteBatch) -> str | None:
        """Why ``batch`` must be refused (a failed precondition), or ``None``."""
        for append in batch.appends:
            head = self.head(append.channel)
            if head != append.after:
                return f"Append to {append.channel!r} after {append.after}, but its head is {head}"
        for update in batch.clients:
            row = self.clients.get(update.client_id)
            if row != update.before:
                return (
                    f"ClientUpdate of {update.client_id!r} with before={update.before!r}, "
                    f"but its row is {row!r}"
                )
        return None

    def apply(self, batch: WriteBatch) -> None:
        for append in batch.appends:
            log = self.logs.get(append.channel)
            if log is None:
                log = self.logs[append.channel] = _Log(append.epoch, 0)
            log.events.extend((batch.time, event) for event in append.events)
            if append.events:
                log.head = append.events[-1].offset
            log.events = [
                (at, event)
                for at, event in log.events
                if event.offset >= append.keep_from and at >= append.drop_before
            ]
        for update in batch.clients:
            self.clients[update.client_id] = update.after
        for key in batch.keys:
            self.keys[key] = batch.time
        if batch.forget_keys_before is not None:
            cutoff = batch.forget_keys_before
            self.keys = {key: at for key, at in self.keys.items() if at >= cutoff}


# --- The kit ---------------------------------------------------------------------------------


class _Kit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.model = _Model()
        self.prefix = f"check-store-{secrets.token_hex(4)}"
        self.check = "setup"
        self._clock = 0.0
        # Every name the kit used (rows that must exist, and rows that must not).
        self.channels: set[str] = set()
        self.clients: set[str] = set()
        self.keys: set[tuple[str, str]] = set()
        self.receipt_channels: set[str] = set()

    # Names, times, failures.

    def name(self, what: str) -> str:
        return f"{self.prefix}/{self.check}/{what}"

    def later(self) -> float:
        """A batch time after every earlier one (1000.0, 2000.0, ...)."""
        self._clock += 1000.0
        return self._clock

    def fail(self, rule: str, detail: str, *, also: str | None = None) -> NoReturn:
        """Fail naming ``rule`` (what was being checked), the difference found, and the rule of
        the row that differs (``also``) if it is another."""
        message = f"check_store [{self.check}] {rule}.\n  {detail}"
        if also is not None and also != rule:
            message += f"\n  (rule: {also}.)"
        raise AssertionError(message)

    def expect(self, ok: bool, rule: str, detail: str) -> None:
        if not ok:
            self.fail(rule, detail)

    # Building batches.

    def events(
        self, channel: str, payloads: Sequence[Any], *, after: int | None = None
    ) -> tuple[Message, ...]:
        """Events for ``channel`` with offsets after its head (or ``after``)."""
        log = self.model.logs.get(channel)
        epoch = log.epoch if log is not None else self.model.epoch
        start = self.model.head(channel) if after is None else after
        return tuple(
            Message(
                channel,
                offset,
                epoch,
                "kit.event",
                payload,
                1_700_000_000_000 + offset,
                "kit-sender",
                None,
                1_700_000_000_500 + offset,
            )
            for offset, payload in enumerate(payloads, start + 1)
        )

    def append(
        self,
        channel: str,
        payloads: Sequence[Any] = (),
        *,
        events: tuple[Message, ...] | None = None,
        after: int | None = None,
        keep_from: int = 0,
        drop_before: float = 0.0,
    ) -> Append:
        self.channels.add(channel)
        start = self.model.head(channel) if after is None else after
        if events is None:
            events = self.events(channel, payloads, after=start)
        log = self.model.logs.get(channel)
        epoch = log.epoch if log is not None else self.model.epoch
        return Append(channel, epoch, start, events, keep_from, drop_before)

    def update(self, client_id: str, before: ClientRow | None, after: ClientRow) -> ClientUpdate:
        self.clients.add(client_id)
        return ClientUpdate(client_id, before, after)

    # Writing, checked against the model.

    async def write(self, batch: WriteBatch, rule: str = APPLIES) -> bool:
        """Write ``batch``; the store must refuse it exactly when the model does (and then
        nothing of it may be visible: checked by the next :meth:`verify`). Returns whether it
        was applied."""
        for append in batch.appends:
            self.channels.add(append.channel)
        self.clients.update(update.client_id for update in batch.clients)
        self.keys.update(batch.keys)
        conflict = self.model.conflict(batch)
        try:
            await self.store.write(batch)
        except StoreConflict as exc:
            if conflict is None:
                self.fail(APPLIES, f"write() raised StoreConflict({exc}) for {_short(batch)}")
            return False
        if conflict is not None:
            self.fail(rule, f"write() did not raise StoreConflict: {conflict}")
        self.model.apply(batch)
        return True

    async def refused(self, batch: WriteBatch, rule: str) -> None:
        """Write a batch the store must refuse, and check that nothing of it shows."""
        assert self.model.conflict(batch) is not None, "the kit's own batch is not refused"
        await self.write(batch, rule)
        await self.verify(ATOMIC)

    # Reading, checked against the model.

    async def load(self, **wanted: Collection[Any]) -> Snapshot:
        snapshot = await self.store.load(**wanted)
        self.expect(isinstance(snapshot, Snapshot), OPEN, f"load() returned {_short(snapshot)}")
        self.expect(
            isinstance(snapshot.epoch, str) and bool(snapshot.epoch),
            EPOCH,
            f"epoch {snapshot.epoch!r}",
        )
        if not self.model.epoch:
            self.model.epoch = snapshot.epoch
        self.expect(
            snapshot.epoch == self.model.epoch,
            EPOCH,
            f"epoch {snapshot.epoch!r}, earlier {self.model.epoch!r}",
        )
        return snapshot

    async def verify(
        self,
        rule: str,
        *,
        channels: Iterable[str] | None = None,
        clients: Iterable[str] | None = None,
        keys: Iterable[tuple[str, str]] | None = None,
        receipts: Iterable[str] | None = None,
    ) -> None:
        """Check the store's rows against the model (every name the kit used, by default):
        a failure names ``rule`` (what was being checked) and the difference."""
        channels = sorted(self.channels if channels is None else channels)
        clients = sorted(self.clients if clients is None else clients)
        keys = sorted(self.keys if keys is None else keys)
        receipts = sorted(self.receipt_channels if receipts is None else receipts)
        snapshot = await self.load(channels=channels, clients=clients, keys=keys)
        model = self.model
        self._compare(
            rule,
            "channel",
            snapshot.channels,
            {name: log.info() for name, log in model.logs.items() if name in channels},
            channels,
        )
        self._compare(
            rule,
            "client",
            snapshot.clients,
            {name: row for name, row in model.clients.items() if name in clients},
            clients,
        )
        self._compare(
            rule,
            "key",
            snapshot.keys,
            {pair: at for pair, at in model.keys.items() if pair in keys},
            keys,
        )
        for channel in channels:
            await self.verify_reads(rule, channel)
        for channel in receipts:
            got = await self.store.receipts(channel)
            want = model.receipts.get(channel, {})
            if got != want:
                self.fail(
                    rule,
                    f"receipts({channel!r}) returned {_short(got)}, expected {_short(want)}",
                    also=RECEIPTS,
                )

    def _compare(
        self,
        rule: str,
        kind: str,
        got: dict[Any, Any],
        want: dict[Any, Any],
        asked: Collection[Any],
    ) -> None:
        extra = set(got) - set(asked)
        self.expect(not extra, ONLY_ASKED, f"{kind} rows not asked for: {_short(sorted(extra))}")
        for name in asked:
            if got.get(name) != want.get(name):
                what = {"channel": CHANNEL_ROW, "client": CLIENT_ROW, "key": KEYS}[kind]
                self.fail(
                    rule,
                    f"{kind} row {name!r}: load() returned {_row(got.get(name))}, expected "
                    f"{_row(want.get(name))}",
                    also=what,
                )

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        got = await self.store.read(channel, after, limit)
        self.expect(
            isinstance(got, list), READ, f"read({channel!r}, ...) returned {_short(type(got))}"
        )
        return got

    def _same(self, rule: str, call: str, got: list[Message], want: list[Message]) -> None:
        if got == want:
            return
        for index, (a, b) in enumerate(zip(got, want, strict=False)):
            if a != b:
                fields = [
                    field.name
                    for field in attrs.fields(Message)
                    if getattr(a, field.name) != getattr(b, field.name)
                ]
                self.fail(
                    rule,
                    f"{call}: event {index} differs in {', '.join(fields) or 'type'}: got "
                    f"{_short(a)}, expected {_short(b)}",
                    also=READ,
                )
        self.fail(
            rule,
            f"{call} returned {len(got)} events (offsets "
            f"{_short([getattr(e, 'offset', e) for e in got])}), expected {len(want)} (offsets "
            f"{_short([e.offset for e in want])})",
            also=READ,
        )

    async def verify_reads(self, rule: str, channel: str) -> None:
        log = self.model.logs.get(channel)
        want = [event for _, event in log.events] if log is not None else []
        head = log.head if log is not None else 0
        first = want[0].offset if want else head + 1
        whole = len(want) + 10
        self._same(rule, f"read({channel!r}, 0, {whole})", await self.read(channel, 0, whole), want)
        for after in (head, head + 1, head + 1000):
            got = await self.read(channel, after, 10)
            self._same(rule, f"read({channel!r}, {after}, 10) (past the head)", got, [])
        if len(want) <= 40:
            afters = set(range(head + 1))
            limits: tuple[int, ...] = (1, 2, 3, len(want) or 1)
        else:
            afters = {0, first - 2, first - 1, first, first + 1, (first + head) // 2, head - 1}
            afters = {after for after in afters if 0 <= after <= head}
            limits = (1, 997)
        for after in sorted(afters):
            wanted = [event for event in want if event.offset > after]
            for limit in limits:
                got = await self.read(channel, after, limit)
                self._same(rule, f"read({channel!r}, {after}, {limit})", got, wanted[:limit])
        # Paging through the whole log, as a subscriber catching up does.
        page = 7 if len(want) <= 40 else 997
        got = []
        after = 0
        while True:
            part = await self.read(channel, after, page)
            if not part:
                break
            got.extend(part)
            after = part[-1].offset
            if len(got) > len(want):
                break
        self._same(rule, f"read({channel!r}, after, {page}) page by page", got, want)


# --- The checks ------------------------------------------------------------------------------


async def _check_empty(kit: _Kit) -> None:
    channel, client, key = kit.name("channel"), kit.name("client"), (kit.name("user"), "key")
    kit.channels.add(channel)
    kit.clients.add(client)
    kit.keys.add(key)
    kit.receipt_channels.add(channel)
    snapshot = await kit.load(clients=[client], channels=[channel], keys=[key])
    kit.expect(
        not snapshot.clients and not snapshot.channels and not snapshot.keys,
        ABSENT,
        f"load() of rows never written returned {_short(snapshot)}",
    )
    await kit.load()
    await kit.verify(ABSENT)
    await kit.write(WriteBatch(kit.later()), EMPTY_BATCH)
    await kit.verify(EMPTY_BATCH)


#: Payloads that must round-trip as they are (JSON values).
PAYLOADS: tuple[Any, ...] = (
    {
        "nested": {"list": [1, 2.5, -3, True, False, None, "x", [], {}], "deep": [[[{"a": [1]}]]]},
        "unicode": "héllo wörld ✓ 日本語 🎉 \u2028 \u200d",
        "empty": "",
        "big": 2**63 - 1,
        "small": -(2**63),
        "float": 0.1,
        "huge": 1e300,
    },
    "a string",
    12345,
    None,
    [1, "two", {"three": 3}],
    True,
    0,
    -1.5,
    {},
    [],
)


async def _check_appends(kit: _Kit) -> None:
    channel = kit.name("röom 🎉")
    other = kit.name("other")
    events = kit.events(channel, PAYLOADS)
    events = tuple(
        attrs.evolve(
            event,
            event=f"kind-{i} ✓",
            sender=None if i % 3 == 0 else f"sénder-{i}",
            idempotency_key=None if i % 2 == 0 else f"key-{i} 🔑",
            timestamp=1_700_000_000_000 + i * 1001,
        )
        for i, event in enumerate(events)
    )
    time = kit.later()
    await kit.write(WriteBatch(time, appends=(kit.append(channel, events=events),)))
    info = (await kit.load(channels=[channel])).channels.get(channel)
    kit.expect(
        info == ChannelInfo(kit.model.epoch, len(events), 1),
        CHANNEL_ROW,
        f"after a first append of offsets 1..{len(events)} under the store's epoch: {info!r}",
    )
    await kit.verify(READ)
    # More appends continue the log; two channels in one batch.
    await kit.write(
        WriteBatch(
            kit.later(),
            appends=(kit.append(channel, ["more", {"n": 1}]), kit.append(other, ["first"])),
        )
    )
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(channel, ["last"]),)))
    await kit.verify(READ)


async def _check_clients(kit: _Kit) -> None:
    alice, nobody, many = kit.name("client-ä"), kit.name("client-none"), kit.name("client-")
    row = ClientRow("alicé", 3)
    await kit.write(WriteBatch(kit.later(), clients=(kit.update(alice, None, row),)))
    await kit.verify(CLIENT_ROW)
    newer = ClientRow("alicé", 7)
    await kit.write(WriteBatch(kit.later(), clients=(kit.update(alice, row, newer),)))
    await kit.verify(CLIENT_ROW)
    for wrong in (None, row, ClientRow("bob", 7), ClientRow(None, 7)):
        batch = WriteBatch(
            kit.later(), clients=(kit.update(alice, wrong, ClientRow("mallory", 99)),)
        )
        await kit.refused(batch, CLIENT_PRECONDITION)
    # A row with no owner yet; a `before` for a row that does not exist.
    unowned = ClientRow(None, 5)
    await kit.refused(
        WriteBatch(kit.later(), clients=(kit.update(nobody, ClientRow(None, 0), unowned),)),
        CLIENT_PRECONDITION,
    )
    await kit.write(WriteBatch(kit.later(), clients=(kit.update(nobody, None, unowned),)))
    await kit.write(
        WriteBatch(kit.later(), clients=(kit.update(nobody, unowned, ClientRow("bob", 5)),))
    )
    # Several rows in one batch, a watermark that goes back (the store keeps what it is told).
    await kit.write(
        WriteBatch(
            kit.later(),
            clients=tuple(kit.update(f"{many}{i}", None, ClientRow(f"u{i}", i)) for i in range(5)),
        )
    )
    await kit.write(
        WriteBatch(kit.later(), clients=(kit.update(alice, newer, ClientRow("alicé", 2)),))
    )
    await kit.verify(CLIENT_ROW)
    # The fencing generation is kept and is part of the precondition.
    fenced = ClientRow("alicé", 2, 5)
    await kit.write(
        WriteBatch(kit.later(), clients=(kit.update(alice, ClientRow("alicé", 2), fenced),))
    )
    await kit.verify(CLIENT_ROW)
    for wrong in (ClientRow("alicé", 2), ClientRow("alicé", 2, 4)):
        batch = WriteBatch(kit.later(), clients=(kit.update(alice, wrong, ClientRow("alicé", 9)),))
        await kit.refused(batch, CLIENT_PRECONDITION)
    await kit.write(
        WriteBatch(kit.later(), clients=(kit.update(alice, fenced, ClientRow("alicé", 3, 6)),))
    )
    await kit.verify(CLIENT_ROW)


async def _check_keys(kit: _Kit) -> None:
    user, other = kit.name("usér"), kit.name("other")
    k1, k2, k3 = ("order-1", "order-2 ✓", "order-3")
    t1 = kit.later()
    first = ((user, k1), (user, k2), (other, k1), ("", f"{kit.prefix}-anonymous"))
    await kit.write(WriteBatch(t1, keys=first))
    kit.keys.update({(user, k3), (kit.name("nobody"), k1)})  # never written: no rows
    snapshot = await kit.load(keys=sorted(kit.keys))
    want = dict.fromkeys(first, t1)
    got = {pair: at for pair, at in snapshot.keys.items() if pair in want}
    kit.expect(
        got == want and len(snapshot.keys) == len(want),
        KEYS,
        f"keys written at {t1}: load() returned {_short(snapshot.keys)}",
    )
    t2 = kit.later()
    await kit.write(WriteBatch(t2, keys=((user, k2),)))
    await kit.verify(KEYS)
    t3 = kit.later()
    await kit.write(WriteBatch(t3, keys=((user, k3),), forget_keys_before=(t1 + t2) / 2))
    snapshot = await kit.load(keys=[(user, k1), (user, k2), (user, k3), (other, k1)])
    kit.expect(
        snapshot.keys == {(user, k2): t2, (user, k3): t3},
        FORGET_KEYS,
        f"keys at {t1} (dropped), {t2} (re-stored) and {t3}, forget before {(t1 + t2) / 2}: "
        f"load() returned {_short(snapshot.keys)}",
    )
    await kit.verify(FORGET_KEYS)


async def _check_atomicity(kit: _Kit) -> None:
    taken, fresh = kit.name("taken"), kit.name("fresh")
    client, new_client = kit.name("client"), kit.name("new-client")
    user = kit.name("user")
    row = ClientRow("alice", 2)
    await kit.write(
        WriteBatch(
            kit.later(),
            appends=(kit.append(taken, ["a", "b"]),),
            clients=(kit.update(client, None, row),),
            keys=((user, "kept"),),
        )
    )
    await kit.verify(APPLIES)
    kit.clients.add(new_client)
    kit.keys.add((user, "new"))
    later = kit.later()
    # Everything that would apply, then the failing precondition last.
    await kit.refused(
        WriteBatch(
            later,
            appends=(kit.append(fresh, ["x", "y"]), kit.append(taken, ["late"], after=1)),
            clients=(kit.update(new_client, None, ClientRow("bob", 1)),),
            keys=((user, "new"),),
            forget_keys_before=later + 1,  # would drop "kept"
        ),
        APPEND_PRECONDITION,
    )
    await kit.refused(
        WriteBatch(
            later,
            appends=(kit.append(fresh, ["x"]), kit.append(taken, ["c"])),
            clients=(
                kit.update(new_client, None, ClientRow("bob", 1)),
                kit.update(client, ClientRow("alice", 1), ClientRow("alice", 3)),
            ),
            keys=((user, "new"),),
            forget_keys_before=later + 1,
        ),
        CLIENT_PRECONDITION,
    )
    await kit.refused(
        WriteBatch(
            later,
            appends=(kit.append(taken, ["c"]),),
            clients=(kit.update(client, None, ClientRow("mallory", 9)),),
        ),
        CLIENT_PRECONDITION,
    )
    await kit.refused(
        WriteBatch(later, appends=(kit.append(taken, ["c"], after=0),)), APPEND_PRECONDITION
    )
    await kit.refused(
        WriteBatch(later, appends=(kit.append(fresh, ["c"], after=1),)), APPEND_PRECONDITION
    )
    # The store still takes writes whose preconditions hold.
    await kit.write(
        WriteBatch(
            kit.later(),
            appends=(kit.append(taken, ["c"]), kit.append(fresh, ["x"])),
            clients=(kit.update(client, row, ClientRow("alice", 3)),),
            keys=((user, "new"),),
        )
    )
    await kit.verify(APPLIES)


async def _check_retention(kit: _Kit) -> None:
    counted, aged, untouched = kit.name("by-count"), kit.name("by-age"), kit.name("untouched")
    t1 = kit.later()
    await kit.write(
        WriteBatch(t1, appends=(kit.append(counted, [1, 2, 3, 4]), kit.append(untouched, [1, 2])))
    )
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(counted, [5, 6], keep_from=3),)))
    info = (await kit.load(channels=[counted])).channels.get(counted)
    kit.expect(
        info is not None and (info.head, info.first) == (6, 3),
        KEEP_FROM,
        f"offsets 1..6 with keep_from=3: {info!r}, expected head 6, first 3",
    )
    await kit.verify(KEEP_FROM)
    # Every event dropped: the row stays.
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(counted, [7], keep_from=8),)))
    info = (await kit.load(channels=[counted])).channels.get(counted)
    kit.expect(
        info == ChannelInfo(kit.model.epoch, 7, 8),
        ALL_DROPPED,
        f"offsets 1..7 with keep_from=8: {info!r}, expected {ChannelInfo(kit.model.epoch, 7, 8)!r}",
    )
    await kit.verify(ALL_DROPPED)
    await kit.refused(
        WriteBatch(kit.later(), appends=(kit.append(counted, ["again"], after=0),)),
        ALL_DROPPED,
    )
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(counted, [8]),)), ALL_DROPPED)
    await kit.verify(ALL_DROPPED)
    # By age: events stored at t2 are dropped by a later write's drop_before between t2 and t3.
    t2 = kit.later()
    await kit.write(WriteBatch(t2, appends=(kit.append(aged, [1, 2, 3]),)))
    t3 = kit.later()
    await kit.write(WriteBatch(t3, appends=(kit.append(aged, [4, 5], drop_before=(t2 + t3) / 2),)))
    info = (await kit.load(channels=[aged])).channels.get(aged)
    kit.expect(
        info is not None and (info.head, info.first) == (5, 4),
        DROP_BEFORE,
        f"offsets 1..3 stored at {t2}, 4..5 at {t3} with drop_before={(t2 + t3) / 2}: "
        f"{info!r}, expected head 5, first 4",
    )
    await kit.verify(DROP_BEFORE)
    t4 = kit.later()
    await kit.write(WriteBatch(t4, appends=(kit.append(aged, [6], drop_before=(t3 + t4) / 2),)))
    await kit.verify(DROP_BEFORE)


async def _check_receipts(kit: _Kit) -> None:
    channel, quiet = kit.name("channel"), kit.name("quiet")
    kit.receipt_channels.update({channel, quiet})
    model = kit.model.receipts.setdefault(channel, {})
    await kit.verify(RECEIPTS, channels=(), clients=(), keys=())
    for user, offset, moves in (
        ("alice", 5, True),
        ("alice", 3, False),
        ("alice", 5, False),
        ("zoë 🎉", 1, True),
        ("alice", 9, True),
        ("zoë 🎉", 2, True),
    ):
        moved = await kit.store.mark_read(channel, user, offset)
        kit.expect(
            bool(moved) == moves,
            RECEIPTS,
            f"mark_read({channel!r}, {user!r}, {offset}) at {model.get(user)} returned "
            f"{moved!r}, expected {moves}",
        )
        if moves:
            model[user] = offset
        await kit.verify(RECEIPTS, channels=(), clients=(), keys=())


PRESENCE = (
    "presence entries are kept by (channel, user, connection): put replaces, drop removes, and "
    "presence(), presence_channels() and presence_of() find exactly the entries there are"
)


async def _check_presence(kit: _Kit) -> None:
    store = kit.store
    room, hall = kit.name("room"), kit.name("hall")
    alice, bob = kit.name("alice"), kit.name("bob")

    def entry(channel: str, user: str, connection: str, **changes: Any) -> PresenceEntry:
        fields: dict[str, Any] = {
            "status": "online",
            "metadata": {"device": "phone", "n": [1, 2.5, None, "é 🎉"]},
            "since": 1_700_000_000_000,
            "updated": 1000.5,
        }
        fields.update(changes)
        return PresenceEntry(channel, user, connection, **fields)

    def key(e: PresenceEntry) -> tuple[str, str, str]:
        return (e.channel, e.user, e.connection)

    async def expect(entries: list[PresenceEntry]) -> None:
        for channel in (room, hall):
            want = sorted((e for e in entries if e.channel == channel), key=key)
            got = sorted(await store.presence(channel), key=key)
            kit.expect(got == want, PRESENCE, f"presence({channel!r}) = {got}, expected {want}")
            for user in (alice, bob):
                mine = [e for e in want if e.user == user]
                got = sorted(await store.presence(channel, user), key=key)
                kit.expect(got == mine, PRESENCE, f"presence({channel!r}, {user!r}) = {got}")
        for user in (alice, bob):
            want_channels = {e.channel for e in entries if e.user == user}
            got_channels = await store.presence_channels(user)
            kit.expect(
                got_channels == want_channels,
                PRESENCE,
                f"presence_channels({user!r}) = {got_channels}, expected {want_channels}",
            )
        for connection in ("c1", "c2", "c3"):
            want = sorted((e for e in entries if e.connection == connection), key=key)
            got = sorted(await store.presence_of(connection), key=key)
            kit.expect(got == want, PRESENCE, f"presence_of({connection!r}) = {got}")

    a1 = entry(room, alice, "c1", node="node-1")
    a2 = entry(room, alice, "c2", status="away", metadata={}, updated=1001.0, node="nødé-2")
    a3 = entry(hall, alice, "c1")
    b1 = entry(room, bob, "c3", leave_at=1010.25)
    await expect([])
    for e in (a1, a2, a3, b1):
        await store.put_presence(e)
    await expect([a1, a2, a3, b1])
    a1_again = attrs.evolve(a1, status="busy", updated=1002.0, leave_at=1012.0)
    await store.put_presence(a1_again)  # replaces: one entry per (channel, user, connection)
    await expect([a1_again, a2, a3, b1])
    dropped = await store.drop_presence(room, alice, "c1")
    kit.expect(dropped is True, PRESENCE, f"drop_presence of an entry returned {dropped!r}")
    dropped = await store.drop_presence(room, alice, "c1")  # dropped already
    kit.expect(dropped is False, PRESENCE, f"drop_presence of a dropped entry: {dropped!r}")
    dropped = await store.drop_presence(room, alice, "nobody")  # absent: nothing happens
    kit.expect(dropped is False, PRESENCE, f"drop_presence of no entry returned {dropped!r}")
    await expect([a2, a3, b1])
    for e in (a2, a3, b1):
        await store.drop_presence(e.channel, e.user, e.connection)
    await expect([])


async def _check_concurrency(kit: _Kit) -> None:
    time = kit.later()
    batches = [
        WriteBatch(
            time,
            appends=(kit.append(kit.name(f"parallel-{i}"), [i, i + 1, i + 2]),),
            clients=(kit.update(kit.name(f"client-{i}"), None, ClientRow(f"user-{i}", 3)),),
            keys=((kit.name(f"user-{i}"), "key"),),
        )
        for i in range(8)
    ]
    for batch in batches:
        kit.keys.update(batch.keys)
    failed: list[str] = []

    async def write(batch: WriteBatch) -> None:
        try:
            await kit.store.write(batch)
        except StoreConflict as exc:
            failed.append(f"{batch.appends[0].channel!r}: StoreConflict({exc})")

    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(write, batch)
    kit.expect(not failed, CONCURRENT, "; ".join(failed))
    for batch in batches:
        kit.model.apply(batch)
    await kit.verify(CONCURRENT)

    race, racer = kit.name("race"), kit.name("racer")
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(race, ["start"]),)))
    time = kit.later()
    for contested in (
        [
            WriteBatch(time, appends=(kit.append(race, ["a1", "a2"]),)),
            WriteBatch(time, appends=(kit.append(race, ["b1", "b2", "b3"]),)),
        ],
        [
            WriteBatch(time, appends=(kit.append(kit.name("new-race"), [f"{who}"]),))
            for who in ("a", "b", "c")
        ],
        [
            WriteBatch(time, clients=(kit.update(racer, None, ClientRow(who, 1)),))
            for who in ("alice", "bob")
        ],
    ):
        applied = await _race(kit.store, contested)
        kit.expect(
            len(applied) == 1,
            RACE,
            f"{len(contested)} concurrent writes: {len(applied)} applied, "
            f"{len(contested) - len(applied)} raised StoreConflict",
        )
        kit.model.apply(applied[0])
        await kit.verify(RACE)


async def _race(store: Store, batches: Sequence[WriteBatch]) -> list[WriteBatch]:
    """Write ``batches`` concurrently; those that applied (the others raised StoreConflict)."""
    applied: list[WriteBatch] = []

    async def attempt(batch: WriteBatch) -> None:
        try:
            await store.write(batch)
        except StoreConflict:
            return
        applied.append(batch)

    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(attempt, batch)
    return applied


async def _check_large(kit: _Kit) -> None:
    big, many = kit.name("big"), kit.name("many")
    blob = ("trio ✓ 日本 " * (1 << 17))[: 1 << 20]
    await kit.write(
        WriteBatch(
            kit.later(),
            appends=(
                kit.append(big, ["before", {"blob": blob, "list": [blob[:1000]] * 10}, "after"]),
            ),
        ),
        LARGE,
    )
    await kit.verify(LARGE, channels=[big], clients=(), keys=(), receipts=())
    payloads = [{"n": i, "text": f"event {i} ✓", "pad": "x" * (i % 300)} for i in range(5000)]
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(many, payloads),)), LARGE)
    await kit.write(WriteBatch(kit.later(), appends=(kit.append(many, ["one more"]),)), LARGE)
    await kit.verify(LARGE, channels=[many], clients=(), keys=(), receipts=())


async def _check_writes_continue(kit: _Kit) -> None:
    """After a reopen: appends at each channel's head, client updates from the rows read back,
    keys, receipts."""
    model = kit.model
    appends = tuple(kit.append(channel, ["after reopen"]) for channel in sorted(model.logs))
    updates = tuple(
        kit.update(client, row, ClientRow(row.owner, row.ack_seq + 1))
        for client, row in sorted(model.clients.items(), key=lambda item: item[0])
    )
    key = (kit.name("user"), "after reopen")
    await kit.write(WriteBatch(kit.later(), appends=appends, clients=updates, keys=(key,)))
    for channel, readers in sorted(model.receipts.items()):
        for user, offset in sorted(readers.items()):
            moved = await kit.store.mark_read(channel, user, offset + 1)
            kit.expect(bool(moved), RECEIPTS, f"mark_read({channel!r}, {user!r}, {offset + 1})")
            readers[user] = offset + 1
    await kit.verify(AFTER_REOPEN)


SHARED = (
    "a shared store (SharedStore) passes published notices to watchers in order, keeps every "
    "node's lease end until drop_lease, and finds presence entries by node"
)


async def _check_shared(kit: _Kit) -> None:
    store = kit.store
    if not (isinstance(store, SharedStore) and store.shared):
        return
    one, two = kit.name("node-1"), kit.name("node-2")
    leases = await store.renew_lease(one, 1000.0)
    kit.expect(leases.get(one) == 1000.0, SHARED, f"renew_lease({one!r}) returned {leases}")
    leases = await store.renew_lease(two, 900.0)
    kit.expect(
        (leases.get(one), leases.get(two)) == (1000.0, 900.0),
        SHARED,
        f"renew_lease({two!r}) returned {leases}",
    )
    await store.drop_lease(two)
    leases = await store.renew_lease(one, 1100.0)
    kit.expect(
        leases.get(one) == 1100.0 and two not in leases,
        SHARED,
        f"after drop_lease({two!r}), renew_lease returned {leases}",
    )
    await store.drop_lease(one)
    room = kit.name("room")
    entries = [
        PresenceEntry(room, "alice", "c1", "online", {}, 1, 1.0, node=one),
        PresenceEntry(room, "bob", "c2", "away", {}, 1, 1.0, node=two),
    ]
    for entry in entries:
        await store.put_presence(entry)
    got = await store.presence_of_node(one)
    kit.expect(got == entries[:1], SHARED, f"presence_of_node({one!r}) = {got}")
    for entry in entries:
        await store.drop_presence(entry.channel, entry.user, entry.connection)
    sent = [Notice(one, room, head=n) for n in range(1, 4)]
    sent.append(Notice(two, room, meta=b'{"type":"meta"}', skip_user="alice"))
    async with store.watch() as notices:
        await store.publish(sent)
        received: list[Notice] = []
        with trio.move_on_after(5):
            async for notice in notices:
                if notice.channel == room:
                    received.append(notice)
                if len(received) == len(sent):
                    break
    kit.expect(received == sent, SHARED, f"watch() gave {received}, published {sent}")


_CHECKS: tuple[tuple[str, Callable[[_Kit], Awaitable[None]]], ...] = (
    ("empty", _check_empty),
    ("appends", _check_appends),
    ("clients", _check_clients),
    ("keys", _check_keys),
    ("atomicity", _check_atomicity),
    ("retention", _check_retention),
    ("receipts", _check_receipts),
    ("presence", _check_presence),
    ("concurrency", _check_concurrency),
    ("large", _check_large),
    ("shared", _check_shared),
)


async def _closing(store: Store) -> None:
    with trio.CancelScope(shield=True):
        await store.aclose()


async def check_store(make_store: Callable[[], Store], *, persistent: bool) -> None:
    """Check that a server store keeps the store contract (:class:`~trio_realtime.server.Store`);
    raises :class:`AssertionError` naming the rule it broke. Call it from a trio test of your
    store::

        async def test_my_store_keeps_the_contract(tmp_path):
            await check_store(lambda: MyStore(tmp_path / "db"), persistent=True)

    ``make_store()`` returns a new, unopened store object each time, on the same underlying data
    (the kit opens it, and closes it at the end). Start from empty data where you can: the kit
    cannot wipe it. It writes only rows under names of its own (a random prefix per run, a
    distinct name per check), so rows left by an earlier run do not disturb it. Its batch times are small numbers
    (1000.0, 2000.0, ...: not the current time), and one ``forget_keys_before`` it writes drops
    the key rows stored before one of them, whoever wrote them.

    What is checked: opening and closing; empty loads and a stable, non-empty store epoch;
    appends (channel rows, every field of every event as written, reads from any offset, with
    any limit, page by page, past the head); presence entries; client rows and their ``before`` preconditions;
    key rows (their times, replacing, ``forget_keys_before``); append preconditions, and that a
    refused batch applies nothing; retention by ``keep_from`` and ``drop_before``, down to a
    channel with no event left; read receipts; concurrent writes (to different rows: all apply;
    with the same precondition: exactly one does); a 1 MiB event and 5,000 events in one
    append; a store with the :class:`~trio_realtime.server.SharedStore` capability, its
    notices, leases and presence by node. With ``persistent=True``, the store is then closed and a new ``make_store()``
    opened: everything must still be there (the epoch too), and take writes that continue it.
    With ``persistent=False``, ``make_store()`` is called once.

    It sets no timeout: run it under ``trio.fail_after`` if a store may hang.
    """
    store = make_store()
    kit = _Kit(store)
    kit.check = "open"
    await store.open()
    try:
        for check, run in _CHECKS:
            kit.check = check
            await run(kit)
        kit.check = "everything"
        await kit.verify("what every check wrote is all still there, together")
    finally:
        await _closing(store)
    if not persistent:
        return
    kit.check = "reopen"
    store = kit.store = make_store()
    await store.open()
    try:
        await kit.verify(PERSISTENT)
        await _check_writes_continue(kit)
    finally:
        await _closing(store)
