"""FaultProxy and ServerProcess (trio_realtime.testing), and clients through faults."""

from __future__ import annotations

import contextlib

import trio

from trio_realtime import ConnectionState, RealtimeConfig, open_realtime
from trio_realtime.testing import FaultProxy, open_fault_proxy, open_server_process

from ..helpers import collect

pytest_plugins = ["trio_realtime.testing.pytest_plugin"]


async def echo_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


async def roundtrip(proxy: FaultProxy, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream:
        await stream.send_all(payload)
        got = b""
        while len(got) < len(payload):
            data = await stream.receive_some(65536)
            if not data:
                break
            got += data
        return got


async def test_forwarding_latency_chunks_and_bandwidth(nursery: trio.Nursery) -> None:
    port = await nursery.start(echo_server)
    async with open_fault_proxy(port, seed=1) as proxy:
        payload = bytes(range(256)) * 40
        assert await roundtrip(proxy, payload) == payload
        proxy.latency, proxy.jitter, proxy.chunk_size = 0.05, 0.05, 7
        start = trio.current_time()
        assert await roundtrip(proxy, payload) == payload  # order kept despite jitter
        assert trio.current_time() - start >= 0.1  # both directions delayed
        proxy.clear_faults()
        proxy.bandwidth = 20_000  # bytes/s: 10 KiB each way takes about half a second
        start = trio.current_time()
        assert await roundtrip(proxy, payload) == payload
        assert trio.current_time() - start >= 0.5
        assert proxy.stats.connections == 3
        assert proxy.stats.bytes_forwarded == 6 * len(payload)


async def test_resets_blackhole_slow_close_and_refusal(nursery: trio.Nursery) -> None:
    port = await nursery.start(echo_server)
    async with open_fault_proxy(port) as proxy:
        proxy.reset_after_bytes = 100
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"x" * 200)
        got = b""
        try:
            while data := await stream.receive_some(1000):
                got += data
        except trio.BrokenResourceError:
            pass  # reset by peer
        assert len(got) < 200
        assert proxy.stats.resets == 1
        await stream.aclose()

        proxy.clear_faults()
        proxy.blackhole = True
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"into the void")
        with trio.move_on_after(0.3) as scope:
            await stream.receive_some(100)
        assert scope.cancelled_caught  # nothing comes back, and nothing is closed
        assert proxy.stats.bytes_dropped == len(b"into the void")
        proxy.blackhole = False
        # Lifted: a new connection works, the black-holed one stays dead (never a hole in a stream).
        assert await roundtrip(proxy, b"alive") == b"alive"
        await stream.send_all(b"after")
        with trio.move_on_after(0.3) as scope:
            await stream.receive_some(100)
        assert scope.cancelled_caught
        assert proxy.stats.bytes_dropped == len(b"into the voidafter")
        assert proxy.reset_all() == 1
        with contextlib.suppress(trio.BrokenResourceError):
            assert await stream.receive_some(100) == b""
        await stream.aclose()

        proxy.clear_faults()
        proxy.slow_close = 0.3  # the echo server's close reaches us 0.3 s late
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"bye")
        await stream.send_eof()
        start = trio.current_time()
        assert await stream.receive_some(100) == b"bye"  # data is not delayed
        assert await stream.receive_some(100) == b""  # the close is
        assert trio.current_time() - start >= 0.3
        await stream.aclose()

        proxy.clear_faults()
        proxy.refuse = True
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        with contextlib.suppress(trio.BrokenResourceError):
            assert await stream.receive_some(100) == b""
        await stream.aclose()


async def test_a_client_through_resets_every_50_ms_loses_and_duplicates_nothing() -> None:
    config = RealtimeConfig(
        durability="memory", initial_retry_delay=0.01, max_retry_delay=0.05, network_monitor=False
    )
    async with (
        open_server_process() as server,
        open_fault_proxy(server.port, seed=7) as proxy,
    ):
        url = f"ws://127.0.0.1:{proxy.port}/realtime"
        async with (
            open_realtime(url, token=server.token("alice"), config=config) as alice,
            open_realtime(url, token=server.token("bob"), config=config) as bob,
        ):
            await bob.subscribe("room")
            proxy.reset_every = 0.05
            proxy.latency, proxy.jitter = 0.002, 0.003
            proxy.changed()
            for n in range(300):
                await alice.send("room", "n", n)
                if n in (100, 200):
                    # Mid-stream resets whatever the machine's speed: 300 sends can be over
                    # before the first periodic one. Alice's link is reset once it is up.
                    with trio.fail_after(10):
                        async with alice.states() as states:
                            async for state in states:
                                if state is ConnectionState.CONNECTED and proxy.reset_all():
                                    break
            # Resets stay on; at every 250 ms a handshake always fits in, even on a loaded machine
            # (every 50 ms, a slow one can be cut again and again before it completes).
            proxy.reset_every = 0.25
            proxy.changed()
            got = await collect(bob, "room", 300, within=60)
            assert [m.payload for m in got] == list(range(300))
            assert proxy.stats.resets > 0
            assert alice.metrics.total_reconnects + bob.metrics.total_reconnects > 0


async def test_server_process_fixture_kill_and_restart(realtime_server, fault_proxy) -> None:  # type: ignore[no-untyped-def]
    config = RealtimeConfig(
        durability="memory", initial_retry_delay=0.01, max_retry_delay=0.1, network_monitor=False
    )
    url = f"ws://127.0.0.1:{fault_proxy.port}/realtime"
    async with open_realtime(url, token=realtime_server.token("alice"), config=config) as alice:
        first = await alice.send("room", "n", 1)
        await first.wait()
        await realtime_server.kill()
        assert not realtime_server.running
        second = await alice.send("room", "n", 2)  # journaled (in memory here) while it is down
        await realtime_server.restart()
        with trio.fail_after(30):
            await second.wait()
        assert realtime_server.kills == 1  # restart() of a stopped server only starts it
