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
6. memory: RSS with 1,000,000 sends against a stalled server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import OUT_DIR, machine, peer_process, percentile  # noqa: E402

from trio_realtime import RealtimeConfig, open_realtime  # noqa: E402
from trio_realtime.testing import open_server_process  # noqa: E402

PAYLOAD = "x" * 200
#: Our server's per-connection limits are for abuse, not for a benchmark driving it flat out.
SERVER_ARGS = ("--rate-limit", "1000000", "--send-queue-size", "1000000")
CONFIG = RealtimeConfig(network_monitor=False)


def _run_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args)


def _median_of(repeats: int, label: str, measure: Callable[[], float]) -> float:
    values = []
    for _ in range(repeats):
        values.append(measure())
    value = statistics.median(values)
    print(f"  {label:<44} {value:>12,.0f}   (runs: {', '.join(f'{v:,.0f}' for v in values)})")
    return value


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


def _with_peer(kind: str, fn: Callable[[int], Awaitable[float]]) -> float:
    async def run() -> float:
        async with peer_process(kind) as port:
            return await fn(port)

    return float(trio.run(run))


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
    raw = _median_of(
        args.repeats,
        "raw trio-websocket, fire-and-forget",
        lambda: _with_peer("raw", lambda port: _raw_rate(port, n)),
    )
    sio = _median_of(args.repeats, "python-socketio, emit with ack", lambda: _socketio(n))
    ours = _median_of(
        args.repeats,
        f"trio_realtime send(), {args.senders} senders",
        lambda: _run_trio(_ours_rate, n, args.senders, None),
    )
    print(f"  => {ours / raw:.2f}x raw (goal >= 1.0x), {ours / sio:.2f}x socketio (goal >= 4x)")
    return {
        "messages": n,
        "payload_bytes": len(PAYLOAD),
        "senders": args.senders,
        "raw_trio_websocket": raw,
        "python_socketio": sio,
        "trio_realtime": ours,
        "vs_raw": ours / raw,
        "vs_socketio": ours / sio,
        "goals": {"vs_raw": 1.0, "vs_socketio": 4.0},
    }


def bench_send_many(args: argparse.Namespace) -> dict[str, Any]:
    n = args.messages
    print(f"2. send_many throughput, {n:,} x {len(PAYLOAD)} B in batches of {args.batch}, msg/s")
    raw = _median_of(
        args.repeats,
        "raw trio-websocket, fire-and-forget",
        lambda: _with_peer("raw", lambda port: _raw_rate(port, n)),
    )
    ours = _median_of(
        args.repeats,
        f"trio_realtime send_many({args.batch})",
        lambda: _run_trio(_ours_rate, n, 1, args.batch),
    )
    print(f"  => {ours / raw:.2f}x raw (goal >= 4x)")
    return {
        "messages": n,
        "batch": args.batch,
        "raw_trio_websocket": raw,
        "trio_realtime": ours,
        "vs_raw": ours / raw,
        "goals": {"vs_raw": 4.0},
    }


BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "throughput": bench_throughput,
    "send_many": bench_send_many,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--senders", type=int, default=100, help="concurrent send() callers")
    parser.add_argument("--batch", type=int, default=500, help="payloads per send_many call")
    args = parser.parse_args()
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
