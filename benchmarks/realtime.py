"""trio_realtime against its baselines, every figure a ratio against a baseline measured in the
same run (median of --repeats runs). Writes docs/benchmarks/results.json; benchmarks/report.py
turns it into docs/benchmarks/results.md and the plots.

Run with `nox -s bench`, or `python benchmarks/realtime.py [--only NAME ...] [--repeats N]`.

1. throughput: 200-byte sends, every one acked, under at_least_once + durability=always, vs raw
   trio-websocket fire-and-forget and python-socketio emit-with-ack;
2. send_many: the batch API vs raw fire-and-forget;
3. latency: send->ack p50/p99 at a fixed rate vs a WebSocket ping-pong plus one fsync;
4. recovery: open a journal holding 1,000,000 pending events and replay them to the server;
5. fanout: one publisher, 1,000 subscribers in several processes, vs python-socketio broadcast;
6. memory: RSS with 1,000,000 sends against a stalled server;
7. consumer: a subscriber that also sends (a chat client), with its journal vs without one;
8. socketio_transport: our Socket.IO transport (socketio://, durability always and memory) vs
   python-socketio's AsyncClient, emit with ack, against the same Node socket.io server
   (examples/socketio_server.js): msg/s with K in flight, and send->ack p50/p99 at a paced rate.
9. multi_node: server nodes as separate processes on one Redis (its own redis-server, AOF with
   appendfsync always; and everysec), 1, 2 and 3 of them, against one node on SQLite, in
   rotating rounds: fan-out deliveries/s (publishers and subscribers spread over the nodes) and
   send->ack p50/p99 through node 1 (send->delivery on the last node too).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    OUT_DIR,
    RedisProcess,
    machine,
    node_socketio_server,
    node_versions,
    peer_process,
    redis_server,
    redis_version,
)

from trio_realtime import Acked, Durability, OutboxFull, RealtimeConfig, open_realtime
from trio_realtime._journal import open_journal
from trio_realtime._protocol import encode_upstream
from trio_realtime.testing import open_server_process

_T = TypeVar("_T")

PAYLOAD = "x" * 200
#: Our server's per-connection limits are for abuse, not for a benchmark driving it flat out.
SERVER_ARGS = ("--rate-limit", "1000000", "--send-queue-bytes", str(256 * 1024 * 1024))
CONFIG = RealtimeConfig(network_monitor=False)


def _rounds(repeats: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each measure once per round, in order, for ``repeats`` rounds, and print the medians.

    A baseline and ours are taken in the same minute of every round: on these shared machines the
    speed drifts by half within minutes, and blocks of baseline runs followed by blocks of ours
    would put that drift into the ratio. Compare with :func:`_ratio`.
    """
    runs: dict[str, list[float]] = {label: [] for label in measures}
    for _ in range(repeats):
        for label, measure in measures.items():
            runs[label].append(measure())
    for label, values in runs.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {label:<44} {statistics.median(values):>12,.0f}   (runs: {shown})")
    return runs


def _medians(runs: dict[str, list[float]], names: tuple[str, ...]) -> dict[str, Any]:
    """What :func:`_rounds` measured, for results.json: under ``names`` (in the order of the
    measures), each one's median, and all the runs."""
    named = dict(zip(names, runs.values(), strict=True))
    return {**{name: statistics.median(values) for name, values in named.items()}, "runs": named}


def _ratio(ours: list[float], baseline: list[float]) -> float:
    """The median of the per-round ratios of ours to the baseline."""
    return statistics.median(o / b for o, b in zip(ours, baseline, strict=True))


# --- 1 and 2: upstream throughput -----------------------------------------------------------------


