"""The reference server as a child process you can SIGKILL and restart (same port, same data)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..server import load_or_create_secret, make_token

__all__ = ["ServerProcess", "open_server_process"]

_LISTENING = re.compile(rb"trio-realtime server on ws://[^:]+:(\d+)/realtime[^\n]*\n")


class ServerProcess:
    """``trio-realtime serve`` in a child process, on loopback.

    ``url`` is where clients connect; ``token(user)`` makes a token it accepts; :meth:`kill`
    SIGKILLs it (no clean shutdown, like a crash), :meth:`restart` starts it again on the same
    port with the same data; :meth:`stop` ends it politely. Its stderr (the server's log) is
    appended to ``log_path`` in the data directory; :meth:`log_tail` reads the end of it.
    """

    def __init__(self, data_dir: str, *, port: int = 0, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port
        self.extra_args = extra_args
        self.kills = 0
        self._process: trio.Process | None = None
        self._secret = load_or_create_secret(data_dir)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "server.log")

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log (to explain an unexpected exit)."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-20_000:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def token(self, user: str) -> str:
        return make_token(self._secret, user)

    async def start(self) -> None:
        """Start it and wait until it listens (a second start while running is an error)."""
        if self.running:
            raise RuntimeError("the server process is already running")
        args = [sys.executable, "-m", "trio_realtime", "serve", "--data", self.data_dir]
        args += ["--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        os.makedirs(self.data_dir, exist_ok=True)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=log)
        finally:
            os.close(log)  # the child has its own copy
        self._process = process
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while (match := _LISTENING.search(output)) is None:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    await process.wait()
                    raise RuntimeError(
                        f"the server exited with {process.returncode}: {output!r}\n"
                        + self.log_tail()
                    )
                output += chunk
        self.port = int(match.group(1))
        await process.stdout.aclose()

    async def kill(self) -> None:
        """SIGKILL it and wait until it is gone."""
        process = self._process
        if process is None or process.returncode is not None:
            await trio.lowlevel.checkpoint()
            return
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.kills += 1

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        """End it with SIGTERM (SIGKILL after 10 s)."""
        process = self._process
        if process is None or process.returncode is not None:
            await trio.lowlevel.checkpoint()
            return
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            await self.kill()


@asynccontextmanager
async def open_server_process(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    port: int = 0,
    extra_args: tuple[str, ...] = (),
) -> AsyncIterator[ServerProcess]:
    """Run the reference server in a child process for the block (a temporary data directory
    unless ``data_dir`` is given); it is killed on the way out, whatever happens."""
    with tempfile.TemporaryDirectory(prefix="trio-realtime-server-") as tmp:
        server = ServerProcess(os.fspath(data_dir or tmp), port=port, extra_args=extra_args)
        try:
            await server.start()
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.kill()
