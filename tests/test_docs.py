"""Every Python block of README.md and docs/ runs as written.

The convention, for whoever writes docs:

* A fenced block whose language is ``python`` (or ``py``) is a complete program: imports,
  ``trio.run``, and where the server's URL and token come from. This test runs each one.
* A block is not run when the line right before its opening fence is ``<!-- fragment -->``. Use it
  sparingly, for a partial snippet that only makes sense inside a larger program, and say in the
  prose around it what it needs.
* A block made of ``--8<-- "examples/NAME.py"`` lines shows an example file (pymdownx.snippets).
  It is not run here: tests/test_examples.py runs every file in examples/. It is counted, and the
  file must exist there.

How a block runs: in a subprocess (``sys.executable``), in its own temporary working directory
(``XDG_DATA_HOME`` points into it too, so default journal directories stay there), with a timeout
and warnings as errors, like a user saving it as a file and running ``python file.py``. A block
that defines ``test_`` functions is a pytest module: it is saved as ``test_block.py`` and run with
``python -m pytest``.
Blocks that talk to a server find what a user would have set up by following the quickstart: a
real ``trio-realtime serve`` on loopback (started once for this module, on a free port) and a
token made with ``trio-realtime token --user alice``, in the environment variables
``TRIO_REALTIME_URL`` and ``TRIO_REALTIME_TOKEN``. The blocks run in parallel, so they must not
assume they are the only client of the server (channel offsets, other members of a room).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAGMENT = "<!-- fragment -->"
BLOCK_TIMEOUT = 60.0
WORKERS = 6

_OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_INCLUDE = re.compile(r"""^--8<--\s+["'](?P<path>[^"']+)["']\s*$""")
_TEST_FUNCTION = re.compile(r"^(async\s+)?def\s+test_", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence, from 1
    code: str
    fragment: bool
    includes: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def __repr__(self) -> str:
        return f"<block {self.id}>"

    @property
    def is_pytest_module(self) -> bool:
        return bool(_TEST_FUNCTION.search(self.code))


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _OPENING.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().lstrip("{").lstrip(".").split(" ")[0].rstrip("}")
        closing = re.compile(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if language.lower() in ("python", "py", "python3"):
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            statements = [line.strip() for line in code.splitlines() if line.strip()]
            includes = [m["path"] for s in statements if (m := _INCLUDE.match(s))]
            assert not includes or len(includes) == len(statements), (
                f"{path}:{i + 1}: a block is either code or --8<-- includes, not both"
            )
            yield Block(
                path=str(path.relative_to(ROOT)),
                line=i + 1,
                code=code,
                fragment=i > 0 and lines[i - 1].strip() == FRAGMENT,
                includes=tuple(includes),
            )
        i = end + 1


BLOCKS = [block for path in doc_files() for block in python_blocks(path)]
RUN = [b for b in BLOCKS if not b.fragment and not b.includes]


def test_blocks_are_accounted_for() -> None:
    """Every block is run here, a fragment, or an example that tests/test_examples.py runs."""
    fragments = [b for b in BLOCKS if b.fragment]
    included = [b for b in BLOCKS if b.includes]
    assert len(RUN) + len(fragments) + len(included) == len(BLOCKS)
    assert RUN, "no Python block found to run"
    for block in included:
        assert not block.fragment, f"{block.id}: an included example is run anyway"
        for include in block.includes:
            example = ROOT / include
            assert example.parent == ROOT / "examples", f"{block.id}: {include} is not run"
            assert example.suffix == ".py", f"{block.id}: {include} is not run"
            assert example.is_file(), f"{block.id}: {include} does not exist"
    print(
        f"{len(BLOCKS)} Python blocks in README.md and docs/: {len(RUN)} run, "
        f"{len(fragments)} fragment(s), {len(included)} included examples"
    )


# ---------------------------------------------------------------------------------------------
# The server the blocks talk to, and the runs


@dataclass
class Run:
    returncode: int | None  # None: timed out
    output: str
    seconds: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``trio-realtime serve`` on a free loopback port, and a token for alice, as the quickstart
    makes them; yields the environment variables the docs read."""
    base = tmp_path_factory.mktemp("docs-server")
    data = base / "server-data"
    port = _free_port()
    cli = [sys.executable, "-m", "trio_realtime"]
    with open(base / "server.log", "wb") as log:
        process = subprocess.Popen(
            [*cli, "serve", "--data", str(data), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (base / "server.log").read_text(errors="replace")
                pytest.fail(f"the server did not start (exit {process.poll()}):\n{log_text}")
            time.sleep(0.05)
        token = subprocess.run(
            [*cli, "token", "--user", "alice", "--data", str(data)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        yield {
            "TRIO_REALTIME_URL": f"ws://127.0.0.1:{port}/realtime",
            "TRIO_REALTIME_TOKEN": token,
        }
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_block(block: Block, workdir: Path, server_env: dict[str, str]) -> Run:
    workdir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(server_env, XDG_DATA_HOME=str(workdir / ".local-share"))
    env["PYTHONWARNINGS"] = "error"  # as in our own tests: a doc must not teach a deprecated call
    if block.is_pytest_module:
        (workdir / "test_block.py").write_text(block.code, encoding="utf-8")
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_block.py"]
    else:
        (workdir / "block.py").write_text(block.code, encoding="utf-8")
        args = [sys.executable, "block.py"]
    started = time.monotonic()
    try:
        out = subprocess.run(
            args,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return Run(None, output, time.monotonic() - started)
    return Run(out.returncode, out.stdout, time.monotonic() - started)


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest,
    server: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[Run]]]:
    """Starts every selected block at once (a few at a time); each test waits for its own."""
    selected = {
        item.callspec.params["block"].id
        for item in request.session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("block"), Block)
    }
    base = tmp_path_factory.mktemp("docs-blocks")
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            block.id: pool.submit(run_block, block, base / f"block-{n}", server)
            for n, block in enumerate(RUN)
            if block.id in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_block_runs(block: Block, runs: dict[str, concurrent.futures.Future[Run]]) -> None:
    run = runs[block.id].result()
    where = f"{block.id} ({'pytest' if block.is_pytest_module else 'python'})"
    assert run.returncode is not None, f"{where} still ran after {BLOCK_TIMEOUT} s:\n{run.output}"
    assert run.returncode == 0, f"{where} exited with {run.returncode}:\n{run.output}"
    print(f"{where}, {run.seconds:.1f} s:\n{run.output}")  # shown with -s
