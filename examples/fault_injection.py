"""trio_realtime.testing: run the reference server in a child process behind a FaultProxy, break
the link every 100 ms, SIGKILL the server halfway, and check that every message arrived once.

Run it: python examples/fault_injection.py
"""

from __future__ import annotations

import tempfile

import trio

from trio_realtime import Message, RealtimeConfig, open_realtime
from trio_realtime.testing import open_fault_proxy, open_server_process

# Retry quickly: the proxy breaks links on purpose.
CONFIG = RealtimeConfig(initial_retry_delay=0.02, max_retry_delay=0.2, network_monitor=False)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_server_process() as server,
            open_fault_proxy(server.port, seed=1) as proxy,
        ):
            url = f"ws://127.0.0.1:{proxy.port}/realtime"
            async with (
                open_realtime(
                    url, journal_dir=f"{tmp}/a", token=server.token("alice"), config=CONFIG
                ) as alice,
                open_realtime(
                    url, journal_dir=f"{tmp}/b", token=server.token("bob"), config=CONFIG
                ) as bob,
            ):
                await bob.subscribe("room")
                proxy.reset_every = 0.5  # reset every open connection twice a second
                proxy.latency, proxy.jitter = 0.005, 0.01
                proxy.changed()
                for n in range(200):
                    await alice.send("room", "n", n)  # returns once journaled
                    if n == 100:
                        await server.restart()  # SIGKILL, then up again on the same port
                got: list[int] = []
                with trio.fail_after(60):
                    async for item in bob.messages("room"):
                        assert isinstance(item, Message)
                        got.append(item.payload)
                        if len(got) == 200:
                            break
                proxy.clear_faults()
                assert got == list(range(200)), "lost, duplicated or reordered"
                print(
                    f"200 messages, each once and in order, through {proxy.stats.resets} "
                    f"connection resets and {server.kills} server SIGKILL"
                )


if __name__ == "__main__":
    trio.run(main)
