"""The server's rules for storing upstream events, applied once for every store.

A store keeps rows and applies a :class:`WriteBatch` atomically (``_store.py``); what goes into the
batch is decided here, from the rows the store had (:class:`Snapshot`):

* **Dedup by seq**: an event whose seq is at or below its client's watermark was stored already
  (through another connection of the same client): not stored again (``None`` in the results).
* **Dedup by caller key**: a caller-chosen idempotency key is remembered per user for the dedup
  window; an event under a key its user already used within it is not stored again. Keys of
  different users never collide. The client library's own keys (``{client_id}:{seq}``) are
  deduplicated by seq, not remembered.
* **Binding**: a client_id is bound to the user of the first request that stores under it (its
  connection's user); a request for it from another user is refused whole (``None`` for the
  request: nothing stored, and its watermark does not move), events or none. (With several
  nodes, the first resume's fence writes the row, bound to its user: the binding comes first.)
* **Offsets and epochs**: a channel's events get contiguous offsets after its head; a channel's
  first event starts its log under the store's epoch.
* **Retention**: each channel a batch appends to keeps its newest ``retention_count`` events and
  none stored more than ``retention_age`` seconds before.
* **Fencing** (a store shared by several nodes): a request made by a connection that resumed
  under an older generation than the client row's (the client resumed again since, maybe on
  another node) is refused whole (:data:`FENCED`): nothing stored, its watermark does not move.
  A request without a generation (``None``: one node, no fence) is never fenced.

:func:`plan_commit` is pure (tested without a store); :func:`commit` loads, plans and writes, and
plans again if another writer moved the rows meanwhile (:class:`StoreConflict`).
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Sequence
from typing import Literal

import attrs
import trio

from .._protocol import Message
from ._store import (
    Append,
    ClientRow,
    ClientUpdate,
    NewEvent,
    Snapshot,
    Store,
    StoreConflict,
    WriteBatch,
)

__all__ = ["FENCED", "Request", "Result", "Retention", "commit", "plan_commit"]

#: One connection's part of a commit: its client_id, its user (who the client_id is bound to, or
#: gets bound to; ``None``: the first sender of its events), the watermark to record (every seq up
#: to it is stored or consumed), and the events accepted for storing, in seq order.
Request = tuple[str, "str | None", int, Sequence[NewEvent]]


class _Fenced(enum.Enum):
    FENCED = "fenced"


#: The result of a request refused by the fence (its connection's client resumed again since).
FENCED = _Fenced.FENCED

#: Per request: each event as stored (``None``: a duplicate, not stored again); ``None`` for a
#: request refused whole because its client_id belongs to another user; :data:`FENCED` for one
#: refused by the fence.
Result = list[Message | None] | None | Literal[_Fenced.FENCED]

#: Times :func:`commit` plans again after a conflict before giving up.
_ATTEMPTS = 8


@attrs.frozen(kw_only=True)
class Retention:
    """How long the server keeps what it stored."""

    count: int = 100_000
    """Events kept per channel (the newest)."""
    age: float = 7 * 24 * 3600
    """Seconds an event is kept."""
    dedup_window: float = 24 * 3600
    """Seconds a caller-chosen idempotency key is remembered (per user)."""


@attrs.frozen
class Plan:
    batch: WriteBatch
    results: list[Result]
    """Per request: see :data:`Result`."""


def _owner(events: Sequence[NewEvent]) -> str | None:
    return next((new.sender for new in events if new.sender is not None), None)


def wanted_rows(requests: Sequence[Request]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """The client ids, channels and ``(user, key)`` pairs a commit of ``requests`` reads."""
    clients: set[str] = set()
    channels: set[str] = set()
    keys: set[tuple[str, str]] = set()
    for client_id, _, _, events in requests:
        clients.add(client_id)
        own = f"{client_id}:"
        for new in events:
            channels.add(new.channel)
            key = new.idempotency_key
            if key is not None and not key.startswith(own):
                keys.add((new.sender or "", key))
    return clients, channels, keys


def plan_commit(
    snapshot: Snapshot,
    requests: Sequence[Request],
    *,
    now: float,
    retention: Retention,
    forget_keys: bool = False,
    generations: Sequence[int | None] | None = None,
) -> Plan:
    """What to write for ``requests``, given the rows of ``snapshot`` (see the module's rules).
    ``generations``: per request, the generation its connection resumed under (``None``: no
    fence); all ``None`` if not given."""
    clients: dict[str, ClientRow] = dict(snapshot.clients)
    heads: dict[str, tuple[str, int]] = {}  # channel -> (epoch, head) as planned so far
    appended: dict[str, list[Message]] = {}
    keys_seen = dict(snapshot.keys)
    new_keys: list[tuple[str, str]] = []
    results: list[Result] = []
    checked: set[str] = set()  # fenced client rows a stored event depends on: preconditions
    window = retention.dedup_window
    stored_ms = int(now * 1000)  # every event of a commit is stored at the same time
    for index, (client_id, user, ack_seq, events) in enumerate(requests):
        row = clients.get(client_id)
        owner = user if user is not None else _owner(events)
        if row is not None and row.owner is not None and owner not in (None, row.owner):
            results.append(None)
            continue
        generation = generations[index] if generations is not None else None
        if generation is not None and row is not None and row.generation > generation:
            results.append(FENCED)
            continue
        watermark = row.ack_seq if row is not None else 0
        own = f"{client_id}:"
        stored: list[Message | None] = []
        for new in events:
            if new.seq is not None and new.seq <= watermark:
                stored.append(None)
                continue
            key = new.idempotency_key
            if key is not None and not key.startswith(own):
                scoped = (new.sender or "", key)
                seen = keys_seen.get(scoped)
                if seen is not None and now - seen < window:
                    stored.append(None)
                    continue
                keys_seen[scoped] = now
                new_keys.append(scoped)
            channel = new.channel
            position = heads.get(channel)
            if position is None:
                info = snapshot.channel(channel)
                position = (info.epoch, info.head)
            epoch, head = position[0], position[1] + 1
            heads[channel] = (epoch, head)
            event = Message(
                channel,
                head,
                epoch,
                new.event,
                new.payload,
                new.timestamp,
                new.sender,
                key,
                stored_ms,
            )
            appended.setdefault(channel, []).append(event)
            stored.append(event)
        owner = row.owner if row is not None and row.owner is not None else owner
        if generation is not None and any(event is not None for event in stored):
            checked.add(client_id)
        clients[client_id] = ClientRow(
            owner, max(watermark, ack_seq), row.generation if row is not None else 0
        )
        results.append(stored)
    appends = []
    for channel, stored_events in appended.items():
        info = snapshot.channel(channel)
        head = stored_events[-1].offset
        appends.append(
            Append(
                channel,
                info.epoch,
                info.head,
                tuple(stored_events),
                keep_from=max(info.first, head - retention.count + 1),
                drop_before=now - retention.age,
            )
        )
    updates = tuple(
        ClientUpdate(client_id, snapshot.clients.get(client_id), row)
        for client_id, row in clients.items()
        if row != snapshot.clients.get(client_id) or client_id in checked
    )
    batch = WriteBatch(
        now,
        tuple(appends),
        updates,
        tuple(new_keys),
        forget_keys_before=now - window if forget_keys else None,
    )
    return Plan(batch, results)


async def commit(
    store: Store,
    requests: Sequence[Request],
    *,
    retention: Retention,
    now: float | None = None,
    forget_keys: bool = False,
    generations: Sequence[int | None] | None = None,
) -> list[Result]:
    """Store ``requests`` in one atomic write, under the rules; the results of
    :func:`plan_commit` (``generations``: see there). A request checked against the fence
    is, when stored, written with its client row as precondition, so a resume that raises the
    generation meanwhile makes the write conflict, and the next plan refuses it. If another writer moved the rows read meanwhile, read and plan again.

    Raises:
        StoreConflict: the rows kept moving (another writer) through every attempt.
    """
    clients, channels, keys = wanted_rows(requests)
    for attempt in range(_ATTEMPTS):
        if attempt:  # another writer moved the rows: let it finish, then read them again
            await trio.sleep(random.uniform(0, 0.005 * attempt))
        snapshot = await store.load(clients=clients, channels=channels, keys=keys)
        plan = plan_commit(
            snapshot,
            requests,
            now=time.time() if now is None else now,
            retention=retention,
            forget_keys=forget_keys,
            generations=generations,
        )
        try:
            await store.write(plan.batch)
        except StoreConflict:
            continue
        return plan.results
    raise StoreConflict(f"the store's rows kept moving through {_ATTEMPTS} attempts")
