"""The real Socket.IO servers a Socket.IO client transport is tested against (issue 20).

``open_node_server`` runs examples/socketio_server.js (socket.io 4.8, connection state recovery on
unless ``recovery=False``); ``open_python_server`` runs examples/socketio_server.py
(python-socketio, no recovery). Each starts its server as a subprocess on a port the OS picks,
waits for its ``listening on <port>`` line (bounded, no sleeps), and yields a :class:`SocketIOServer`;
on exit it stops that process (and only it). What the servers do is in examples/SOCKETIO.md.

The Node packages come from ``npm ci --prefix examples``, which the nox ``tests`` session runs when
they are missing; without them these fail (never skip) and say so.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NODE_SERVER = EXAMPLES / "socketio_server.js"
PYTHON_SERVER = EXAMPLES / "socketio_server.py"
TEST_COMMAND = "nox -s tests (or: npm ci --prefix examples)"

STARTUP_TIMEOUT = 30.0  # seconds for the `listening on` line (Python imports aiohttp: ~1 s)
STOP_TIMEOUT = 10.0


class ServerFailed(AssertionError):
    """A server did not start: the message has its exit status and its stderr."""


class SocketIOServer:
    """One real server process, restartable on the same port with the same log file."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self._argv = list(argv)
        self.log_path = workdir / f"{name}.log.jsonl"
        self.stderr_path = workdir / f"{name}.stderr"
        self._port: int | None = None
        self._process: trio.Process | None = None
        self.starts = 0

    @property
    def port(self) -> int:
        assert self._port is not None, "the server has not started"
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The Engine.IO v4 WebSocket endpoint (no HTTP long-polling first)."""
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server has not started"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def received(self) -> list[dict[str, Any]]:
        """The events the server acked, in order: the parsed lines of its log (a torn last line,
        from a SIGKILL during a write, is left out)."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    async def start(self) -> None:
        """Start the process (on the same port as before after the first start) and wait for it
        to listen."""
        assert not self.running, "already running"
        port = 0 if self._port is None else self._port
        argv = [*self._argv, "--port", str(port), "--log", str(self.log_path)]
        self.starts += 1
        with self.stderr_path.open("a", encoding="utf-8") as err:
            err.write(f"--- start {self.starts}: {' '.join(argv)}\n")
            err.flush()
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=ROOT
            )
        self._process = process
        try:
            line = await self._read_line(process)
        except BaseException:
            await self._terminate(process, signal.SIGKILL)
            raise
        prefix = "listening on "
        if not line.startswith(prefix) or not line[len(prefix) :].isdigit():
            await self._terminate(process, signal.SIGKILL)
            self._fail(f"printed {line!r} instead of `listening on <port>`", process)
        bound = int(line[len(prefix) :])
        if self._port is not None and bound != self._port:
            await self._terminate(process, signal.SIGKILL)
            self._fail(f"restarted on port {bound}, not {self._port}", process)
        self._port = bound

    async def _read_line(self, process: trio.Process) -> str:
        assert process.stdout is not None
        data = b""
        with trio.move_on_after(STARTUP_TIMEOUT) as timeout:
            while b"\n" not in data:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:  # stdout closed: the process is gone or going
                    with trio.move_on_after(STOP_TIMEOUT):
                        await process.wait()
                    self._fail(f"exited before listening (stdout so far: {data!r})", process)
                data += chunk
        if timeout.cancelled_caught:
            self._fail(
                f"did not print `listening on <port>` within {STARTUP_TIMEOUT} s "
                f"(stdout so far: {data!r})",
                process,
            )
        return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()

    def _fail(self, what: str, process: trio.Process) -> None:
        status = process.returncode
        raise ServerFailed(
            f"the {self.name} Socket.IO server {what}; exit status: "
            f"{'still running' if status is None else status}; command: {' '.join(self._argv)}\n"
            f"its stderr ({self.stderr_path}):\n{self.stderr()}"
        )

    async def kill(self) -> None:
        """SIGKILL the process and wait for it to be gone (the port is free again)."""
        if self._process is not None:
            await self._terminate(self._process, signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        if self._process is not None:
            await self._terminate(self._process, signal.SIGTERM)

    async def restart(self) -> None:
        """Start the server again on the same port with the same log file (SIGKILLing it first if
        it still runs): its in-memory state (sessions, recovery buffer) is gone, its log is not."""
        await self.kill()
        await self.start()

    @staticmethod
    async def _terminate(process: trio.Process, signum: int) -> None:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signum)
                with trio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()

    async def aclose(self) -> None:
        await self.stop()


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"`node` is not on PATH: the Socket.IO interop tests need Node >= 18 and npm ({TEST_COMMAND})"
        )
    return node


def _check_node_modules() -> None:
    if not (EXAMPLES / "node_modules" / "socket.io" / "package.json").is_file():
        pytest.fail(
            f"examples/node_modules/socket.io is missing: run the tests with `{TEST_COMMAND}` "
            "(the nox session installs the Node packages of examples/package-lock.json)"
        )


@asynccontextmanager
async def _running(server: SocketIOServer) -> AsyncIterator[SocketIOServer]:
    try:
        await server.start()
        yield server
    finally:
        await server.aclose()


@asynccontextmanager
async def open_node_server(
    tmp_path: Path,
    *,
    recovery: bool = True,
    token: str | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[SocketIOServer]:
    """examples/socketio_server.js on 127.0.0.1 and a free port, logging to
    ``tmp_path/node.log.jsonl``."""
    _check_node_modules()
    argv = [node_executable(), str(NODE_SERVER)]
    if not recovery:
        argv.append("--no-recovery")
    if token is not None:
        argv += ["--token", token]
    argv += extra_args
    name = "node" if recovery else "node-no-recovery"
    async with _running(SocketIOServer(name, argv, tmp_path)) as server:
        yield server


@asynccontextmanager
async def open_python_server(
    tmp_path: Path, *, token: str | None = None, extra_args: Sequence[str] = ()
) -> AsyncIterator[SocketIOServer]:
    """examples/socketio_server.py (python-socketio, no recovery) on 127.0.0.1 and a free port,
    logging to ``tmp_path/python.log.jsonl``."""
    argv = [sys.executable, str(PYTHON_SERVER)]
    if token is not None:
        argv += ["--token", token]
    argv += extra_args
    async with _running(SocketIOServer("python", argv, tmp_path)) as server:
        yield server
