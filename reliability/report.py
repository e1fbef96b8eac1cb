"""Write docs/reliability.md from the figures the nox sessions saved in docs/reliability/*.json.

    python reliability/report.py

Run by ``nox -s chaos`` and ``nox -s stress`` after they save their figures; never edit the page
by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "reliability"
PAGE = ROOT / "docs" / "reliability.md"

#: Each check: its figures file (without .json), title, what it does, and where it lives.
CHECKS = [
    (
        "chaos",
        "Chaos run",
        "Two client processes send to each other through a `FaultProxy` cycling through resets "
        "every 50, 250 and 1000 ms, 20-50 ms latency with jitter, a black hole and 7-byte write "
        "slices, while clients and the server are SIGKILLed and restarted. The same workload runs "
        "first without faults; the ratio compares the two. Checked against the server's SQLite "
        "file and everything each client process reported.",
        "`nox -s chaos` (`reliability/chaos.py`); a short run in the default tests "
        "(`tests/reliability/test_chaos.py`)",
    ),
    (
        "client_crash",
        "Client crash loop",
        "A client process sending as fast as `send` returns is SIGKILLed at a random point, and "
        "restarted on the same journal, over and over. Every send that returned must be stored "
        "exactly once, in order.",
        "`tests/connection/test_client_crash.py` (100 kills by default, 1,000 in `nox -s stress`)",
    ),
    (
        "journal_crash",
        "Journal crash loop",
        "A process appending to the journal with 1, 4 or 16 concurrent tasks is SIGKILLed at a "
        "random point; the journal is recovered. No append that returned may be missing, and seqs "
        "stay contiguous.",
        "`tests/journal/test_crash.py` (100 kills by default, 1,000 in `nox -s stress`)",
    ),
    (
        "cancellations",
        "Random cancellations",
        "`open_realtime` is cancelled at random moments while sending and receiving; no task may "
        "be left running and no journaled event lost.",
        "`tests/connection/test_cancellation.py` (150 by default, 1,000 in `nox -s stress`)",
    ),
]

CHECKS += [
    (
        "slowloris",
        "Slowloris",
        "Hundreds of connections open and never finish: half send half an HTTP upgrade request, "
        "half upgrade and never send `resume`. The server closes each after its handshake timeout "
        "(4000 for the upgraded ones) while a normal client is served before any of them times "
        "out.",
        "`tests/reliability/test_abuse.py`",
    ),
    (
        "malformed",
        "Malformed frames against the server",
        "10,000 conversations with the server, each ending in something illegal: garbage bytes, "
        "deep nesting, huge numbers, wrong types, events before `resume`, a second `resume`, "
        "skipped seqs, unknown types and kinds, lone surrogates. Every answer must be a "
        "documented error frame or close code, and the server must still serve a well-behaved "
        "client afterwards. The table counts the error frames by code.",
        "`tests/reliability/test_abuse.py` (the codec and state machines are fuzzed with "
        "hypothesis in `tests/protocol/`)",
    ),
    (
        "slow_consumer",
        "Slow consumer",
        "A subscriber stops reading while 30 MB are published to its channel. The server queues "
        "at most `send_queue_bytes` for it (the rest stays in the store, to catch up from), and "
        "closes it with 4029 once it has accepted nothing for `max_lag`; what the subscriber can "
        "still read afterwards is what the socket buffers held, far less than was published. Its "
        "writer was cut in the middle of a message, so the link is aborted rather than sent a "
        "close frame the peer would read as payload.",
        "`tests/reliability/test_abuse.py`",
    ),
]

CHECKS += [
    (
        "queue_many_producers",
        "Durable local queue under consumer kills",
        "Four producer processes, four producer threads and an asyncio producer send to one "
        "`trio_realtime.queue` while its consumer (a child process) is SIGKILLed six times and "
        "left stopped in between. Every item whose send returned must be delivered and "
        "acknowledged, no acknowledged item may come back, and each producer's order must hold.",
        "`tests/queue/test_many_producers.py` (1,000 items per producer by default, 10,000 in "
        "`nox -s stress`)",
    ),
]

#: Checks without figures of their own: what they show, and where.
OTHER_CHECKS = [
    (
        "Storage faults",
        "EIO and ENOSPC injected in the journal's writes and fsyncs give "
        "`JournalBroken` (with the errno) and every later append fails; truncation at every byte "
        "and bit flips give exact recovery or `JournalCorrupt(segment, offset)`; a server store "
        "that fails a commit closes the connection (1011) and the client retransmits, nothing lost.",
        "`tests/journal/`, `tests/reliability/test_abuse.py`",
    ),
    (
        "Fuzzing",
        "Hypothesis round trips and junk for the codec and both state machines, and a "
        "hypothesis state machine that drives a client and a server protocol object through "
        "sends, commits, acks, fan-out and dropped links in any order: neither side raises, "
        "nothing is stored twice or skipped, acks never pass the store, the client receives the "
        "channel without gaps or repeats, and everything arrives once the link stays up.",
        "`tests/protocol/test_fuzz.py`, `tests/protocol/test_conversation.py`",
    ),
    (
        "Load and abuse",
        "Besides the three above: a stalled server cannot grow the client past its outbox "
        "limits (`OutboxFull` at the limit); rate limits and frame size limits close with "
        "4029 and 1009.",
        "`tests/reliability/test_abuse.py`, `tests/server/test_policies.py`",
    ),
    (
        "Security",
        "TLS with certificate verification (a bad certificate is refused), forged and "
        "expired tokens refused with 4001, forbidden channels, disallowed Origins, tokens absent "
        "from every log record.",
        "`tests/connection/test_tls.py`, `tests/connection/test_integration.py`, "
        "`tests/services/test_auth.py`, `tests/server/test_policies.py`",
    ),
]


def load(name: str) -> dict[str, Any] | None:
    path = FIGURES / f"{name}.json"
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def chaos_table(figures: dict[str, Any]) -> list[str]:
    run, clean = figures["chaos"], figures["clean"]
    kills = run["client_kills"]
    rows = [
        ("messages each way", f"{run['messages_each_way']:,}"),
        (
            "client SIGKILLs",
            f"{sum(kills.values())} ({', '.join(f'{k} {v}' for k, v in kills.items())})",
        ),
        ("server SIGKILLs", str(run["server_kills"])),
        ("connections reset by the proxy", f"{run['connection_resets']:,}"),
        ("fault phases applied", ", ".join(f"{k} x{v}" for k, v in run["fault_phases"].items())),
        ("stored by the server", f"{run['stored']:,}"),
        ("lost", str(run["lost"])),
        ("duplicated (stored twice)", str(run["duplicated"])),
        ("reordered", str(run["reordered"])),
        ("returned sends missing", str(run["returned_sends_missing"])),
        ("not delivered to the other client", str(run["not_delivered"])),
        ("delivered twice within one process", str(run["duplicated_within_a_process"])),
        (
            "redelivered to a restarted receiver that commits (in-flight, same offset)",
            str(run["redelivered_after_receiver_kill"]),
        ),
        (
            "redelivered to a restarted receiver that does not (handled in the last 10 ms)",
            str(run.get("redelivered_without_commit", "-")),
        ),
        ("gaps", str(run["gaps"])),
        ("time: clean run / chaos run", f"{clean['seconds']} s / {run['seconds']} s"),
        ("time ratio (goal <= 10x)", f"{figures['time_ratio']}x"),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def plain_table(figures: dict[str, Any]) -> list[str]:
    def show(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k} {show(v)}" for k, v in value.items()) or "none"
        return (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )

    rows = (f"| {k.replace('_', ' ')} | {show(v)} |" for k, v in figures.items())
    return ["| | |", "|---|---|", *rows]


def render() -> str:
    lines = [
        "# Reliability",
        "",
        "<!-- Written by reliability/report.py from docs/reliability/*.json: do not edit. -->",
        "",
        "Our promise: nothing lost, nothing duplicated, order kept, whatever the network and the",
        "processes do. These are the checks that hold us to it, what each does, and the figures of",
        "its latest run by the nox sessions (machine: shared, 2 cores).",
        "",
        "The fault tools are public: `trio_realtime.testing` has `FaultProxy` (latency, jitter,",
        "bandwidth, resets after N bytes or every T seconds, black hole, slow close, write slicing,",
        "refusal) and `ServerProcess` (the reference server in a child process to SIGKILL and",
        "restart), with pytest fixtures in `trio_realtime.testing.pytest_plugin`.",
        "",
    ]
    for name, title, what, where in CHECKS:
        lines += [f"## {title}", "", what, "", f"Where: {where}.", ""]
        figures = load(name)
        if figures is None:
            lines += ["No figures saved yet: run the nox session named above.", ""]
            continue
        lines += [*(chaos_table(figures) if name == "chaos" else plain_table(figures)), ""]
    for title, what, where in OTHER_CHECKS:
        lines += [f"## {title}", "", what, "", f"Where: {where}.", ""]
    return "\n".join(lines)


def main() -> int:
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
