"""Network awareness: reconnect at once when the host's network comes back.

On Linux the monitor listens to the kernel's routing netlink socket (links, addresses and routes
appearing); elsewhere, or where netlink is not allowed, it polls the list of network interfaces and
the routing table every ``network_poll_interval`` seconds. Either way, a change calls
:meth:`Connection.notify_network_change`, which cuts a backoff wait short.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import ClassVar

import trio

from .._errors import ConfigError
from .._service import Service

__all__ = ["NetworkMonitor", "netlink_says_up"]

logger = logging.getLogger("trio_realtime")

# From <linux/rtnetlink.h>: multicast groups, and the message types that mean "something appeared".
_GROUPS = (
    0x1 | 0x10 | 0x40 | 0x100 | 0x400
)  # LINK, IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE
_RTM_NEWLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 20, 24
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid


def netlink_says_up(data: bytes) -> bool:
    """Whether a batch of rtnetlink messages announces a link, address or route that appeared
    (the network may be back). Malformed input is read as far as it goes."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if kind in (_RTM_NEWLINK, _RTM_NEWADDR, _RTM_NEWROUTE):
            return True
        if length < _HEADER.size:
            break
        offset += (length + 3) & ~3  # messages are 4-byte aligned
    return False


async def _fingerprint() -> str:
    names = sorted(name for _, name in socket.if_nameindex())
    try:
        routes = await trio.Path("/proc/net/route").read_text()
    except OSError:
        routes = ""
    return f"{names}\n{routes}"


class NetworkMonitor(Service):
    """Runs with each connection (``RealtimeConfig.network_monitor`` turns it off)."""

    name: ClassVar[str] = "network"

    def __init__(
        self,
        *,
        poll_interval: float = 2.0,
        fingerprint: Callable[[], Awaitable[str]] = _fingerprint,
        use_netlink: bool = True,
    ) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise ConfigError(
                "poll_interval", f"must be a number of seconds, got {poll_interval!r}"
            )
        if not poll_interval > 0:
            raise ConfigError("poll_interval", f"must be positive, got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self._fingerprint = fingerprint
        self._use_netlink = use_netlink
        self.mode = "off"
        """``netlink``, ``poll`` or ``off``: how the monitor is watching."""
        self.watching = trio.Event()
        """Set once :attr:`mode` is ``netlink`` or ``poll``."""

    async def run(self) -> None:
        sock = self._netlink_socket() if self._use_netlink else None
        if sock is None:
            await self._poll()
            return
        with sock:
            try:
                await sock.bind((0, _GROUPS))
            except OSError as exc:
                logger.debug("cannot join the netlink groups (%s): polling instead", exc)
                sock.close()
                await self._poll()
                return
            self.mode = "netlink"
            self.watching.set()
            while True:
                data = await sock.recv(65536)
                if netlink_says_up(data):
                    logger.debug("netlink: the network changed")
                    self.host.notify_network_change()

    def _netlink_socket(self) -> trio.socket.SocketType | None:
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            return None
        try:
            return trio.socket.socket(family, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except OSError as exc:
            logger.debug("no netlink socket (%s): polling instead", exc)
            return None

    async def _poll(self) -> None:
        self.mode = "poll"
        self.watching.set()
        interval = self.poll_interval
        last = await self._fingerprint()
        while True:
            await trio.sleep(interval)
            current = await self._fingerprint()
            if current != last:
                logger.debug("the network interfaces or routes changed")
                self.host.notify_network_change()
            last = current
