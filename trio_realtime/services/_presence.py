"""Presence: who is in a channel, with what status (PROTOCOL.md section 5).

The server sends a channel's full presence once when this client subscribes (and again after every
resume), then diffs. This service keeps the current members per channel and turns both into
:class:`PresenceChange` items, so a reconnect that changed nothing yields nothing (no leave/join
flicker). It also remembers this client's own announcements and repeats them after each resume:
the server forgets a connection's presence when the connection goes away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import trio

from .._protocol import (
    PresenceDiff,
    PresenceMember,
    PresenceState,
    PresenceStatus,
    PresenceUpdate,
    ServerFrame,
    encode_frame,
)
from .._service import ConnectionState, Service
from .._stream import Broadcast, Stream
from ._common import check_channel

__all__ = ["PresenceChange", "PresenceService"]


@attrs.frozen
class PresenceChange:
    """Who joined (or changed status or metadata: they are in ``joins`` with their new state)
    and who left ``channel``. The first item of ``changes()`` has every current member in
    ``joins``."""

    channel: str
    joins: Mapping[str, PresenceMember] = attrs.field(factory=dict)
    leaves: Mapping[str, PresenceMember] = attrs.field(factory=dict)


class PresenceService(Service):
    """``conn.presence``."""

    name: ClassVar[str] = "presence"
    frames: ClassVar[tuple[type, ...]] = (PresenceState, PresenceDiff)

    def __init__(self) -> None:
        self._members: dict[str, dict[str, PresenceMember]] = {}
        self._mine: dict[str, PresenceUpdate] = {}
        self._listeners = Broadcast[PresenceChange]()

    async def update(
        self,
        status: PresenceStatus | str,
        *,
        channel: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Announce this client's status in ``channel`` (``online``, ``away``, ``busy``;
        ``offline`` withdraws it at once). ``metadata`` is any JSON object others see with it.

        Announced again after every reconnect, so it survives link drops; others see no change
        if the reconnect happens within the server's ``presence_timeout``."""
        check_channel(channel)
        try:
            status = PresenceStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in PresenceStatus)
            raise ValueError(f"status must be one of {choices}, got {status!r}") from None
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        frame = PresenceUpdate(channel, status, dict(metadata or {}))
        encode_frame(frame)  # metadata JSON cannot carry fails here, not in the writer
        if status is PresenceStatus.OFFLINE:
            self._mine.pop(channel, None)
        else:
            self._mine[channel] = frame
        await self._send(frame)

    async def _send(self, frame: PresenceUpdate) -> None:
        connection = self.host
        connection.check_open()
        if connection.state is ConnectionState.CONNECTED:
            connection.send_control(frame)
        await trio.lowlevel.checkpoint()

    def members(self, channel: str) -> dict[str, PresenceMember]:
        """The members of ``channel`` as last heard from the server (subscribe to the channel
        to hear of it), by user."""
        return dict(self._members.get(check_channel(channel), {}))

    def is_online(self, user: str, channel: str) -> bool:
        """Whether ``user`` is present in ``channel`` with any status but ``offline``."""
        member = self._members.get(check_channel(channel), {}).get(user)
        return member is not None and member.status is not PresenceStatus.OFFLINE

    def changes(self, channel: str) -> Stream[PresenceChange]:
        """Iterate over the presence of ``channel``: first the current members (as joins), then
        each change, until the connection closes."""
        check_channel(channel)
        return self._listeners.open(
            channel, [PresenceChange(channel, joins=dict(self._members.get(channel, {})))]
        )

    # --- hooks -----------------------------------------------------------------------------------

    def on_frame(self, frame: ServerFrame) -> None:
        if isinstance(frame, PresenceState):
            before = self._members.get(frame.channel, {})
            after = dict(frame.members)
            self._members[frame.channel] = after
            joins = {u: m for u, m in after.items() if before.get(u) != m}
            leaves = {u: m for u, m in before.items() if u not in after}
            if joins or leaves:
                self._listeners.emit_nowait(
                    PresenceChange(frame.channel, joins, leaves), frame.channel
                )
        elif isinstance(frame, PresenceDiff):
            members = self._members.setdefault(frame.channel, {})
            for user in frame.leaves:
                members.pop(user, None)
            members.update(frame.joins)
            change = PresenceChange(frame.channel, dict(frame.joins), dict(frame.leaves))
            self._listeners.emit_nowait(change, frame.channel)

    def on_resumed(self) -> None:
        for frame in self._mine.values():
            self.host.send_control(frame)

    def close(self) -> None:
        self._listeners.close()
