"""The chaos run: two client processes exchange messages through a FaultProxy while the proxy
resets, delays and black-holes their links and both clients and the server are SIGKILLed.

    python reliability/chaos.py --messages 10000 --client-kills 20 --server-kills 5 --out FILE

Checks, from the server's SQLite file and from what each client process reported: every message
stored exactly once and in each sender's order, every send that returned among them, and every
message delivered to the other client. Alice commits each message she handles
(``stream.commit()``): killed while handling one, she gets that one again after her restart
(counted as ``redelivered``, bounded by her kills). Bob moves on without committing, the default:
his position is written within ``MARK_DELAY``, so he may get again what he handled in the last
few milliseconds before a kill (counted apart, not bounded). The same workload is first run
without faults; the report gives the time ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

CHANNEL = "chaos"
NAMES = ("alice", "bob")
COMMITS = "alice"  # the receiver that commits each message it handles


# --- the client process ---------------------------------------------------------------------


async def client(url: str, journal: str, token: str, me: str, total: int, report: int) -> None:
    """Send ``{"n": i, "from": me}`` for i up to ``total`` - 1 (continuing where the journal says
    it stopped) and receive the channel; report each returned send (``s SEQ``), each received
    message (``r SENDER N OFFSET``) and the end of sending (``d``) on file descriptor ``report``."""
    from trio_realtime import Message, RealtimeConfig, open_realtime

    config = RealtimeConfig(
        initial_retry_delay=0.02,
        max_retry_delay=0.25,
        heartbeat_interval=0.5,
        heartbeat_timeout=1.0,
        connect_timeout=2.0,
        network_monitor=False,
        close_grace_period=0,
        log_level="INFO" if os.environ.get("CHAOS_DEBUG") else "WARNING",
    )

    if os.environ.get("CHAOS_DEBUG"):
        import logging

        logging.basicConfig(
            level=logging.INFO, format=f"%(relativeCreated)6d {me} %(name)s %(message)s"
        )

    def say(line: str) -> None:
        os.write(report, (line + "\n").encode())

    async with open_realtime(url, journal_dir=journal, token=token, config=config) as conn:
        await conn.subscribe(CHANNEL, from_offset=0)  # the other may have sent already

        async def receive() -> None:
            async with conn.messages(CHANNEL) as stream:
                async for item in stream:
                    if isinstance(item, Message):
                        if item.sender != me:
                            say(f"r {item.payload['from']} {item.payload['n']} {item.offset}")
                    else:
                        say(f"g {item.first_missing} {item.last_missing}")
                    if me == COMMITS:
                        await stream.commit()

        async def debug() -> None:
            async for state in conn.states():
                print(f"{me}: {state.value} {conn.metrics}", file=sys.stderr, flush=True)

        async def orphaned() -> None:
            parent = os.getppid()
            while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on: poll the parent
                await trio.sleep(0.5)
            os._exit(3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            nursery.start_soon(orphaned)
            if os.environ.get("CHAOS_DEBUG"):
                nursery.start_soon(debug)
            for n in range(conn.last_seq, total):
                receipt = await conn.send(CHANNEL, "n", {"n": n, "from": me})
                say(f"s {receipt.seq}")
            await conn.drain()
            say("d")
            await trio.sleep_forever()  # receiving, until the parent ends this process


# --- the parent -----------------------------------------------------------------------------


@attrs.define
class Life:
    """One run of a client process, and what it reported."""

    process: trio.Process
    sent: list[int] = attrs.Factory(list)
    received: list[tuple[str, int, int]] = attrs.Factory(list)
    gaps: int = 0
    done: bool = False


@attrs.define
class Peer:
    name: str
    journal: str
    lives: list[Life] = attrs.Factory(list)
    kills: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)

    def received_from_other(self) -> set[int]:
        return {n for life in self.lives for sender, n, _ in life.received if sender != self.name}

    @property
    def done(self) -> bool:
        return bool(self.lives) and self.lives[-1].done


async def start_life(nursery: trio.Nursery, peer: Peer, url: str, token: str, total: int) -> None:
    read_fd, write_fd = os.pipe()
    args = [sys.executable, __file__, "client", url, peer.journal, token, peer.name, str(total)]
    process = await trio.lowlevel.open_process([*args, str(write_fd)], pass_fds=[write_fd])
    os.close(write_fd)
    life = Life(process)
    peer.lives.append(life)

    async def read_reports() -> None:
        stream = trio.lowlevel.FdStream(read_fd)
        buffer = b""
        async with stream:
            async for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    kind, *fields = line.decode().split()
                    if kind == "s":
                        life.sent.append(int(fields[0]))
                    elif kind == "r":
                        life.received.append((fields[0], int(fields[1]), int(fields[2])))
                    elif kind == "g":
                        life.gaps += 1
                    elif kind == "d":
                        life.done = True
                peer.changed.set()
                peer.changed = trio.Event()

    nursery.start_soon(read_reports)


async def kill(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    await process.wait()


@attrs.define
class Faults:
    """The fault schedule the proxy goes through, over and over."""

    phases: list[tuple[str, Callable[[Any], None]]]
    seconds: float = 1.0
    applied: dict[str, int] = attrs.Factory(dict)


def fault_schedule() -> Faults:
    def resets(every: float) -> Callable[[Any], None]:
        def apply(proxy: Any) -> None:
            proxy.reset_every = every

        return apply

    def latency(proxy: Any) -> None:
        proxy.latency, proxy.jitter = 0.02, 0.03

    def blackhole(proxy: Any) -> None:
        proxy.blackhole = True

    def chunks(proxy: Any) -> None:
        proxy.chunk_size = 7

    return Faults(
        [
            ("resets every 50 ms", resets(0.05)),
            ("latency 20 ms + jitter 30 ms", latency),
            ("resets every 250 ms", resets(0.25)),
            ("black hole", blackhole),
            ("resets every 1000 ms", resets(1.0)),
            ("writes sliced into 7-byte chunks", chunks),
        ]
    )


@asynccontextmanager
async def server_and_proxy(data: str, faults: bool) -> AsyncIterator[tuple[Any, Any]]:
    from trio_realtime.testing import open_fault_proxy, open_server_process

    async with (
        open_server_process(data, extra_args=("--heartbeat-timeout", "5")) as server,
        open_fault_proxy(server.port, seed=11 if faults else None) as proxy,
    ):
        yield server, proxy


async def run_workload(
    total: int, client_kills: int, server_kills: int, faults: bool, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="trio-realtime-chaos-") as tmp:
        data = os.path.join(tmp, "server")
        started = time.monotonic()
        async with (
            server_and_proxy(data, faults) as (server, proxy),
            trio.open_nursery() as nursery,
        ):
            url = f"ws://127.0.0.1:{proxy.port}/realtime"
            peers = [Peer(name, os.path.join(tmp, name)) for name in NAMES]
            for peer in peers:
                await start_life(nursery, peer, url, server.token(peer.name), total)
            schedule = fault_schedule()
            if faults:

                async def cycle_faults() -> None:
                    while True:
                        for label, apply in schedule.phases:
                            proxy.clear_faults()
                            apply(proxy)
                            proxy.changed()
                            schedule.applied[label] = schedule.applied.get(label, 0) + 1
                            await trio.sleep(schedule.seconds)

                nursery.start_soon(cycle_faults)
            # Kills are spread over the sending, by progress (sends that returned).
            # (Within the first 90%: a life killed before it reported its last sends makes the
            # progress end a little short of 2 * total.)
            client_marks = sorted(rng.sample(range(1, 2 * total * 9 // 10), client_kills))
            server_marks = sorted(rng.sample(range(1, 2 * total * 9 // 10), server_kills))

            async def debug_status() -> None:
                while os.environ.get("CHAOS_DEBUG"):
                    await trio.sleep(2)
                    for peer in peers:
                        life = peer.lives[-1]
                        print(
                            f"{peer.name}: lives {len(peer.lives)} sent {len(life.sent)} "
                            f"received {len(peer.received_from_other())} done {peer.done} "
                            f"rc {life.process.returncode}",
                            file=sys.stderr,
                        )

            nursery.start_soon(debug_status)

            def due(marks: list[int]) -> bool:
                """A planned kill is due (all of them once sending finished: every one happens)."""
                sent = sum(len(life.sent) for peer in peers for life in peer.lives)
                return bool(marks) and (sent >= marks[0] or all(peer.done for peer in peers))

            with trio.fail_after(max(600, total / 10)):
                while (
                    client_marks
                    or server_marks
                    or not all(
                        peer.done and len(peer.received_from_other()) == total for peer in peers
                    )
                ):
                    if not server.running:
                        raise RuntimeError("the server died on its own:\n" + server.log_tail())
                    if due(client_marks):
                        client_marks.pop(0)
                        peer = rng.choice([p for p in peers if not p.done] or peers)
                        await kill(peer.lives[-1].process)
                        peer.kills += 1
                        await start_life(nursery, peer, url, server.token(peer.name), total)
                    if due(server_marks):
                        server_marks.pop(0)
                        if os.environ.get("CHAOS_DEBUG"):
                            print("restarting the server", file=sys.stderr, flush=True)
                        await server.restart()  # SIGKILL, then up again on the same port
                        if os.environ.get("CHAOS_DEBUG"):
                            print("server restarted", server.port, file=sys.stderr, flush=True)
                    with trio.move_on_after(0.05):
                        await peers[0].changed.wait()
                # The last messages are in flight: let the faults stop so they arrive.
                proxy.clear_faults()
                proxy.changed()
                while not all(
                    peer.done and len(peer.received_from_other()) == total for peer in peers
                ):
                    with trio.move_on_after(0.05):
                        await peers[0].changed.wait()
            elapsed = time.monotonic() - started
            for peer in peers:
                await kill(peer.lives[-1].process)
            await server.stop()
            resets = proxy.stats.resets
            nursery.cancel_scope.cancel()
        stored = read_store(os.path.join(data, "server.sqlite3"))
    return verify(
        total, peers, stored, elapsed, resets, server.kills, schedule.applied if faults else {}
    )


def read_store(path: str) -> list[tuple[str, int]]:
    db = sqlite3.connect(path)
    try:
        # The store keeps a channel's log in blocks: [event, payload, timestamp, sender, key]
        # for offsets first..last of each.
        blocks = db.execute(
            "SELECT first, last, events FROM blocks WHERE channel = ? ORDER BY first", (CHANNEL,)
        ).fetchall()
    finally:
        db.close()
    payloads = []
    for first, last, data in blocks:
        events = json.loads(data)
        assert len(events) == last - first + 1, "a block's offsets and events disagree"
        payloads += [event[1] for event in events]
    return [(p["from"], p["n"]) for p in payloads]


def verify(
    total: int,
    peers: list[Peer],
    stored: list[tuple[str, int]],
    elapsed: float,
    resets: int,
    server_kills: int,
    faults: dict[str, int],
) -> dict[str, Any]:
    lost = duplicated = reordered = 0
    returned_missing = 0
    for peer in peers:
        numbers = [n for sender, n in stored if sender == peer.name]
        lost += total - len(set(numbers))
        duplicated += len(numbers) - len(set(numbers))
        reordered += sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
        returned = {seq for life in peer.lives for seq in life.sent}
        returned_missing += len({seq - 1 for seq in returned} - set(numbers))
    delivery_lost = duplicated_in_a_life = reordered_at_receiver = gaps = 0
    redelivered = {peer.name: 0 for peer in peers}
    for peer in peers:
        delivery_lost += total - len(peer.received_from_other())
        seen: set[int] = set()
        for life in peer.lives:
            numbers = [n for sender, n, _ in life.received if sender != peer.name]
            duplicated_in_a_life += len(numbers) - len(set(numbers))
            reordered_at_receiver += sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
            redelivered[peer.name] += len(set(numbers) & seen)
            seen |= set(numbers)
            gaps += life.gaps
    kills = {peer.name: peer.kills for peer in peers}
    ok = (
        lost == duplicated == reordered == returned_missing == 0
        and delivery_lost == duplicated_in_a_life == reordered_at_receiver == gaps == 0
        and redelivered[COMMITS] <= kills[COMMITS]
    )
    return {
        "messages_each_way": total,
        "client_kills": kills,
        "server_kills": server_kills,
        "connection_resets": resets,
        "fault_phases": faults,
        "stored": len(stored),
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "returned_sends_missing": returned_missing,
        "not_delivered": delivery_lost,
        "duplicated_within_a_process": duplicated_in_a_life,
        "reordered_at_receiver": reordered_at_receiver,
        "gaps": gaps,
        "redelivered_after_receiver_kill": redelivered[COMMITS],
        "redelivered_without_commit": sum(n for name, n in redelivered.items() if name != COMMITS),
        "seconds": round(elapsed, 2),
        "ok": ok,
    }


async def chaos(
    total: int, client_kills: int, server_kills: int, seed: int = 2026
) -> dict[str, Any]:
    """The clean run, then the chaos run; both results and the time ratio."""
    clean = await run_workload(total, 0, 0, faults=False, seed=seed)
    dirty = await run_workload(total, client_kills, server_kills, faults=True, seed=seed)
    return {
        "clean": clean,
        "chaos": dirty,
        "time_ratio": round(dirty["seconds"] / clean["seconds"], 2),
        "ok": clean["ok"] and dirty["ok"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "client":
        url, journal, token, me, total, report = argv[1:]
        trio.run(client, url, journal, token, me, int(total), int(report))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages each way")
    parser.add_argument("--client-kills", type=int, default=20)
    parser.add_argument("--server-kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    result = trio.run(chaos, args.messages, args.client_kills, args.server_kills, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
