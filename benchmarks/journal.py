"""Journal append throughput per durability mode and concurrency, against a naive fsync-per-record
loop measured in the same run. Writes docs/benchmarks/journal.md and docs/benchmarks/journal.json.

Run with `nox -s bench` (or `python benchmarks/journal.py [--seconds S] [--repeats N]`).
Figures are medians of N runs; compare ratios, not absolute numbers (machines here are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import trio

from trio_realtime._journal import Durability, open_journal

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "benchmarks"
PAYLOAD = b'{"type":"event","seq":0,"payload":"' + b"x" * 160 + b'"}'  # ~200 bytes
CONCURRENCY = (1, 10, 100)
MODES = (Durability.ALWAYS, Durability.BATCH, Durability.OS, Durability.MEMORY)


def naive_fsync_per_record(seconds: float) -> float:
    """The baseline: one write and one fsync per record, in one thread, no batching."""
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(os.path.join(tmp, "naive.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                os.write(fd, PAYLOAD)
                os.fsync(fd)
                count += 1
            return count / (time.perf_counter() - start)
        finally:
            os.close(fd)


async def _journal_rate(mode: Durability, appenders: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_journal(None if mode is Durability.MEMORY else tmp, durability=mode) as j:
            count = 0
            deadline = trio.current_time() + seconds

            async def worker() -> None:
                nonlocal count
                while trio.current_time() < deadline:
                    await j.append(j.next_seq, PAYLOAD)
                    count += 1

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(appenders):
                    nursery.start_soon(worker)
            return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per figure (median)")
    args = parser.parse_args()

    naive = statistics.median(naive_fsync_per_record(args.seconds) for _ in range(args.repeats))
    print(f"baseline: naive write+fsync per record: {naive:,.0f} appends/s")
    results: dict[str, dict[str, float]] = {}
    for mode in MODES:
        results[mode.value] = {}
        for appenders in CONCURRENCY:
            rates = [
                trio.run(_journal_rate, mode, appenders, args.seconds) for _ in range(args.repeats)
            ]
            rate = statistics.median(rates)
            results[mode.value][str(appenders)] = rate
            print(
                f"{mode.value:>6} x{appenders:<3}: {rate:>12,.0f} appends/s "
                f"= {rate / naive:8.1f}x naive"
            )
    target = results["always"]["100"] / naive
    print(f"group commit, always, 100 appenders: {target:.1f}x naive (target >= 20x)")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "journal appends",
        "payload_bytes": len(PAYLOAD),
        "seconds_per_measurement": args.seconds,
        "repeats": args.repeats,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "baseline_naive_fsync_per_record": naive,
        "appends_per_second": results,
        "always_100_vs_naive": target,
    }
    (OUT_DIR / "journal.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Journal benchmark",
        "",
        "Written by `nox -s bench` (`benchmarks/journal.py`); do not edit by hand.",
        "",
        f"Appends of {len(PAYLOAD)}-byte records, median of {args.repeats} runs of "
        f"{args.seconds:g} s each, on {record['machine']}. The baseline, measured in the same run, "
        "is a naive loop doing one `write` and one `fsync` per record.",
        "",
        f"**Baseline (naive fsync per record): {naive:,.0f} appends/s.**",
        "",
        "| mode | appenders | appends/s | vs naive |",
        "|---|---:|---:|---:|",
    ]
    for mode, by_count in results.items():
        for appenders, rate in by_count.items():
            lines.append(f"| `{mode}` | {appenders} | {rate:,.0f} | {rate / naive:,.1f}x |")
    fsync_ms = 1000 / naive
    lines += [
        "",
        f"Group commit under `always` with 100 concurrent appenders: **{target:.1f}x** the naive "
        "rate (target: at least 20x).",
        "",
        "What bounds that ratio: the naive loop pays one fsync per record, in this run "
        f"{fsync_ms:.2f} ms. Group commit shares one fsync among all the appends waiting for it, "
        "so under load the limit becomes the work each append costs the event loop (encoding the "
        "record, parking the appending task, waking it) rather than the disk. The ratio "
        "therefore grows with the disk's fsync time, and on a shared machine whose fsync is fast "
        "and varies from run to run, so does the figure: compare runs, not single numbers.",
        "",
        "`always` with one appender pays one fsync per append, like the baseline, plus a hop to a",
        "worker thread. With more appenders, appends that arrive while an fsync runs share the",
        "next one (group commit), so the rate grows with concurrency. `batch` and `os` never wait",
        "for an fsync; `memory` never touches a file.",
        "",
    ]
    (OUT_DIR / "journal.md").write_text("\n".join(lines))
    print(f"wrote {OUT_DIR / 'journal.md'}")


if __name__ == "__main__":
    main()
