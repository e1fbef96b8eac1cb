"""SIGTERM to ``trio-realtime run`` loses no queued message: a plugin (found through an entry
point) queues events while the server is down; the process is stopped with SIGTERM; a later run,
with the server up, delivers every one of them, once and in order."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from trio_realtime import open_realtime

from ..connection.conftest import running_server
from ..helpers import collect

QUEUED = 40

PLUGIN = f"""\
import os

from trio_realtime.service import BasePlugin


class Queuer(BasePlugin):
    name = "queuer"

    async def initialize(self, context):
        self.context = context

    async def on_service_started(self):
        marker = os.environ["QUEUER_MARKER"]
        if os.path.exists(marker):
            return
        for i in range({QUEUED}):
            await self.context.send("room:q", "queued", {{"i": i}})  # journaled when it returns
        with open(marker, "w") as file:
            file.write("queued")
        print("queued", flush=True)  # the test reads it
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(tmp_path: Path, services: Path, log: Path) -> subprocess.Popen[bytes]:
    """``trio-realtime run services`` (its log into ``log``; its stdout a pipe)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.fspath(tmp_path / "site"), *sys.path]),
        QUEUER_MARKER=os.fspath(tmp_path / "queued.marker"),
    )
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "trio_realtime", "run", os.fspath(services)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


async def stop(process: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM, then its exit status (0) and its log."""
    process.send_signal(signal.SIGTERM)
    await trio.to_thread.run_sync(lambda: process.communicate(timeout=30))
    text = log.read_text()
    assert process.returncode == 0, text
    assert "Traceback" not in text, text
    return text


async def test_sigterm_to_run_loses_no_queued_message(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tr_queuer.py").write_text(PLUGIN)
    info = site / "tr_queuer-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tr_queuer\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trio_realtime.plugins]\nqueuer = tr_queuer:Queuer\n")
    port = free_port()
    services = tmp_path / "services.toml"
    services.write_text(
        f"""\
[services.orders]
url = "ws://127.0.0.1:{port}/realtime"
profile = "trading"
token = "olga"
journal_dir = "{tmp_path / "orders"}"
plugins = ["queuer"]
"""
    )
    # The server is down: the plugin's events wait in the journal.
    first_log = tmp_path / "first.log"
    first = start(tmp_path, services, first_log)
    try:
        assert first.stdout is not None
        with trio.fail_after(30):  # its stdout says when it queued them (or ends if it died)
            line = await trio.to_thread.run_sync(first.stdout.readline, abandon_on_cancel=True)
        assert line == b"queued\n", first_log.read_text()
    finally:
        log = await stop(first, first_log)
    assert "[orders] trio_realtime.service: started (trading profile" in log
    assert "SIGTERM: stopping the services" in log
    assert "[orders] trio_realtime.service: stopped" in log

    async with (
        running_server(tmp_path, port=port) as server,
        open_realtime(
            f"ws://127.0.0.1:{port}/realtime", journal_dir=tmp_path / "reader", token="rita"
        ) as reader,
    ):
        await reader.subscribe("room:q", from_offset=0)
        second_log = tmp_path / "second.log"
        second = start(tmp_path, services, second_log)
        try:
            got = await collect(reader, "room:q", QUEUED, within=30)
        finally:
            await stop(second, second_log)
        stored = await server.store.read("room:q", 0, 1000)
    assert [message.payload["i"] for message in got] == list(range(QUEUED))
    assert [event.payload["i"] for event in stored] == list(range(QUEUED))
    assert {event.sender for event in stored} == {"olga"}
