"""Server nodes as real processes for the multi-node tests (tests/server/test_redis_nodes.py):
``trio-realtime serve --store URL`` subprocesses on loopback, each with a ``--data`` directory of
its own (a server locks its data directory) holding one shared token secret, so a token made
with :meth:`Nodes.token` is accepted by every node.

A node's stderr (its log) goes to ``node-N.log`` in the test's directory; a test that fails
says where."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trio_realtime._chat import load_secret
from trio_realtime.server import make_token
from trio_realtime.server._auth import SECRET_NAME

#: How long a node gets to print its URL.
START_TIMEOUT = 20.0
_LISTENING = "trio-realtime server on "


class NodeProcess:
    """One ``trio-realtime serve`` process."""

    def __init__(self, name: str, process: trio.Process, port: int, log: Path) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    async def kill(self) -> None:
        """SIGKILL: the process ends at once (no close handshake, nothing flushed)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await self.process.wait()

    def __repr__(self) -> str:
        return f"<node {self.name} :{self.port} pid {self.process.pid} log {self.log}>"


class Nodes:
    """The nodes of one test, started by :func:`open_nodes`."""

    def __init__(self, directory: Path, secret: bytes) -> None:
        self.directory = directory
        self.secret = secret
        self.nodes: list[NodeProcess] = []

    def __getitem__(self, index: int) -> NodeProcess:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def token(self, user: str) -> str:
        return make_token(self.secret, user)

    def logs(self) -> str:
        """Every node's log, for a failure message."""
        return "\n".join(f"--- {n!r}\n{n.log.read_text(errors='replace')}" for n in self.nodes)


async def _start(
    name: str, directory: Path, store: str, secret_file: Path, options: Sequence[str]
) -> NodeProcess:
    data = directory / f"data-{name}"
    data.mkdir()
    shutil.copyfile(secret_file, data / SECRET_NAME)
    log = directory / f"node-{name}.log"
    command = [sys.executable, "-m", "trio_realtime", "serve", "--port", "0"]
    command += ["--data", os.fspath(data), "--store", store, *options]
    with open(log, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    line = b""
    try:
        with trio.fail_after(START_TIMEOUT):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(f"node {name} exited: {log.read_text(errors='replace')}")
                line += chunk
    except BaseException:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()
        raise
    text = line.decode().split("\n", 1)[0]
    assert text.startswith(_LISTENING), text
    port = int(text[len(_LISTENING) :].split()[0].rsplit(":", 1)[1].split("/", 1)[0])
    return NodeProcess(name, process, port, log)


@asynccontextmanager
async def open_nodes(
    directory: Path, store: str, count: int, *options: str
) -> AsyncIterator[Nodes]:
    """``count`` nodes (named a, b, c...) on the store at URL ``store``, started at once, with
    ``options`` for ``serve``; killed (SIGKILL) after the block, those still running."""
    secret_file = directory / SECRET_NAME
    secret = load_secret(os.fspath(directory), create=True)
    nodes = Nodes(directory, secret)
    names = [chr(ord("a") + i) for i in range(count)]
    started: dict[str, NodeProcess] = {}
    try:

        async def start(name: str) -> None:
            started[name] = await _start(name, directory, store, secret_file, options)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(start, name)
        nodes.nodes = [started[name] for name in names]
        yield nodes
    finally:
        with trio.CancelScope(shield=True):
            for node in started.values():  # every one first: none outlives a failing teardown
                if node.process.returncode is None:
                    node.process.send_signal(signal.SIGKILL)
            for node in started.values():
                await node.kill()
                if node.process.stdout is not None:
                    await node.process.stdout.aclose()
