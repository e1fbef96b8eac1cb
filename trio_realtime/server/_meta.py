"""Server-side bookkeeping for typing indicators (PROTOCOL.md section 5): a pure data structure
the typing handler feeds what connections say and do. (Presence is kept in the store: see
``_handlers.PresenceHandler``.)"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["TypingRegistry"]


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
