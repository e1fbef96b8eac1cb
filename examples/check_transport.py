"""Check a transport against the Transport contract with the conformance kit: here the built-in
memory transport; for your own, yield a connected (client_end, server_end) pair of it instead.

Run it: python examples/check_transport.py
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trio_realtime.testing import check_transport
from trio_realtime.transports import Transport, memory_transport_pair


@asynccontextmanager
async def make_pair() -> AsyncIterator[tuple[Transport, Transport]]:
    """One fresh, connected pair of ends per check (the kit closes both ends itself)."""
    client_end, server_end = memory_transport_pair()
    yield client_end, server_end


async def main() -> None:
    await check_transport(make_pair)  # raises AssertionError naming the rule broken
    print("the memory transport keeps the Transport contract")


if __name__ == "__main__":
    trio.run(main)
