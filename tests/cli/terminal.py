"""Run ``trio-realtime`` commands as a person would: in a pseudo-terminal (stdin, stdout and stderr
a pty that is the process's controlling terminal, so Ctrl-C typed into it sends SIGINT), reading
what it shows with a bounded wait, never a sleep."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence

CLI = (sys.executable, "-m", "trio_realtime")
WAIT = 30.0  # seconds: the most any expected output may take (it usually takes well under 1)

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _take_terminal() -> None:  # runs in the child, after setsid(): the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command running in a pseudo-terminal of 100 x 30 characters."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        label: str = "",
    ) -> None:
        self.label = label or " ".join(args[:2])
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        environment = {**os.environ, "TERM": "xterm-256color", **(env or {})}
        environment.pop("COLUMNS", None)
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=environment,
            start_new_session=True,
            preexec_fn=_take_terminal,  # (only an ioctl before exec)
        )
        os.close(slave)
        self._master = master
        self._raw = ""
        self._mark = 0  # expect() looks for text after this point of the plain output
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed its end
                data = b""
            with self._changed:
                if not data:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self._raw += data.decode("utf-8", "replace")
                self._changed.notify_all()

    @property
    def raw(self) -> str:
        with self._changed:
            return self._raw

    @property
    def text(self) -> str:
        """Everything shown so far, without escape sequences."""
        return plain(self.raw)

    def input_line(self) -> str:
        """The line the cursor is on (the chat's input line), as the terminal shows it."""
        raw = self.raw
        line = raw[max(raw.rfind("\r"), raw.rfind("\n")) + 1 :]
        return plain(line)

    def wait_until(self, condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
        deadline = time.monotonic() + within
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0 or (self._eof and not condition()):
                    state = "exited" if self._eof else "still running"
                    raise AssertionError(
                        f"{self.label}: {what} not seen within {within} s ({state}); it showed:\n"
                        + plain(self._raw)[-3000:]
                    )
                self._changed.wait(min(left, 0.5))

    def expect(self, text: str, within: float = WAIT) -> None:
        """Wait until ``text`` appears after the previous match; later expects look after it."""

        def found() -> bool:
            index = plain(self._raw).find(text, self._mark)
            if index < 0:
                return False
            self._mark = index + len(text)
            return True

        self.wait_until(found, repr(text), within)

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def line(self, text: str) -> None:
        self.type(text + "\r")

    def interrupt(self) -> None:
        """Ctrl-C, typed."""
        self.type("\x03")

    def wait(self, within: float = WAIT) -> int:
        """The exit status, once it exited (and its output was read to the end)."""
        try:
            status = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.label}: still running after {within} s; it showed:\n" + self.text[-3000:]
            ) from None
        self._reader.join(5)
        return status

    def close(self) -> None:
        """Kill it if it still runs (a test that failed midway), and free the pty."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(5)
        os.close(self._master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server:
    """``trio-realtime serve`` on a free loopback port (stdout and stderr to a log file)."""

    def __init__(self, data: str | os.PathLike[str], *extra: str) -> None:
        self.data = os.fspath(data)
        self.log = os.path.join(os.path.dirname(self.data) or ".", "serve.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--data", self.data, "--port", "0", *extra],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        banner = self.proc.stdout.readline()  # the process writes it once it listens
        match = re.search(r"trio-realtime server on (ws://127\.0\.0\.1:(\d+)/realtime)", banner)
        if match is None:
            self.close()
            raise AssertionError(f"serve did not start: {banner!r}\n{self.log_text()}")
        self.url = match[1]
        self.port = int(match[2])

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``trio-realtime ARGS`` to its end, stdin empty, output captured."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        **kwargs,  # type: ignore[call-overload]
    )
