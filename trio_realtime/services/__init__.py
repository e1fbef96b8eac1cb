"""The services a :class:`~trio_realtime.Connection` runs beside it: presence, typing indicators,
read receipts and the network monitor, plus :class:`CachedAuth`, a shared-refresh auth delegate."""

from __future__ import annotations

from collections.abc import Callable

from .._service import Service
from ._auth import CachedAuth as CachedAuth
from ._auth import TokenRefreshFailed as TokenRefreshFailed
from ._network import NetworkMonitor as NetworkMonitor
from ._presence import PresenceChange as PresenceChange
from ._presence import PresenceService as PresenceService
from ._receipts import ReceiptsService as ReceiptsService
from ._receipts import ReceiptUpdate as ReceiptUpdate
from ._typing import TypingService as TypingService

#: What ``open_realtime`` runs by default.
STANDARD_SERVICES: tuple[Callable[[], Service], ...] = (
    PresenceService,
    TypingService,
    ReceiptsService,
    NetworkMonitor,
)