async def _ours_rate(messages: int, senders: int, batch: int | None) -> float:
    """Messages per second from the first send to the last ack, on a fresh server and journal."""
    async with open_server_process(extra_args=SERVER_ARGS) as server:
        with tempfile.TemporaryDirectory() as journal:
            async with open_realtime(
                server.url, token=server.token("bench"), journal_dir=journal, config=CONFIG
            ) as conn:
                start = time.perf_counter()
                if batch is None:
                    share = messages // senders

                    async def sender() -> None:
                        for _ in range(share):
                            await conn.send("bench", "m", PAYLOAD)

                    async with trio.open_nursery() as nursery:
                        for _ in range(senders):
                            nursery.start_soon(sender)
                else:
                    payloads = [PAYLOAD] * batch
                    for _ in range(messages // batch):
                        await conn.send_many("bench", "m", payloads)
                await conn.drain()
                elapsed = time.perf_counter() - start
                acked = conn.metrics.total_messages_acked
    if acked != messages:
        raise RuntimeError(f"{acked} of {messages} acked")
    return messages / elapsed


async def _raw_rate(port: int, messages: int) -> float:
    """trio-websocket, one message per send, no acks, no disk; timed until the server has read
    them all (it answers ``end`` with its count)."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        start = time.perf_counter()
        for _ in range(messages):
            await ws.send_message(PAYLOAD)
        await ws.send_message("end")
        count = int(await ws.get_message())
        elapsed = time.perf_counter() - start
    if count != messages:
        raise RuntimeError(f"the raw server read {count} of {messages}")
    return messages / elapsed


async def _socketio_rate(port: int, messages: int) -> float:
    """python-socketio: every emit asks for an ack; all emits in flight at once (the fastest way
    to use it), timed until the last ack."""
    import socketio

    client = socketio.AsyncClient()
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
    try:
        done = asyncio.Event()
        acked = 0

        def on_ack(*_: object) -> None:
            nonlocal acked
            acked += 1
            if acked == messages:
                done.set()

        start = time.perf_counter()
        for _ in range(messages):
            await client.emit("msg", PAYLOAD, callback=on_ack)
        await asyncio.wait_for(done.wait(), 300)
        return messages / (time.perf_counter() - start)
    finally:
        await client.disconnect()


def _with_peer(kind: str, fn: Callable[[int], Awaitable[_T]]) -> _T:
    """Run ``fn(port)`` in a fresh trio run against a fresh ``kind`` peer server."""

    async def run() -> _T:
        async with peer_process(kind) as port:
            return await fn(port)

    result: _T = trio.run(run)
    return result


def _raw(args: argparse.Namespace) -> Callable[[], float]:
    """One run of raw trio-websocket fire-and-forget."""
    return lambda: _with_peer("raw", lambda port: _raw_rate(port, args.messages))


def _socketio(messages: int) -> float:
    async def run() -> float:
        async with peer_process("socketio") as port:
            return await trio.to_thread.run_sync(
                lambda: asyncio.run(_socketio_rate(port, messages))
            )

    return float(trio.run(run))


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    n = args.messages
    print(f"1. upstream throughput, {n:,} x {len(PAYLOAD)} B, msg/s (median of {args.repeats})")
    runs = _rounds(
        args.repeats,
        {
            "raw trio-websocket, fire-and-forget": _raw(args),
            "python-socketio, emit with ack": lambda: _socketio(n),
            f"trio_realtime send(), {args.senders} senders": lambda: trio.run(
                _ours_rate, n, args.senders, None
            ),
        },
    )
    raw, sio, ours = runs.values()
    vs_raw, vs_sio = _ratio(ours, raw), _ratio(ours, sio)
    print(f"  => {vs_raw:.2f}x raw (goal >= 1.0x), {vs_sio:.2f}x socketio (goal >= 4x)")
    print("     (medians of the per-round ratios)")
    return {
        "messages": n,
        "payload_bytes": len(PAYLOAD),
        "senders": args.senders,
        **_medians(runs, ("raw_trio_websocket", "python_socketio", "trio_realtime")),
        "vs_raw": vs_raw,
        "vs_socketio": vs_sio,
        "goals": {"vs_raw": 1.0, "vs_socketio": 4.0},
    }


def bench_send_many(args: argparse.Namespace) -> dict[str, Any]:
    n = args.messages
    print(f"2. send_many throughput, {n:,} x {len(PAYLOAD)} B in batches of {args.batch}, msg/s")
    runs = _rounds(
        args.repeats,
        {
            "raw trio-websocket, fire-and-forget": _raw(args),
            f"trio_realtime send_many({args.batch})": lambda: trio.run(
                _ours_rate, n, 1, args.batch
            ),
        },
    )
    raw, ours = runs.values()
    vs_raw = _ratio(ours, raw)
    print(f"  => {vs_raw:.2f}x raw (goal >= 4x; median of the per-round ratios)")
    return {
        "messages": n,
        "batch": args.batch,
        **_medians(runs, ("raw_trio_websocket", "trio_realtime")),
        "vs_raw": vs_raw,
        "goals": {"vs_raw": 4.0},
    }


# --- 3: latency ------------------------------------------------------------------------------------


async def _paced(rate: float, count: int, one: Callable[[], Awaitable[None]]) -> None:
    """Start ``one()`` ``count`` times at ``rate`` per second (each in its own task)."""
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for i in range(count):
            await trio.sleep_until(start + i / rate)
            nursery.start_soon(one)


async def _ours_latencies(rate: float, count: int) -> list[float]:
    """Seconds from calling send() to the server's ack, one send at a time at ``rate``."""
    latencies: list[float] = []
    async with open_server_process(extra_args=SERVER_ARGS) as server:
        with tempfile.TemporaryDirectory() as journal:
            async with open_realtime(
                server.url, token=server.token("bench"), journal_dir=journal, config=CONFIG
            ) as conn:
                await conn.send("bench", "m", PAYLOAD)  # warm up: connected and journal open

                async def one() -> None:
                    start = time.perf_counter()
                    receipt = await conn.send("bench", "m", PAYLOAD)
                    await receipt.wait()
                    latencies.append(time.perf_counter() - start)

                await _paced(rate, count, one)
    return latencies


async def _rtt_latencies(port: int, rate: float, count: int) -> list[float]:
    """Round trips of a 200-byte message to the raw trio-websocket server and back."""
    latencies: list[float] = []
    message = "ping" + PAYLOAD
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        lock = trio.Lock()  # one round trip at a time on the one connection

        async def one() -> None:
            async with lock:
                start = time.perf_counter()
                await ws.send_message(message)
                await ws.get_message()
                latencies.append(time.perf_counter() - start)

        await _paced(rate, count, one)
    return latencies


def _fsync_latencies(count: int) -> list[float]:
    """One 200-byte write and its fsync, on the disk the journals use."""
    latencies = []
    data = PAYLOAD.encode()
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(os.path.join(tmp, "probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for _ in range(count):
                start = time.perf_counter()
                os.write(fd, data)
                os.fsync(fd)
                latencies.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    return latencies


def bench_latency(args: argparse.Namespace) -> dict[str, Any]:
    rate, count = args.rate, args.latency_count
    print(f"3. send->ack latency, {count:,} sends at {rate:g}/s, ms (median of {args.repeats})")
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "rtt": [], "fsync": []}
    for _ in range(args.repeats):
        samples = {
            "rtt": _with_peer("raw", lambda port: _rtt_latencies(port, rate, count)),
            "fsync": _fsync_latencies(count),
            "ours": trio.run(_ours_latencies, rate, count),
        }
        for name, values in samples.items():
            # As conn.metrics computes its ack latency percentiles.
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            runs[name].append({"p50": cuts[49], "p99": cuts[98]})
    figures = {
        name: {q: statistics.median(run[q] for run in values) * 1000 for q in ("p50", "p99")}
        for name, values in runs.items()
    }
    floor = {q: figures["rtt"][q] + figures["fsync"][q] for q in ("p50", "p99")}
    for name in ("rtt", "fsync", "ours"):
        print(f"  {name:<8} p50 {figures[name]['p50']:7.3f}  p99 {figures[name]['p99']:7.3f}")
    print(f"  floor    p50 {floor['p50']:7.3f}  p99 {floor['p99']:7.3f}   (RTT + one fsync)")
    ratio = {q: figures["ours"][q] / floor[q] for q in ("p50", "p99")}
    print(f"  => p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x the floor (goal p99 <= 1.5x)")
    return {
        "rate_per_second": rate,
        "sends": count,
        "ms": figures,
        "floor_ms": floor,
        "vs_floor": ratio,
        "goals": {"p99_vs_floor": 1.5},
    }


# --- 4: recovery -----------------------------------------------------------------------------------


async def _make_journal(directory: str, count: int) -> None:
    """A journal holding ``count`` pending events, as a process that crashed offline leaves it."""
    now = int(time.time() * 1000)
    async with open_journal(directory, durability=Durability.OS) as journal:
        prefix = f"{journal.client_id}:"
        for first in range(1, count + 1, 10_000):
            seqs = range(first, min(first + 10_000, count + 1))
            await journal.append_many(
                [
                    (seq, encode_upstream(seq, "bench", "m", PAYLOAD, now, prefix + str(seq)))
                    for seq in seqs
                ]
            )


def _read_bytes(directory: str) -> float:
    """The floor of opening: reading the journal's files (seconds)."""
    start = time.perf_counter()
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - start


async def _recover(template: str, count: int) -> dict[str, float]:
    """Open a copy of ``template`` and replay it: seconds to open, to hand every event to the
    link, and until the server acked them all."""
    async with open_server_process(extra_args=SERVER_ARGS) as server:
        with tempfile.TemporaryDirectory() as tmp:
            journal = os.path.join(tmp, "journal")
            shutil.copytree(template, journal)
            read = _read_bytes(journal)
            start = time.perf_counter()
            async with open_realtime(
                server.url, token=server.token("bench"), journal_dir=journal, config=CONFIG
            ) as conn:
                opened = time.perf_counter() - start
                if conn.pending_count != count:
                    raise RuntimeError(f"recovered {conn.pending_count} of {count}")
                async for metrics in conn.metrics_updates(0.01):
                    if metrics.replayed >= count:
                        break
                handed = time.perf_counter() - start
                await conn.drain()
                acked = time.perf_counter() - start
    return {"read_s": read, "open_s": opened, "replayed_s": handed, "acked_s": acked}


def bench_recovery(args: argparse.Namespace) -> dict[str, Any]:
    count = args.pending
    print(f"4. recovery: a journal with {count:,} pending events (median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        template = os.path.join(tmp, "template")
        trio.run(_make_journal, template, count)
        size = sum(os.path.getsize(os.path.join(template, n)) for n in os.listdir(template))
        runs = [trio.run(_recover, template, count) for _ in range(args.repeats)]
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    replay_rate = count / (figures["replayed_s"] - figures["open_s"])
    acked_rate = count / (figures["acked_s"] - figures["open_s"])
    print(f"  journal: {size / 1e6:,.0f} MB; reading its files takes {figures['read_s']:.2f} s")
    print(f"  open (recover + connect)   {figures['open_s']:8.2f} s    (goal <= 2 s)")
    print(f"  replay onto the link       {replay_rate:>10,.0f} msg/s  (goal >= 100,000)")
    print(f"  replayed and acked         {acked_rate:>10,.0f} msg/s")
    return {
        "pending": count,
        "journal_bytes": size,
        "seconds": figures,
        "open_vs_read": figures["open_s"] / figures["read_s"],
        "replay_per_second": replay_rate,
        "acked_per_second": acked_rate,
        "goals": {"open_s": 2.0, "replay_per_second": 100_000},
    }


# --- 5: fan-out ------------------------------------------------------------------------------------

FANOUT_CHANNEL = "fan"


async def _ours_subscriber_process(url: str, data_dir: str, count: int, expect: int) -> None:
    """A fan-out worker: ``count`` subscriber connections, each reading ``expect`` events; prints
    ``ready`` once all are subscribed, then ``done N LAST`` (deliveries, time.time() of the last)."""
    from trio_realtime.server import load_or_create_secret, make_token

    secret = load_or_create_secret(data_dir)
    # The subscribers keep no journal: like the python-socketio clients, they persist nothing.
    config = RealtimeConfig(network_monitor=False, durability=Durability.MEMORY)
    subscribed = 0
    all_subscribed = trio.Event()
    delivered = 0
    last = 0.0

    async def subscriber(i: int) -> None:
        nonlocal subscribed, delivered, last
        token = make_token(secret, f"sub{i}")
        async with open_realtime(url, token=token, config=config) as conn:
            stream = conn.messages(FANOUT_CHANNEL)
            await conn.subscribe(FANOUT_CHANNEL)
            subscribed += 1
            if subscribed == count:
                all_subscribed.set()
            got = 0
            async for _ in stream:
                got += 1
                if got == expect:
                    break
            delivered += got
            last = max(last, time.time())
            await stream.aclose()
            await conn.aclose(abort=True)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(subscriber, i)
        await all_subscribed.wait()
        print("ready", flush=True)
    print(f"done {delivered} {last}", flush=True)


async def _socketio_subscriber_process(port: int, count: int, expect: int) -> None:
    import socketio

    clients = []
    finished = asyncio.Event()
    delivered = 0
    last = 0.0
    remaining = count

    def counter() -> Callable[[object], None]:
        got = 0

        def on_msg(_: object) -> None:
            nonlocal got, delivered, last, remaining
            got += 1
            delivered += 1
            if got == expect:
                last = max(last, time.time())
                remaining -= 1
                if remaining == 0:
                    finished.set()

        return on_msg

    async def connect() -> None:
        client = socketio.AsyncClient()
        client.on("msg", counter())
        await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
        await client.call("join", 1, timeout=60)
        clients.append(client)

    for first in range(0, count, 50):  # connect in waves, not 500 handshakes at once
        await asyncio.gather(*(connect() for _ in range(first, min(first + 50, count))))
    print("ready", flush=True)
    await finished.wait()
    print(f"done {delivered} {last}", flush=True)
    for client in clients:
        await client.disconnect()


class _Workers:
    """Subscriber processes: started together, each says ``ready`` then ``done N LAST``."""

    def __init__(self, argv: list[list[str]]) -> None:
        self.argv = argv
        self.processes: list[trio.Process] = []
        self.buffers: list[bytes] = []

    async def _line(self, i: int, word: bytes, within: float) -> bytes:
        process = self.processes[i]
        assert process.stdout is not None
        with trio.fail_after(within):
            while True:
                for line in self.buffers[i].split(b"\n")[:-1]:
                    if line.startswith(word):
                        return line
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"fan-out worker {i} exited: {self.buffers[i]!r}")
                self.buffers[i] += chunk

    async def start(self) -> None:
        for argv in self.argv:
            self.processes.append(await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE))
            self.buffers.append(b"")
        for i in range(len(self.processes)):
            await self._line(i, b"ready", 300)

    async def results(self) -> tuple[int, float]:
        total, last = 0, 0.0
        for i in range(len(self.processes)):
            _, count, when = (await self._line(i, b"done", 300)).split()
            total += int(count)
            last = max(last, float(when))
        return total, last

    async def aclose(self) -> None:
        for process in self.processes:
            process.kill()
        with trio.CancelScope(shield=True):
            for process in self.processes:
                await process.wait()


def _worker_argv(kind: str, target: str, count: int, expect: int) -> list[str]:
    return [sys.executable, __file__, "--worker", kind, target, str(count), str(expect)]


async def _fanout_rate(
    workers: _Workers, expected: int, publish: Callable[[], Awaitable[float]]
) -> float:
    """Start the subscriber processes, run ``publish()`` (it returns when publishing started, as
    time.time()) and return deliveries per second until the last one arrived."""
    try:
        await workers.start()
        start = await publish()
        total, last = await workers.results()
    finally:
        await workers.aclose()
    if total != expected:
        raise RuntimeError(f"{total} deliveries of {expected}")
    return total / (last - start)


async def _ours_fanout(subscribers: int, processes: int, messages: int) -> float:
    async with open_server_process(extra_args=SERVER_ARGS) as server:
        share = subscribers // processes
        target = f"{server.url} {server.data_dir}"
        workers = _Workers([_worker_argv("ours", target, share, messages)] * processes)

        async def publish() -> float:
            with tempfile.TemporaryDirectory() as journal:
                async with open_realtime(
                    server.url, token=server.token("pub"), journal_dir=journal, config=CONFIG
                ) as conn:
                    start = time.time()
                    for first in range(0, messages, 100):
                        await conn.send_many(
                            FANOUT_CHANNEL, "m", [PAYLOAD] * min(100, messages - first)
                        )
                    await conn.drain()
            return start

        return await _fanout_rate(workers, share * processes * messages, publish)


async def _socketio_fanout(subscribers: int, processes: int, messages: int) -> float:
    import socketio

    async with peer_process("socketio") as port:
        share = subscribers // processes
        workers = _Workers([_worker_argv("socketio", str(port), share, messages)] * processes)

        async def run() -> float:
            client = socketio.AsyncClient()
            await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
            start = time.time()
            for _ in range(messages):
                await client.emit("publish", PAYLOAD)
            await client.call("msg", 1)  # every publish has reached the server
            await client.disconnect()
            return start

        async def publish() -> float:
            start: float = await trio.to_thread.run_sync(lambda: asyncio.run(run()))
            return start

        return await _fanout_rate(workers, share * processes * messages, publish)


def bench_fanout(args: argparse.Namespace) -> dict[str, Any]:
    subs, procs, n = args.subscribers, args.processes, args.fanout_messages
    print(
        f"5. fan-out: 1 publisher, {subs:,} subscribers in {procs} processes, {n} messages; "
        f"deliveries/s (median of {args.repeats})"
    )
    runs = _rounds(
        args.repeats,
        {
            "python-socketio broadcast to a room": lambda: trio.run(
                _socketio_fanout, subs, procs, n
            ),
            "trio_realtime channel": lambda: trio.run(_ours_fanout, subs, procs, n),
        },
    )
    sio, ours = runs.values()
    vs_sio = _ratio(ours, sio)
    print(f"  => {vs_sio:.2f}x python-socketio (goal >= 2x; median of the per-round ratios)")
    return {
        "subscribers": subs,
        "processes": procs,
        "messages": n,
        **_medians(runs, ("python_socketio", "trio_realtime")),
        "vs_socketio": vs_sio,
        "goals": {"vs_socketio": 2.0},
    }


# --- 6: memory -------------------------------------------------------------------------------------


async def _memory(attempts: int, limit: int) -> dict[str, float]:
    """Send ``attempts`` events at a server that never answers (a socket nobody accepts on) and
    see how much the process grows. The outbox refuses what is over its limit (OutboxFull)."""
    import gc

    import psutil

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # the TCP handshake completes; the WebSocket one never does
    port = listener.getsockname()[1]
    config = RealtimeConfig(
        network_monitor=False,
        max_outbox_messages=attempts,
        max_outbox_bytes=limit,
        outbox_full="raise",
        connect_timeout=1.0,  # open_realtime waits for the first attempt: make it short
    )
    process = psutil.Process()
    with listener, tempfile.TemporaryDirectory() as journal:
        async with open_realtime(
            f"ws://127.0.0.1:{port}/realtime", token="t", journal_dir=journal, config=config
        ) as conn:
            await conn.send("bench", "m", PAYLOAD)  # warm up: journal open, first segment
            gc.collect()
            before = process.memory_info().rss
            queued = 1
            refused = 0
            payloads = [PAYLOAD] * 1000
            while queued + refused < attempts:
                try:
                    await conn.send_many("bench", "m", payloads)
                    queued += len(payloads)
                except OutboxFull:
                    refused += len(payloads)
            gc.collect()
            grown = process.memory_info().rss - before
            outbox_bytes = conn.metrics.outbox_bytes
            await conn.aclose(abort=True)
    return {"queued": queued, "refused": refused, "rss_growth": grown, "outbox_bytes": outbox_bytes}


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    attempts, limit = args.memory_messages, args.outbox_bytes
    print(
        f"6. memory: {attempts:,} sends at a stalled server, max_outbox_bytes {limit / 2**20:g} MiB "
        f"(median of {args.repeats})"
    )
    # Each run in a fresh process: freed memory stays in a process's RSS, so a second run in
    # the same process would reuse it and seem to grow by nothing.
    runs = []
    for _ in range(args.repeats):
        argv = [sys.executable, __file__, "--worker", "memory", str(attempts), str(limit), "-"]
        output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    bound = limit + 20 * 2**20
    print(f"  queued {figures['queued']:,.0f}, refused with OutboxFull {figures['refused']:,.0f}")
    print(
        f"  RSS grew {figures['rss_growth'] / 2**20:,.1f} MiB; bound {bound / 2**20:,.0f} MiB "
        f"(max_outbox_bytes + 20 MiB) => {figures['rss_growth'] / bound:.2f}x (goal <= 1.0x)"
    )
    return {
        "attempts": attempts,
        "max_outbox_bytes": limit,
        **figures,
        "bound_bytes": bound,
        "vs_bound": figures["rss_growth"] / bound,
        "goals": {"vs_bound": 1.0},
    }


# --- 7: a consumer that also sends -----------------------------------------------------------------


async def _consume(durability: str, count: int, chat_rate: float) -> float:
    """Messages per second a subscriber processes (``messages()``, each one moving its cursor)
    while it also sends ``chat_rate`` events per second, as a chat client does; a publisher
    without journal sends ``count`` events to its channel in batches."""
    config = attrs.evolve(CONFIG, durability=durability)
    publisher_config = attrs.evolve(CONFIG, durability="memory")
    async with open_server_process(extra_args=SERVER_ARGS) as server:
        with tempfile.TemporaryDirectory() as journal:
            async with (
                open_realtime(
                    server.url, token=server.token("reader"), journal_dir=journal, config=config
                ) as reader,
                open_realtime(
                    server.url, token=server.token("publisher"), config=publisher_config
                ) as publisher,
                trio.open_nursery() as nursery,
            ):
                await reader.subscribe("bench")

                async def chat() -> None:
                    while True:
                        await reader.send("chat", "m", PAYLOAD)
                        await trio.sleep(1 / chat_rate)

                async def publish() -> None:
                    for _ in range(0, count, 500):
                        await publisher.send_many("bench", "m", [PAYLOAD] * 500)

                nursery.start_soon(chat)
                start = time.perf_counter()
                nursery.start_soon(publish)
                processed = 0
                async with reader.messages("bench") as stream:
                    async for _ in stream:
                        processed += 1
                        if processed == count:
                            break
                elapsed = time.perf_counter() - start
                nursery.cancel_scope.cancel()
    return count / elapsed


def bench_consumer(args: argparse.Namespace) -> dict[str, Any]:
    count, rate = args.consumer_messages, args.rate
    print(
        f"7. a subscriber processing {count:,} messages while it sends {rate:g}/s, msg/s "
        f"(median of {args.repeats})"
    )
    runs = _rounds(
        args.repeats,
        {
            "no journal (durability=memory)": lambda: trio.run(_consume, "memory", count, rate),
            "journal (durability=always)": lambda: trio.run(_consume, "always", count, rate),
        },
    )
    memory, always = runs.values()
    ratio = _ratio(always, memory)
    print(f"  => {ratio:.2f}x the reader without journal (goal >= 0.8x)")
    return {
        "messages": count,
        "chat_rate_per_second": rate,
        **_medians(runs, ("memory", "always")),
        "vs_memory": ratio,
        "goals": {"vs_memory": 0.8},
    }


# --- 8: the Socket.IO transport against python-socketio --------------------------------------------

SIO_NAMESPACE = "/chat"
SIO_CHANNEL = "bench"
#: The variants of benchmark 8, in the order of the first round (each round starts one later).
SIO_VARIANTS = ("python_socketio", "ours_always", "ours_memory")
SIO_LABELS = {
    "python_socketio": "python-socketio AsyncClient, call()",
    "ours_always": "trio_realtime socketio://, durability=always",
    "ours_memory": "trio_realtime socketio://, durability=memory",
}


def _sio_data(key: str) -> dict[str, str]:
    """What python-socketio emits: the same object our transport emits for a send() (its envelope:
    channel, idempotency key, payload), so the server does the same work for both (it remembers
    each key, acks, and broadcasts the event back to the namespace)."""
    return {"channel": SIO_CHANNEL, "idempotency_key": key, "data": PAYLOAD}


def _sio_check(answer: object) -> None:
    if answer != {"ok": True, "duplicate": False}:
        raise RuntimeError(f"unexpected ack from the Socket.IO server: {answer!r}")


def _check_acked(outcome: object) -> None:
    if not isinstance(outcome, Acked) or outcome.duplicate:
        raise RuntimeError(f"unexpected outcome: {outcome!r}")


async def _sio_client(port: int) -> Any:
    """A connected python-socketio client on the namespace, warmed up by one acked emit. The
    server broadcasts every event back to the namespace: a handler discards them (ours reads them
    through messages(), see :func:`_discard_echoes`)."""
    import socketio

    def discard(*_: object) -> None:
        pass

    client = socketio.AsyncClient()
    client.on("m", discard, namespace=SIO_NAMESPACE)
    await client.connect(
        f"http://127.0.0.1:{port}", namespaces=[SIO_NAMESPACE], transports=["websocket"]
    )
    _sio_check(await client.call("m", _sio_data(uuid.uuid4().hex), namespace=SIO_NAMESPACE))
    return client


async def _sio_transport_rate(port: int, messages: int, senders: int) -> float:
    """python-socketio: ``senders`` tasks each emit their share with an ack and await it
    (``call``), so ``senders`` are in flight at once; timed until the last ack."""
    client = await _sio_client(port)
    try:
        tag = uuid.uuid4().hex

        async def sender(k: int) -> None:
            for i in range(messages // senders):
                data = _sio_data(f"{tag}:{k}:{i}")
                _sio_check(await client.call("m", data, namespace=SIO_NAMESPACE, timeout=120))

        start = time.perf_counter()
        await asyncio.gather(*(sender(k) for k in range(senders)))
        return messages // senders * senders / (time.perf_counter() - start)
    finally:
        await client.disconnect()


async def _sio_transport_latencies(port: int, rate: float, count: int) -> list[float]:
    """python-socketio: seconds from ``call`` to its ack, one emit started every 1/rate s."""
    client = await _sio_client(port)
    try:
        tag = uuid.uuid4().hex
        latencies: list[float] = []

        async def one(i: int) -> None:
            start = time.perf_counter()
            answer = await client.call("m", _sio_data(f"{tag}:{i}"), namespace=SIO_NAMESPACE)
            latencies.append(time.perf_counter() - start)
            _sio_check(answer)

        loop = asyncio.get_running_loop()
        first = loop.time()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, first + i / rate - loop.time()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return latencies
    finally:
        await client.disconnect()


async def _discard_echoes(conn: Any) -> None:
    """Read what the server broadcasts back (as an application would) and drop it."""
    async with conn.messages() as stream:
        async for _ in stream:
            pass


@asynccontextmanager
async def _sio_transport(port: int, durability: str) -> AsyncIterator[Any]:
    """Our Socket.IO transport to the namespace, a fresh journal in a temporary directory under
    ``always`` (none under ``memory``), warmed up by one acked send."""
    config = attrs.evolve(CONFIG, durability=durability)
    url = f"socketio://127.0.0.1:{port}{SIO_NAMESPACE}"
    with tempfile.TemporaryDirectory() as tmp:
        journal = None if durability == "memory" else tmp
        async with (
            open_realtime(url, journal_dir=journal, config=config) as conn,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_discard_echoes, conn)
            _check_acked(await (await conn.send(SIO_CHANNEL, "m", PAYLOAD)).wait())
            yield conn
            nursery.cancel_scope.cancel()


async def _ours_transport_rate(port: int, durability: str, messages: int, senders: int) -> float:
    """Ours: ``senders`` tasks each send() their share (each returns once journaled), then every
    receipt is waited for; timed from the first send to the last ack."""
    async with _sio_transport(port, durability) as conn:
        receipts: list[Any] = []

        async def sender() -> None:
            for _ in range(messages // senders):
                receipts.append(await conn.send(SIO_CHANNEL, "m", PAYLOAD))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(senders):
                nursery.start_soon(sender)
        for receipt in receipts:
            _check_acked(await receipt.wait())
        elapsed = time.perf_counter() - start
    return len(receipts) / elapsed


async def _ours_transport_latencies(
    port: int, durability: str, rate: float, count: int
) -> list[float]:
    """Ours: seconds from calling send() to the ack (the receipt), one send every 1/rate s."""
    latencies: list[float] = []
    async with _sio_transport(port, durability) as conn:

        async def one() -> None:
            start = time.perf_counter()
            receipt = await conn.send(SIO_CHANNEL, "m", PAYLOAD)
            outcome = await receipt.wait()
            latencies.append(time.perf_counter() - start)
            _check_acked(outcome)

        await _paced(rate, count, one)
    return latencies


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds (as conn.metrics computes its percentiles)."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


def bench_socketio_transport(args: argparse.Namespace) -> dict[str, Any]:
    n, k, rate, count = args.sio_messages, args.sio_senders, args.sio_rate, args.sio_latency_count
    if n < k or n % k:
        raise SystemExit("--sio-messages must be a multiple of --sio-senders")
    recovery = not args.sio_no_recovery
    print(
        f"8. Socket.IO transport vs python-socketio, one Node socket.io server "
        f"(recovery {'on' if recovery else 'off'}): {n:,} x {len(PAYLOAD)} B, {k} in flight, "
        f"msg/s; send->ack at {rate:g}/s x {count}, ms ({args.repeats} rounds)"
    )

    def throughput(port: int, variant: str) -> float:
        if variant == "python_socketio":
            return asyncio.run(_sio_transport_rate(port, n, k))
        return float(trio.run(_ours_transport_rate, port, variant.removeprefix("ours_"), n, k))

    def latency(port: int, variant: str) -> dict[str, float]:
        if variant == "python_socketio":
            samples = asyncio.run(_sio_transport_latencies(port, rate, count))
        else:
            durability = variant.removeprefix("ours_")
            samples = trio.run(_ours_transport_latencies, port, durability, rate, count)
        return _percentiles(samples)

    rates: dict[str, list[float]] = {v: [] for v in SIO_VARIANTS}
    latencies: dict[str, list[dict[str, float]]] = {v: [] for v in SIO_VARIANTS}
    with node_socketio_server(*(() if recovery else ("--no-recovery",))) as port:
        for r in range(args.repeats):
            # Every variant in every round, against the same server; the order turns each round.
            order = SIO_VARIANTS[r % 3 :] + SIO_VARIANTS[: r % 3]
            for variant in order:
                rates[variant].append(throughput(port, variant))
            for variant in order:
                latencies[variant].append(latency(port, variant))
            shown = ", ".join(f"{v} {rates[v][-1]:,.0f}" for v in SIO_VARIANTS)
            print(f"  round {r + 1}: msg/s {shown}")
    sio = rates["python_socketio"]
    vs: dict[str, Any] = {}
    for variant in ("ours_always", "ours_memory"):
        vs[variant] = _spread([o / b for o, b in zip(rates[variant], sio, strict=True)])
    ms = {
        v: {q: statistics.median(run[q] for run in latencies[v]) for q in ("p50", "p99")}
        | {"runs": latencies[v]}
        for v in SIO_VARIANTS
    }
    for v in SIO_VARIANTS:
        s = _spread(rates[v])
        ratio = f"   {vs[v]['median']:.2f}x python-socketio" if v in vs else ""
        print(
            f"  {SIO_LABELS[v]:<46} {s['median']:>8,.0f} msg/s ({s['min']:,.0f}-{s['max']:,.0f})"
            f"  p50 {ms[v]['p50']:6.2f} ms  p99 {ms[v]['p99']:6.2f} ms{ratio}"
        )
    print("  (ratios: medians of the per-round ratios)")
    return {
        "messages": n,
        "senders": k,
        "payload_bytes": len(PAYLOAD),
        "server": {"recovery": recovery, **node_versions()},
        "python_socketio_version": importlib.metadata.version("python-socketio"),
        "msg_per_second": {v: _spread(rates[v]) for v in SIO_VARIANTS},
        "vs_socketio": vs,
        "latency": {"rate_per_second": rate, "sends": count, "ms": ms},
    }


# --- 9: several server nodes on Redis ----------------------------------------------------------

NODES_FAN = "fan"
NODES_LAT = "lat"
_NODE_LISTENING = re.compile(rb"trio-realtime server on ws://[^:]+:(\d+)/realtime")


@attrs.frozen
class _Scenario:
    key: str
    label: str
    nodes: int
    #: Redis' ``--appendfsync``; None: the default store, SQLite in the node's data directory.
    appendfsync: str | None


def _node_scenarios(args: argparse.Namespace) -> list[_Scenario]:
    scenarios = [_Scenario("sqlite", "SQLite, 1 node (baseline)", 1, None)]
    for n in args.node_counts:
        nodes = f"{n} node{'s' if n > 1 else ''}"
        scenarios.append(_Scenario(f"redis_{n}", f"Redis always, {nodes}", n, "always"))
    if args.node_everysec:
        n = args.node_everysec
        nodes = f"{n} node{'s' if n > 1 else ''}"
        key = f"redis_{n}_everysec"
        scenarios.append(_Scenario(key, f"Redis everysec, {nodes}", n, "everysec"))
    return scenarios


class _Nodes:
    """``trio-realtime serve`` processes, one per data directory, on the same ``--store`` (none:
    each its own SQLite), all started at once; ``urls`` and ``pids`` once :meth:`start` returned."""

    def __init__(self, data_dirs: list[str], store: str | None) -> None:
        self.data_dirs = data_dirs
        self.store = store
        self.processes: list[trio.Process] = []
        self.urls: list[str] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def start(self) -> None:
        for data_dir in self.data_dirs:
            argv = [sys.executable, "-m", "trio_realtime", "serve", "--host", "127.0.0.1"]
            argv += ["--port", "0", "--data", data_dir, "--log-level", "WARNING", *SERVER_ARGS]
            if self.store is not None:
                argv += ["--store", self.store]
            log = os.open(os.path.join(data_dir, "server.log"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=log)
            finally:
                os.close(log)
            self.processes.append(process)
        ports = [0] * len(self.processes)

        async def listening(i: int) -> None:
            stdout = self.processes[i].stdout
            assert stdout is not None
            output = b""
            while (match := _NODE_LISTENING.search(output)) is None:
                chunk = await stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"server node {i} exited: {output!r} (see its server.log)")
                output += chunk
            ports[i] = int(match.group(1))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(len(self.processes)):
                    nursery.start_soon(listening, i)
        self.urls = [f"ws://127.0.0.1:{port}/realtime" for port in ports]

    async def aclose(self) -> None:
        for process in self.processes:
            process.kill()
        with trio.CancelScope(shield=True):
            for process in self.processes:
                await process.wait()


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds each group of processes has used so far (all their threads)."""
    import psutil

    seconds = {}
    for group, members in pids.items():
        total = 0.0
        for pid in members:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        seconds[group] = total
    return seconds


async def _redis_cli(port: int, *command: str) -> str:
    result = await trio.run_process(
        ["redis-cli", "-p", str(port), *command], capture_stdout=True, check=True
    )
    return result.stdout.decode()


async def _redis_commandstats(port: int) -> dict[str, dict[str, float]]:
    """Redis' own time per command since the last ``CONFIG RESETSTAT`` (calls, microseconds of
    execution: a script's Lua included; the AOF write and fsync are not in it)."""
    stats = {}
    for line in (await _redis_cli(port, "INFO", "commandstats")).splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, fields = line.removeprefix("cmdstat_").partition(":")
        values = dict(field.split("=", 1) for field in fields.split(","))
        stats[name] = {"calls": int(values["calls"]), "usec": int(values["usec"])}
    return stats


async def _node_subscriber_process(urls: str, data_dir: str, count: int, expect: int) -> None:
    """Benchmark 9's subscribers: ``count`` connections spread over the nodes (``urls``, comma
    separated; connection i on node i mod n), each subscribed to the fan-out channel. Prints
    ``ready`` once all are subscribed, ``done N LAST`` once each has read ``expect`` events
    (deliveries, time.time() of the last), then keeps the connections open until killed."""
    from trio_realtime import Message
    from trio_realtime.server import load_or_create_secret, make_token

    nodes = urls.split(",")
    secret = load_or_create_secret(data_dir)
    config = RealtimeConfig(network_monitor=False, durability=Durability.MEMORY)
    subscribed = finished = delivered = 0
    last = 0.0
    all_subscribed, all_finished = trio.Event(), trio.Event()

    async def subscriber(i: int) -> None:
        nonlocal subscribed, finished, delivered, last
        token = make_token(secret, f"sub{i}")
        async with open_realtime(nodes[i % len(nodes)], token=token, config=config) as conn:
            stream = conn.messages()
            await conn.subscribe(NODES_FAN)
            subscribed += 1
            if subscribed == count:
                all_subscribed.set()
            got = 0
            async for message in stream:
                if isinstance(message, Message):
                    got += 1
                    if got == expect:
                        delivered += got
                        last = max(last, time.time())
                        finished += 1
                        if finished == count:
                            all_finished.set()

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(subscriber, i)
        await all_subscribed.wait()
        print("ready", flush=True)
        await all_finished.wait()
        print(f"done {delivered} {last}", flush=True)


def _latency_payload(i: int) -> str:
    number = f"{i:08d}"
    return number + PAYLOAD[len(number) :]


async def _node_measures(
    scenario: _Scenario,
    nodes: _Nodes,
    workers: _Workers,
    secret: bytes,
    redis: RedisProcess | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One run's two phases against running nodes and subscribers: fan-out, then latency."""
    from trio_realtime import Message
    from trio_realtime.server import make_token

    urls, publishers_n = nodes.urls, args.node_publishers
    share = args.node_messages // publishers_n
    config = attrs.evolve(CONFIG, durability=Durability.MEMORY)
    pids = {
        "nodes": nodes.pids,
        "subscribers": [process.pid for process in workers.processes],
        "clients": [os.getpid()],
    }
    if redis is not None:
        pids["redis"] = [redis.pid]

    async def phase_start() -> dict[str, float]:
        if redis is not None:
            await _redis_cli(redis.port, "CONFIG", "RESETSTAT")
        return _cpu_seconds(pids)

    async def phase_end(before: dict[str, float], elapsed: float, per: int) -> dict[str, Any]:
        """Cores busy per group over the phase, and CPU microseconds per one of ``per``."""
        after = _cpu_seconds(pids)
        used = {group: after[group] - before[group] for group in pids}
        figures: dict[str, Any] = {
            "cores": {group: seconds / elapsed for group, seconds in used.items()},
            "us_each": {group: seconds / per * 1e6 for group, seconds in used.items()},
        }
        if redis is not None:
            figures["redis_commands"] = await _redis_commandstats(redis.port)
        return figures

    async with AsyncExitStack() as stack:

        async def connect(node: int, user: str) -> Any:
            token = make_token(secret, user)
            return await stack.enter_async_context(
                open_realtime(urls[node % len(urls)], token=token, config=config)
            )

        publishers = [await connect(i, f"pub{i}") for i in range(publishers_n)]
        sender = await connect(0, "sender")
        probes = [await connect(node, f"probe{node}") for node in range(len(urls))]
        for probe in probes:
            await probe.subscribe(NODES_LAT)
        for conn in [*publishers, sender]:  # connected, and each node's write path warm
            _check_acked(await (await conn.send("warm", "m", PAYLOAD)).wait())

        # (a) fan-out: every publisher sends its share flat out.
        async def publish(conn: Any) -> None:
            for _ in range(share):
                await conn.send(NODES_FAN, "m", PAYLOAD)
            await conn.drain()

        before = await phase_start()
        start, started = time.time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for conn in publishers:
                nursery.start_soon(publish, conn)
        stored = share * publishers_n / (time.perf_counter() - started)
        with trio.fail_after(300):
            total, last = await workers.results()
        expected = share * publishers_n * args.node_subscribers
        fanout = await phase_end(before, time.perf_counter() - started, expected)
        if total != expected:
            raise RuntimeError(f"{total} deliveries of {expected}")

        # (b) latency: one send at a time through node 1, to a channel with one subscriber on each
        # node (the fan-out's subscribers stay connected, idle); send->delivery on the last node.
        warm, count = 20, args.node_latency_count
        sent_at: list[float] = []
        received: list[dict[int, float]] = [{} for _ in probes]
        all_received = [trio.Event() for _ in probes]

        async def watch(k: int) -> None:
            async with probes[k].messages(NODES_LAT) as stream:
                async for message in stream:
                    if isinstance(message, Message):
                        received[k][int(message.payload[:8])] = time.perf_counter()
                        if len(received[k]) == warm + count:
                            all_received[k].set()

        async with trio.open_nursery() as nursery:
            for k in range(len(probes)):
                nursery.start_soon(watch, k)
            acks = []
            before = await phase_start()
            started = time.perf_counter()
            for i in range(warm + count):
                sent_at.append(time.perf_counter())
                outcome = await (await sender.send(NODES_LAT, "m", _latency_payload(i))).wait()
                _check_acked(outcome)
                acks.append(time.perf_counter() - sent_at[i])
            with trio.fail_after(60):
                for event in all_received:
                    await event.wait()
            latency = await phase_end(before, time.perf_counter() - started, warm + count)
            nursery.cancel_scope.cancel()
        deliveries = [received[-1][i] - sent_at[i] for i in range(warm, warm + count)]
    return {
        "deliveries_per_second": total / (last - start),
        "stored_per_second": stored,
        "fanout_cpu": fanout,
        "ack_ms": _percentiles(acks[warm:]),
        "delivery_ms": _percentiles(deliveries),
        "latency_cpu": latency,
    }


def _node_run(scenario: _Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """One run of a scenario: its Redis (fresh, if any), its nodes, the subscriber process, the
    two phases; everything stopped at the end."""
    from trio_realtime.server import load_or_create_secret

    with tempfile.TemporaryDirectory(prefix="bench-nodes-") as tmp:
        data_dirs = [os.path.join(tmp, f"node{i}") for i in range(scenario.nodes)]
        secret = load_or_create_secret(data_dirs[0])  # the nodes accept the same tokens
        for data_dir in data_dirs[1:]:
            os.makedirs(data_dir)
            shutil.copy(os.path.join(data_dirs[0], "server.secret"), data_dir)

        async def run(redis: RedisProcess | None) -> dict[str, Any]:
            store = None if redis is None else f"redis://127.0.0.1:{redis.port}/0?prefix=bench"
            nodes = _Nodes(data_dirs, store)
            try:
                await nodes.start()
                target = f"{','.join(nodes.urls)} {data_dirs[0]}"
                expect = args.node_messages // args.node_publishers * args.node_publishers
                share = args.node_subscribers // args.node_processes
                argv = _worker_argv("nodes", target, share, expect)
                workers = _Workers([argv] * args.node_processes)
                try:
                    await workers.start()
                    return await _node_measures(scenario, nodes, workers, secret, redis, args)
                finally:
                    await workers.aclose()
            finally:
                await nodes.aclose()

        if scenario.appendfsync is None:
            return trio.run(run, None)
        with redis_server(os.path.join(tmp, "redis"), scenario.appendfsync) as redis:
            return trio.run(run, redis)


def bench_multi_node(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = _node_scenarios(args)
    p, s, n = args.node_publishers, args.node_subscribers, args.node_messages
    if n % p or any(p % k or s % (k * args.node_processes) for k in args.node_counts):
        raise SystemExit(
            "--node-publishers, and --node-subscribers per process, must be multiples of every "
            "--node-counts, and --node-messages a multiple of --node-publishers"
        )
    print(
        f"9. several server nodes: {p} publishers send {n:,} events to one channel, {s} "
        f"subscribers in {args.node_processes} processes, both spread over the nodes; then {args.node_latency_count} sends one at "
        f"a time through node 1; {args.node_rounds} rounds, {os.cpu_count()} cores"
    )
    runs: dict[str, list[dict[str, Any]]] = {sc.key: [] for sc in scenarios}
    for r in range(args.node_rounds):
        # Every scenario in every round; the order turns each round.
        order = scenarios[r % len(scenarios) :] + scenarios[: r % len(scenarios)]
        for scenario in order:
            runs[scenario.key].append(_node_run(scenario, args))
        shown = ", ".join(
            f"{sc.key} {runs[sc.key][-1]['deliveries_per_second']:,.0f}/s "
            f"{runs[sc.key][-1]['ack_ms']['p50']:.2f} ms"
            for sc in scenarios
        )
        print(f"  round {r + 1}: {shown}")
    base = runs["sqlite"]

    def per_round(key: str, value: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        return _spread([value(o) / value(b) for o, b in zip(runs[key], base, strict=True)])

    figures: dict[str, Any] = {}
    for sc in scenarios:
        mine = runs[sc.key]
        figure: dict[str, Any] = {
            "label": sc.label,
            "nodes": sc.nodes,
            "store": "sqlite" if sc.appendfsync is None else "redis",
            "appendfsync": sc.appendfsync,
            "deliveries_per_second": _spread([run["deliveries_per_second"] for run in mine]),
            "stored_per_second": _spread([run["stored_per_second"] for run in mine]),
            **{
                f"{what}_ms": {
                    q: _spread([run[f"{what}_ms"][q] for run in mine]) for q in ("p50", "p99")
                }
                for what in ("ack", "delivery")
            },
            "fanout_cores": {
                group: statistics.median(run["fanout_cpu"]["cores"][group] for run in mine)
                for group in mine[0]["fanout_cpu"]["cores"]
            },
            "latency_cores": {
                group: statistics.median(run["latency_cpu"]["cores"][group] for run in mine)
                for group in mine[0]["latency_cpu"]["cores"]
            },
            # CPU microseconds per delivery (fan-out phase) and per send (latency phase).
            "fanout_us_per_delivery": {
                group: statistics.median(run["fanout_cpu"]["us_each"][group] for run in mine)
                for group in mine[0]["fanout_cpu"]["us_each"]
            },
            "latency_us_per_send": {
                group: statistics.median(run["latency_cpu"]["us_each"][group] for run in mine)
                for group in mine[0]["latency_cpu"]["us_each"]
            },
        }
        if sc.appendfsync is not None:
            figure["redis_commands"] = {
                phase: _median_commands([run[f"{phase}_cpu"]["redis_commands"] for run in mine])
                for phase in ("fanout", "latency")
            }
        if sc.key != "sqlite":
            figure["vs_sqlite"] = {
                "deliveries": per_round(sc.key, lambda run: run["deliveries_per_second"]),
                "stored": per_round(sc.key, lambda run: run["stored_per_second"]),
                "ack_p50": per_round(sc.key, lambda run: run["ack_ms"]["p50"]),
                "ack_p99": per_round(sc.key, lambda run: run["ack_ms"]["p99"]),
                "delivery_p50": per_round(sc.key, lambda run: run["delivery_ms"]["p50"]),
            }
        figures[sc.key] = figure
    for sc in scenarios:
        f = figures[sc.key]
        d, a = f["deliveries_per_second"], f["ack_ms"]
        vs = f.get("vs_sqlite")
        ratio = (
            f"  {vs['deliveries']['median']:.2f}x ({vs['deliveries']['min']:.2f}-"
            f"{vs['deliveries']['max']:.2f}), ack p50 {vs['ack_p50']['median']:.2f}x"
            if vs
            else "  (baseline)"
        )
        print(
            f"  {sc.label:<32} {d['median']:>9,.0f} deliveries/s ({d['min']:,.0f}-{d['max']:,.0f})"
            f"  ack p50 {a['p50']['median']:5.2f} p99 {a['p99']['median']:6.2f} ms"
            f"  delivery p50 {f['delivery_ms']['p50']['median']:5.2f} ms{ratio}"
        )
    print("  (ratios: medians of the per-round ratios to SQLite, min-max)")
    return {
        "publishers": p,
        "subscribers": s,
        "subscriber_processes": args.node_processes,
        "messages": n,
        "payload_bytes": len(PAYLOAD),
        "latency_sends": args.node_latency_count,
        "repeats": args.node_rounds,
        "cores": os.cpu_count(),
        "redis_version": redis_version(),
        "scenarios": figures,
        # Each run's figures, without Redis' command counts (their medians are in "scenarios").
        "runs": {
            key: [
                {name: value for name, value in run.items() if not name.endswith("_cpu")}
                | {
                    f"{phase}_cores": run[f"{phase}_cpu"]["cores"]
                    for phase in ("fanout", "latency")
                }
                | {
                    "fanout_us_per_delivery": run["fanout_cpu"]["us_each"],
                    "latency_us_per_send": run["latency_cpu"]["us_each"],
                }
                for run in mine
            ]
            for key, mine in runs.items()
        },
    }


def _median_commands(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per Redis command, the median of the runs' calls and microseconds."""
    names = sorted({name for run in runs for name in run})
    return {
        name: {
            field: statistics.median(run.get(name, {}).get(field, 0) for run in runs)
            for field in ("calls", "usec")
        }
        for name in names
    }


BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "throughput": bench_throughput,
    "send_many": bench_send_many,
    "latency": bench_latency,
    "recovery": bench_recovery,
    "fanout": bench_fanout,
    "memory": bench_memory,
    "consumer": bench_consumer,
    "socketio_transport": bench_socketio_transport,
    "multi_node": bench_multi_node,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--senders", type=int, default=100, help="concurrent send() callers")
    parser.add_argument("--batch", type=int, default=500, help="payloads per send_many call")
    parser.add_argument("--pending", type=int, default=1_000_000, help="events in the journal")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2, help="subscriber processes")
    parser.add_argument("--fanout-messages", type=int, default=100)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument("--outbox-bytes", type=int, default=64 * 2**20, help="max_outbox_bytes")
    parser.add_argument("--rate", type=float, default=200.0, help="sends per second (latency)")
    parser.add_argument("--latency-count", type=int, default=1000, help="sends per latency run")
    parser.add_argument("--consumer-messages", type=int, default=20_000)
    parser.add_argument(
        "--sio-messages", type=int, default=2000, help="messages per run (socketio_transport)"
    )
    parser.add_argument(
        "--sio-senders", type=int, default=100, help="in flight at once (socketio_transport)"
    )
    parser.add_argument(
        "--sio-rate",
        type=float,
        default=100.0,
        help="sends per second (socketio_transport latency)",
    )
    parser.add_argument(
        "--sio-latency-count",
        type=int,
        default=300,
        help="sends per socketio_transport latency run",
    )
    parser.add_argument(
        "--sio-no-recovery",
        action="store_true",
        help="run the Node server with --no-recovery (a diagnostic: events then carry no offset)",
    )
    parser.add_argument(
        "--node-counts",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="server nodes on one Redis (multi_node)",
    )
    parser.add_argument(
        "--node-everysec",
        type=int,
        default=1,
        help="also this many nodes on a Redis with appendfsync everysec (0: not) (multi_node)",
    )
    parser.add_argument(
        "--node-publishers", type=int, default=6, help="publishers spread over the nodes"
    )
    parser.add_argument(
        "--node-subscribers", type=int, default=60, help="subscribers spread over the nodes"
    )
    parser.add_argument(
        "--node-processes", type=int, default=2, help="subscriber processes (multi_node)"
    )
    parser.add_argument(
        "--node-messages", type=int, default=600, help="events all publishers send (multi_node)"
    )
    parser.add_argument(
        "--node-rounds",
        type=int,
        default=3,
        help="rounds of multi_node (each runs every scenario; --repeats does not apply)",
    )
    parser.add_argument(
        "--node-latency-count", type=int, default=200, help="sends one at a time (multi_node)"
    )
    args = parser.parse_args()
    if args.worker:
        kind, target, count, expect = args.worker
        if kind == "memory":
            print(json.dumps(trio.run(_memory, int(target), int(count))))
        elif kind == "nodes":
            urls, data_dir = target.split()
            trio.run(_node_subscriber_process, urls, data_dir, int(count), int(expect))
        elif kind == "ours":
            url, data_dir = target.split()
            trio.run(_ours_subscriber_process, url, data_dir, int(count), int(expect))
        else:
            asyncio.run(_socketio_subscriber_process(int(target), int(count), int(expect)))
        return
    path = OUT_DIR / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for name, bench in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        results[name] = {"repeats": args.repeats, **bench(args)}
        results["machine"] = machine()
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
