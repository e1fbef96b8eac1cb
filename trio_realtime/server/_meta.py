"""Server-side bookkeeping for presence and typing (PROTOCOL.md section 5).

Pure data structures: the server feeds them what its sessions say and do, with the time, and sends
the frames they return. Nothing here does I/O, which keeps the grace-period rules easy to test.

Presence is per user and channel, built from one *entry* per connection that announced itself. What
others see is the most recently updated entry. A connection that goes away keeps its entry for
``presence_timeout`` seconds (the grace period): a client that reconnects and re-announces within it
causes no leave/join flicker. A member leaves when its last entry is gone.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from typing import Any

import attrs

from .._protocol import PresenceDiff, PresenceMember, PresenceState, PresenceStatus

__all__ = ["PresenceRegistry", "TypingRegistry"]


@attrs.define
class _Entry:
    status: PresenceStatus
    metadata: dict[str, Any]
    updated: int  # order of updates: the newest entry is what others see
    leave_at: float | None = None  # set when its connection went away


@attrs.define
class _Member:
    since: int  # ms since the epoch, when the user joined
    entries: dict[Hashable, _Entry] = attrs.Factory(dict)

    def view(self) -> PresenceMember:
        newest = max(self.entries.values(), key=lambda e: e.updated)
        return PresenceMember(newest.status, newest.metadata, self.since)


class PresenceRegistry:
    """Who is present in which channel, through which connections."""

    def __init__(self, presence_timeout: float, max_entries: int | None = None) -> None:
        self.presence_timeout = presence_timeout
        self.max_entries = max_entries
        """Channels one user may be present in at once (through any of its connections, those
        in their grace period included); :meth:`update` refuses a new channel past it. A
        reconnect that re-announces a channel the user is still present in is no new entry."""
        self._channels: dict[str, dict[str, _Member]] = {}
        self._by_connection: dict[Hashable, set[tuple[str, str]]] = {}
        self._per_user: dict[str, int] = {}
        self._counter = 0

    def _added(self, user: str, count: int) -> None:
        left = self._per_user.get(user, 0) + count
        if left:
            self._per_user[user] = left
        else:
            self._per_user.pop(user, None)

    def allows(self, connection: Hashable, user: str, channel: str) -> bool:
        """Whether an update from ``connection`` in ``channel`` stays within ``max_entries``."""
        if self.max_entries is None or user in self._channels.get(channel, {}):
            return True  # present there already (this connection's entry or another's)
        return self._per_user.get(user, 0) < self.max_entries

    def state(self, channel: str) -> PresenceState:
        members = self._channels.get(channel, {})
        return PresenceState(channel, {user: m.view() for user, m in members.items()})

    def update(
        self,
        connection: Hashable,
        user: str,
        channel: str,
        status: PresenceStatus,
        metadata: dict[str, Any],
    ) -> PresenceDiff | None:
        """``connection`` (of ``user``) set its status in ``channel``; the diff to relay, if any.
        ``offline`` withdraws this connection's entry at once (no grace period)."""
        if status is PresenceStatus.OFFLINE:
            member = self._channels.get(channel, {}).get(user)
            if member is None or connection not in member.entries:
                return None
            before: PresenceMember | None = member.view()
            del member.entries[connection]
            self._by_connection.get(connection, set()).discard((channel, user))
        else:
            members = self._channels.setdefault(channel, {})
            member = members.get(user)
            before = member.view() if member else None
            if member is None:
                member = members[user] = _Member(int(time.time() * 1000))
                self._added(user, 1)
            self._counter += 1
            member.entries[connection] = _Entry(status, dict(metadata), self._counter)
            self._by_connection.setdefault(connection, set()).add((channel, user))
        return self._diff(channel, user, before)

    def disconnected(self, connection: Hashable, now: float) -> None:
        """``connection`` went away: its entries expire after the grace period."""
        for channel, user in self._by_connection.pop(connection, ()):
            entry = self._channels[channel][user].entries.get(connection)
            if entry is not None:
                entry.leave_at = now + self.presence_timeout

    def next_expiry(self) -> float | None:
        times = [
            entry.leave_at
            for members in self._channels.values()
            for member in members.values()
            for entry in member.entries.values()
            if entry.leave_at is not None
        ]
        return min(times, default=None)

    def expire(self, now: float) -> Iterator[PresenceDiff]:
        """Drop the entries whose grace period is over; yield the diffs to relay."""
        for channel, members in list(self._channels.items()):
            for user, member in list(members.items()):
                gone = [
                    key
                    for key, entry in member.entries.items()
                    if entry.leave_at is not None and entry.leave_at <= now
                ]
                if not gone:
                    continue
                before = member.view()
                for key in gone:
                    del member.entries[key]
                diff = self._diff(channel, user, before)  # drops an empty channel
                if diff is not None:
                    yield diff

    def _diff(self, channel: str, user: str, before: PresenceMember | None) -> PresenceDiff | None:
        members = self._channels[channel]
        member = members.get(user)
        if member is not None and not member.entries:
            del members[user]
            self._added(user, -1)
            member = None
            if not members:
                del self._channels[channel]  # nothing of an empty channel is kept
        after = member.view() if member else None
        if after is None:
            return PresenceDiff(channel, leaves={user: before}) if before is not None else None
        if before is None or (before.status, before.metadata) != (after.status, after.metadata):
            return PresenceDiff(channel, joins={user: after})
        return None


class TypingRegistry:
    """Which connections say their user is typing in which channel."""

    def __init__(self) -> None:
        self._typing: dict[tuple[str, str], set[Hashable]] = {}
        self._per_connection: dict[Hashable, int] = {}

    def holds(self, connection: Hashable, user: str, channel: str) -> bool:
        """Whether ``connection`` says ``user`` is typing in ``channel``."""
        return connection in self._typing.get((channel, user), ())

    def count(self, connection: Hashable) -> int:
        """Channels in which ``connection`` says its user is typing."""
        return self._per_connection.get(connection, 0)

    def set(self, connection: Hashable, user: str, channel: str, typing: bool) -> bool:
        """Record it; returns whether the user's typing flag in the channel changed or was refreshed
        (that is, whether to relay it)."""
        key = (channel, user)
        connections = self._typing.get(key, set())
        if typing:
            if connection not in connections:
                self._per_connection[connection] = self.count(connection) + 1
            self._typing[key] = connections | {connection}
            return True
        if connection not in connections:
            return False
        connections.discard(connection)
        self._uncount(connection)
        if connections:
            return False  # another connection of the user is still typing
        del self._typing[key]
        return True

    def _uncount(self, connection: Hashable) -> None:
        left = self.count(connection) - 1
        if left > 0:
            self._per_connection[connection] = left
        else:
            self._per_connection.pop(connection, None)

    def stopped(self, user: str, channel: str) -> None:
        """The user published to the channel: receivers clear the flag when the event arrives."""
        for connection in self._typing.pop((channel, user), ()):
            self._uncount(connection)

    def disconnected(self, connection: Hashable) -> list[tuple[str, str]]:
        """``connection`` went away; the ``(channel, user)`` flags to relay as stopped."""
        cleared = []
        self._per_connection.pop(connection, None)
        for key, connections in list(self._typing.items()):
            if connection in connections:
                connections.discard(connection)
                if not connections:
                    del self._typing[key]
                    cleared.append(key)
        return cleared
