"""Network awareness: a network change cuts the backoff wait short (netlink on Linux, or a poll)."""

from __future__ import annotations

import shutil
import struct

import pytest
import trio
import trio.testing

from trio_realtime import ConnectionState, RealtimeConfig, open_realtime
from trio_realtime.services import NetworkMonitor
from trio_realtime.services._network import netlink_says_up
from trio_realtime.transports import LinkClosed, Transport

from ..helpers import Watched
from .conftest import URL

#: Slow backoff (10 s, no jitter) so a reconnect at once can only come from a network change.
SLOW = RealtimeConfig(durability="memory", initial_retry_delay=10, max_retry_delay=60, jitter=0.0)


def nlmsg(kind: int, body: bytes = b"\0" * 12) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, kind, 0, 0, 0) + body + b"\0" * (-length % 4)


def test_netlink_messages_are_read() -> None:
    assert netlink_says_up(nlmsg(20))  # RTM_NEWADDR
    assert netlink_says_up(nlmsg(16))  # RTM_NEWLINK
    assert netlink_says_up(nlmsg(24))  # RTM_NEWROUTE
    assert not netlink_says_up(nlmsg(21))  # RTM_DELADDR
    assert netlink_says_up(nlmsg(21) + nlmsg(25, b"\0" * 13) + nlmsg(20))
    assert not netlink_says_up(b"")
    assert not netlink_says_up(b"\x01\x02\x03")
    assert not netlink_says_up(struct.pack("=IHHII", 0, 3, 0, 0, 0) + nlmsg(20))  # bad length


def refusing(attempts: Watched[float]):  # type: ignore[no-untyped-def]
    async def connect(nursery: trio.Nursery, url: str, connect_timeout: float) -> Transport:
        attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise LinkClosed(None, "network unreachable")

    return connect


async def test_notify_network_change_cuts_the_backoff_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: Watched[float] = Watched()
    config = RealtimeConfig(
        durability="memory",
        initial_retry_delay=10,
        max_retry_delay=60,
        jitter=0.0,
        network_monitor=False,
    )
    async with open_realtime(URL, config=config, connector=refusing(attempts)) as conn:
        await trio.sleep(3)  # nothing may happen in these 3 s: the backoff is 10 s
        assert attempts == [0.0, 0.0]  # the first attempt, the immediate retry; then 10 s
        conn.notify_network_change()
        await attempts.wait_until(lambda: len(attempts) >= 3)
        assert attempts == [0.0, 0.0, 3.0]  # at once
        await attempts.wait_until(lambda: len(attempts) >= 4, within=100)
        assert attempts == [0.0, 0.0, 3.0, 23.0]  # the backoff itself goes on: 20 s after
        assert conn.state is ConnectionState.RECONNECTING


async def test_the_poll_sees_a_change_and_reconnects_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: Watched[float] = Watched()
    fingerprints = iter(["eth0 down", "eth0 down", "eth0 up"])  # at 0, 2 and 4 s

    async def fingerprint() -> str:
        await trio.lowlevel.checkpoint()
        return next(fingerprints, "eth0 up")

    monitor = NetworkMonitor(fingerprint=fingerprint, use_netlink=False)

    async with open_realtime(
        URL, config=SLOW, connector=refusing(attempts), services=[monitor]
    ) as conn:
        assert conn.service(NetworkMonitor) is monitor
        await monitor.watching.wait()
        assert monitor.mode == "poll"
        # The third attempt is the one the poll's change triggered: at 4 s, not after the backoff.
        await attempts.wait_until(lambda: len(attempts) >= 3)
    assert attempts[:3] == [0.0, 0.0, 4.0]


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
async def test_netlink_sees_an_address_appear() -> None:
    attempts: Watched[float] = Watched()
    address = "127.77.77.77/32"
    async with open_realtime(URL, config=SLOW, connector=refusing(attempts)) as conn:
        monitor = conn.service(NetworkMonitor)
        with trio.fail_after(5):
            await monitor.watching.wait()
        if monitor.mode != "netlink":
            pytest.skip("netlink is not available here")
        added = await trio.run_process(
            ["ip", "addr", "add", address, "dev", "lo"], capture_stderr=True, check=False
        )
        if added.returncode != 0:
            pytest.skip(f"may not add an address: {added.stderr.decode().strip()}")
        try:
            await attempts.wait_until(lambda: len(attempts) >= 3, within=5)
        finally:
            with trio.CancelScope(shield=True):
                await trio.run_process(["ip", "addr", "del", address, "dev", "lo"], check=False)
        assert attempts[2] - attempts[0] < 5  # well before the 10 s backoff
