"""Turn docs/benchmarks/results.json (written by benchmarks/realtime.py) into
docs/benchmarks/results.md and the PNG plots it shows. Run by `nox -s bench`; never edit the
outputs by hand.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import OUT_DIR

OURS = "#2b6cb0"
PEER = "#a0aec0"


def _bars(name: str, title: str, unit: str, bars: list[tuple[str, float, bool]]) -> str:
    """A horizontal bar chart (ours in blue); returns the markdown image line."""
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(bars) + 1.2))
    labels = [label for label, _, _ in bars]
    values = [value for _, value, _ in bars]
    colors = [OURS if ours else PEER for _, _, ours in bars]
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for i, value in enumerate(values[::-1]):
        ax.text(value, i, f" {value:,.3g}" if value < 100 else f" {value:,.0f}", va="center")
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.set_xlim(0, max(values) * 1.25)
    fig.tight_layout()
    fig.savefig(OUT_DIR / f"{name}.png", dpi=90)
    plt.close(fig)
    return f"![{title}]({name}.png)"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    results: dict[str, Any] = json.loads((OUT_DIR / "results.json").read_text())
    rows: list[str] = []
    sections: list[str] = []

    if "throughput" in results:
        r = results["throughput"]
        rows.append(
            f"| 1. upstream throughput, `send()` x {r['senders']} tasks | raw trio-websocket "
            f"{r['raw_trio_websocket']:,.0f}/s | {r['trio_realtime']:,.0f}/s | "
            f"{r['vs_raw']:.2f}x | >= 1.0x | {_met(r['vs_raw'] >= 1.0)} |"
        )
        rows.append(
            f"| | python-socketio {r['python_socketio']:,.0f}/s | | {r['vs_socketio']:.2f}x | "
            f">= 4x | {_met(r['vs_socketio'] >= 4)} |"
        )
    if "send_many" in results:
        r = results["send_many"]
        rows.append(
            f"| 2. `send_many({r['batch']})` throughput | raw trio-websocket "
            f"{r['raw_trio_websocket']:,.0f}/s | {r['trio_realtime']:,.0f}/s | {r['vs_raw']:.2f}x "
            f"| >= 4x | {_met(r['vs_raw'] >= 4)} |"
        )
    if "throughput" in results:
        r = results["throughput"]
        bars = [
            ("raw trio-websocket\n(no acks, no disk)", r["raw_trio_websocket"], False),
            ("python-socketio\nemit with ack", r["python_socketio"], False),
            (
                f"trio_realtime send()\n{r['senders']} tasks, fsynced, acked",
                r["trio_realtime"],
                True,
            ),
        ]
        if "send_many" in results:
            bars.append(
                (
                    f"trio_realtime send_many({results['send_many']['batch']})",
                    results["send_many"]["trio_realtime"],
                    True,
                )
            )
        image = _bars("throughput", "Upstream throughput, 200-byte events", "messages/s", bars)
        sections += [
            "## 1-2. Upstream throughput",
            "",
            f"{r['messages']:,} events of {r['payload_bytes']} bytes from one client. Ours: "
            "`at_least_once`, `durability=always` (every event fsynced in the client's journal "
            "before its `send` returns, while it is sent, and committed to the server's SQLite "
            "with `synchronous=FULL` "
            "before it is acked); timed from the first send to the last ack. Raw trio-websocket: "
            "one message per event, no acks, no disk, timed until the server has read them all. "
            "python-socketio: every emit asks for an ack, all in flight at once, timed until the "
            "last ack.",
            "",
            image,
            "",
        ]
    if "latency" in results:
        r = results["latency"]
        ms, floor = r["ms"], r["floor_ms"]
        rows.append(
            f"| 3. send->ack latency p99 at {r['rate_per_second']:g}/s | ping-pong RTT + one fsync "
            f"{floor['p99']:.2f} ms | {ms['ours']['p99']:.2f} ms | {r['vs_floor']['p99']:.2f}x | "
            f"<= 1.5x | {_met(r['vs_floor']['p99'] <= 1.5)} |"
        )
        fig, ax = plt.subplots(figsize=(7, 3.2))
        names = ["WebSocket RTT", "one fsync", "floor (RTT + fsync)", "trio_realtime send->ack"]
        p50 = [ms["rtt"]["p50"], ms["fsync"]["p50"], floor["p50"], ms["ours"]["p50"]]
        p99 = [ms["rtt"]["p99"], ms["fsync"]["p99"], floor["p99"], ms["ours"]["p99"]]
        y = range(len(names))
        ax.barh([i + 0.2 for i in y], p50, height=0.4, label="p50", color=PEER)
        ax.barh([i - 0.2 for i in y], p99, height=0.4, label="p99", color=OURS)
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.set_xlabel("milliseconds")
        ax.set_title(f"Latency at {r['rate_per_second']:g} sends/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(OUT_DIR / "latency.png", dpi=90)
        plt.close(fig)
        sections += [
            "## 3. Latency",
            "",
            f"{r['sends']:,} sends, one at a time at {r['rate_per_second']:g} per second. The floor "
            "is a 200-byte WebSocket ping-pong (trio-websocket, same loopback) plus one 200-byte "
            "write + fsync on the same disk, each percentile summed.",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---:|---:|",
            *(
                f"| {label} | {ms[key]['p50']:.3f} | {ms[key]['p99']:.3f} |"
                for key, label in (("rtt", "WebSocket RTT"), ("fsync", "one fsync"))
            ),
            f"| floor | {floor['p50']:.3f} | {floor['p99']:.3f} |",
            f"| trio_realtime | {ms['ours']['p50']:.3f} | {ms['ours']['p99']:.3f} |",
            "",
            "![Latency](latency.png)",
            "",
        ]
    if "recovery" in results:
        r = results["recovery"]
        s = r["seconds"]
        rows.append(
            f"| 4. recovery: open a journal of {r['pending']:,} pending | reading its files "
            f"{s['read_s']:.2f} s | {s['open_s']:.2f} s | {r['open_vs_read']:.0f}x | <= 2 s | "
            f"{_met(s['open_s'] <= 2)} |"
        )
        rows.append(
            f"| replay them to the server | | {r['replay_per_second']:,.0f}/s | | >= 100,000/s | "
            f"{_met(r['replay_per_second'] >= 100_000)} |"
        )
        sections += [
            "## 4. Recovery",
            "",
            f"A journal holding {r['pending']:,} unacknowledged events "
            f"({r['journal_bytes'] / 1e6:,.0f} MB), as a client that crashed after a long time "
            "offline leaves it, opened by `open_realtime` against a fresh server.",
            "",
            f"- Reading the journal's files (the floor, page cache warm): {s['read_s']:.2f} s",
            f"- Open (recover every record, CRC-checked, and connect): {s['open_s']:.2f} s",
            f"- Every event handed to the link: {s['replayed_s']:.2f} s after the start "
            f"({r['replay_per_second']:,.0f} events/s)",
            f"- Every event acked by the server: {s['acked_s']:.2f} s after the start "
            f"({r['acked_per_second']:,.0f} events/s)",
            "",
        ]
    if "fanout" in results:
        r = results["fanout"]
        rows.append(
            f"| 5. fan-out to {r['subscribers']:,} subscribers | python-socketio "
            f"{r['python_socketio']:,.0f}/s | {r['trio_realtime']:,.0f}/s | "
            f"{r['vs_socketio']:.2f}x | >= 2x | {_met(r['vs_socketio'] >= 2)} |"
        )
        image = _bars(
            "fanout",
            f"Fan-out to {r['subscribers']:,} subscribers",
            "deliveries/s",
            [
                ("python-socketio\nroom broadcast", r["python_socketio"], False),
                ("trio_realtime\nchannel", r["trio_realtime"], True),
            ],
        )
        sections += [
            "## 5. Fan-out",
            "",
            f"One publisher sends {r['messages']} events of 200 bytes to a channel (a room for "
            f"python-socketio) with {r['subscribers']:,} subscriber connections spread over "
            f"{r['processes']} client processes; deliveries per second from the first publish to "
            "the last delivery. Our subscribers keep no journal (`durability=memory`), like the "
            "python-socketio clients.",
            "",
            image,
            "",
        ]
    if "memory" in results:
        r = results["memory"]
        mib = 2**20
        rows.append(
            f"| 6. RSS, {r['attempts']:,} sends at a stalled server | max_outbox_bytes + 20 MiB = "
            f"{r['bound_bytes'] / mib:,.0f} MiB | {r['rss_growth'] / mib:,.1f} MiB | "
            f"{r['vs_bound']:.2f}x | <= 1.0x | {_met(r['vs_bound'] <= 1)} |"
        )
        sections += [
            "## 6. Memory",
            "",
            f"{r['attempts']:,} sends (batches of 1,000) at a server that never answers, with "
            f"`max_outbox_bytes` = {r['max_outbox_bytes'] / mib:g} MiB and `outbox_full='raise'`: "
            f"{r['queued']:,.0f} were queued, {r['refused']:,.0f} refused with `OutboxFull`. "
            f"The process grew by {r['rss_growth'] / mib:,.1f} MiB (RSS, after a garbage "
            "collection), against a bound of the limit plus 20 MiB.",
            "",
        ]
    if "consumer" in results:
        r = results["consumer"]
        rows.append(
            f"| 7. a subscriber that also sends | no journal {r['memory']:,.0f}/s | "
            f"{r['always']:,.0f}/s | {r['vs_memory']:.2f}x | >= 0.8x | "
            f"{_met(r['vs_memory'] >= 0.8)} |"
        )
        sections += [
            "## 7. A consumer that also sends",
            "",
            f"A subscriber processes {r['messages']:,} messages of 200 bytes through `messages()` "
            "(each one moves its channel position in the journal) while it sends "
            f"{r['chat_rate_per_second']:g} events per second of its own, as a chat client does; "
            "the same subscriber without a journal (`durability=memory`) is the baseline. (Not "
            "one of the issue's goals: our own, since a journal must not slow reading down.)",
            "",
        ]

    if "socketio_transport" in results:
        r = results["socketio_transport"]
        rates, vs, lat = r["msg_per_second"], r["vs_socketio"], r["latency"]
        ms, server = lat["ms"], r["server"]
        labels = {
            "python_socketio": f"python-socketio AsyncClient, `call()` x {r['senders']} tasks",
            "ours_always": f"trio_realtime `socketio://`, `send()` x {r['senders']}, "
            "`durability=always`",
            "ours_memory": f"trio_realtime `socketio://`, `send()` x {r['senders']}, "
            "`durability=memory`",
        }
        for key, mode in (("ours_always", "always"), ("ours_memory", "memory")):
            rows.append(
                f"| 8. Socket.IO transport, `send()` x {r['senders']}, `durability={mode}` | "
                f"python-socketio {rates['python_socketio']['median']:,.0f}/s | "
                f"{rates[key]['median']:,.0f}/s | {vs[key]['median']:.2f}x | none set | |"
            )

        def ratio(key: str) -> str:
            if key not in vs:
                return "(baseline)"
            v = vs[key]
            return f"{v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})"

        recovery = "on" if server["recovery"] else "off (`--no-recovery`)"
        sections += [
            "## 8. The Socket.IO transport against python-socketio",
            "",
            f"One Node server (`examples/socketio_server.js`, socket.io {server['socket.io']} on "
            f"Node {server['node']}, connection state recovery {recovery}, no `--log`) serves "
            f"every run; {r['repeats']} rounds, each running the three clients one after the "
            "other (the order turns each round). Throughput: "
            f"{r['messages']:,} events of {r['payload_bytes']} bytes to the `/chat` namespace, "
            f"{r['senders']} in flight at once, timed from the first send to the last ack. "
            f"python-socketio {r['python_socketio_version']}: {r['senders']} tasks each "
            "`await call()` (an emit with ack) in turn. Ours: "
            f"{r['senders']} tasks each `send()` in turn (it returns once the event is journaled, "
            "fsynced under `always`), then every receipt is awaited. Both emit the same object "
            "(our envelope: channel, idempotency key, payload); the server acks it and broadcasts "
            "it back to the namespace, sender included, and both clients read and drop those "
            f"echoes. Latency: {lat['sends']} sends at {lat['rate_per_second']:g} per second, "
            "each in its own task, from the call to its ack; per round p50 and p99, then the "
            "median over the rounds. Ratios are the medians (min-max) of the per-round ratios.",
            "",
            "| client | msg/s, median (min-max) | vs python-socketio | send->ack p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {labels[key]} | {rates[key]['median']:,.0f} ({rates[key]['min']:,.0f}-"
                f"{rates[key]['max']:,.0f}) | {ratio(key)} | {ms[key]['p50']:.2f} | "
                f"{ms[key]['p99']:.2f} |"
                for key in ("python_socketio", "ours_always", "ours_memory")
            ),
            "",
            f"Against the same server, our transport reaches "
            f"{vs['ours_memory']['median']:.2f}x python-socketio's throughput without a journal "
            f"(`durability=memory`) but {vs['ours_always']['median']:.2f}x with the default "
            "`durability=always`, whose send->ack p50 is also "
            f"{ms['ours_always']['p50'] / ms['python_socketio']['p50']:.1f}x python-socketio's: "
            "the gap between our two modes is what `always` writes to disk for each event (the "
            "journal and the Socket.IO recovery state kept beside it; the "
            "[README](README.md#the-socketio-transport-benchmark-8) says which part costs what).",
            "",
        ]

    if "multi_node" in results:
        r = results["multi_node"]
        scen = r["scenarios"]
        base = scen["sqlite"]
        for key, f in scen.items():
            if key == "sqlite":
                continue
            v = f["vs_sqlite"]["deliveries"]
            rows.append(
                f"| 9. fan-out, {f['label']} | SQLite, 1 node "
                f"{base['deliveries_per_second']['median']:,.0f}/s | "
                f"{f['deliveries_per_second']['median']:,.0f}/s | {v['median']:.2f}x "
                f"({v['min']:.2f}-{v['max']:.2f}) | none set | |"
            )

        def spread(s: dict[str, float], fmt: str = ",.0f") -> str:
            return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

        def vs(f: dict[str, Any], what: str) -> str:
            if "vs_sqlite" not in f:
                return "(baseline)"
            v = f["vs_sqlite"][what]
            return f"{v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})"

        image = _bars(
            "multi_node",
            "Fan-out deliveries/s, several nodes",
            "deliveries/s (median of the rounds)",
            [
                (
                    f["label"].replace(", ", "\n", 1),
                    f["deliveries_per_second"]["median"],
                    k != "sqlite",
                )
                for k, f in scen.items()
            ],
        )
        groups = ["nodes", "redis", "subscribers", "clients"]
        sends = r["latency_sends"] + 20

        def script_us(f: dict[str, Any]) -> str:
            if "redis_commands" not in f:
                return "-"
            stats = f["redis_commands"]["latency"].get("evalsha", {"calls": 0, "usec": 0})
            return f"{stats['calls'] / sends:.1f} / {stats['usec'] / sends:,.0f}"

        def cpu(figures: dict[str, float], names: list[str], fmt: str) -> str:
            return " / ".join(f"{figures[g]:{fmt}}" if g in figures else "-" for g in names)

        senders = [g for g in groups if g != "subscribers"]
        sections += [
            "## 9. Several server nodes on Redis",
            "",
            f"Each node is a `trio-realtime serve` process (`--store redis://...`; the baseline: "
            f"one node on its default SQLite store, `synchronous=FULL`). Redis {r['redis_version']} "
            "is a `redis-server` the benchmark starts for each run with `--appendonly yes` and "
            "`--appendfsync always` (a write's reply comes after its fsync), or `everysec` where "
            f"the scenario says so. {r['repeats']} rounds, each running every scenario once on "
            "fresh processes (Redis, nodes, clients), the order turning each round; ratios are "
            "the medians (min-max) of the per-round ratios to the SQLite run of the same round. "
            f"Fan-out: {r['publishers']} publishers (connection i on node i mod n, no journal) "
            f"send {r['messages']:,} events of {r['payload_bytes']} bytes flat out to one "
            f"channel; {r['subscribers']} subscribers (no journal), spread over the nodes the same "
            f"way in {r['subscriber_processes']} client processes, each receive all of them; "
            "deliveries per second from the first send to the last delivery, and stored (acked) "
            f"events per second. Latency: {r['latency_sends']} sends one at a time (after 20 not "
            "counted) through node 1 to another channel, which has one subscriber on each node "
            "(the fan-out's subscribers stay connected, idle): send->ack, and send->delivery at "
            "the subscriber on the last node (through another node when there are several).",
            "",
            f"**This machine has {r['cores']} cores**: with 3 nodes, Redis, the subscriber "
            "processes and the publishers all on them, more nodes add coordination (notices, "
            "reads of what the other nodes stored) without adding cores, so these figures measure "
            "the cost of coordinating nodes more than scale-out.",
            "",
            "| scenario | deliveries/s, median (min-max) | vs SQLite | stored/s | "
            "send->ack p50 ms | p99 ms | ack p50 vs SQLite | send->delivery p50 / p99 ms, last node |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {f['label']} | {spread(f['deliveries_per_second'])} | {vs(f, 'deliveries')} "
                f"| {f['stored_per_second']['median']:,.0f} | "
                f"{spread(f['ack_ms']['p50'], '.2f')} | {spread(f['ack_ms']['p99'], '.2f')} | "
                f"{vs(f, 'ack_p50')} | {f['delivery_ms']['p50']['median']:.2f} / "
                f"{f['delivery_ms']['p99']['median']:.2f} |"
                for f in scen.values()
            ),
            "",
            "A scenario's median and the median of its per-round ratios can disagree: a ratio "
            "pairs the two runs of one round, taken within a minute of each other.",
            "",
            image,
            "",
            "Where the CPU went (medians over the rounds; each group's user + system CPU time, "
            "all its threads; `clients` is the benchmark's own process: the publishers, the "
            "latency client and its subscribers). Cores busy: CPU seconds over the phase's wall "
            "time. Microseconds per delivery (fan-out) or per send (latency). Redis' scripts per "
            "send in the latency phase: calls / microseconds of Lua, from `INFO commandstats` "
            "(the AOF write and fsync are not in them).",
            "",
            "| scenario | fan-out, cores busy: "
            + " / ".join(groups)
            + " | fan-out, us per delivery: "
            + " / ".join(groups)
            + " | latency, us per send: "
            + " / ".join(senders)
            + " | scripts per send / us |",
            "|---|---|---|---|---:|",
            *(
                f"| {f['label']} | {cpu(f['fanout_cores'], groups, '.2f')} | "
                f"{cpu(f['fanout_us_per_delivery'], groups, '.1f')} | "
                f"{cpu(f['latency_us_per_send'], senders, ',.0f')} | {script_us(f)} |"
                for f in scen.values()
            ),
            "",
            "What these figures mean: see the [README](README.md#several-server-nodes-benchmark-9).",
            "",
        ]

    lines = [
        "# Benchmark results",
        "",
        "Written by `nox -s bench` (`benchmarks/realtime.py`, then `benchmarks/report.py`); do "
        "not edit by hand. What was found and changed along the way: [README](README.md).",
        "",
        f"Machine: {results.get('machine', '?')}. Every figure is the median of "
        f"{results.get('throughput', results.get('latency', {})).get('repeats', 5)} runs, and "
        "every baseline was measured in the same run (the machines here are shared and noisy: "
        "compare ratios, not absolute numbers). The throughput and fan-out runs go in rounds "
        "(a baseline run, then ours, round after round), and their ratio is the median of the "
        "rounds' ratios, so the machine's speed drifting between minutes stays out of it.",
        "",
        "| benchmark | baseline | trio_realtime | ratio | goal | |",
        "|---|---|---|---:|---|---|",
        *rows,
        "",
        *sections,
    ]
    (OUT_DIR / "results.md").write_text("\n".join(lines))
    print(f"wrote {OUT_DIR / 'results.md'}")


if __name__ == "__main__":
    main()
