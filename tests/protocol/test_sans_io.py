"""The protocol core performs no I/O: it imports no trio, anyio, trio-websocket, socket or asyncio."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import trio_realtime._protocol

PROTOCOL_DIR = pathlib.Path(trio_realtime._protocol.__file__).parent
FORBIDDEN = {"trio", "anyio", "trio_websocket", "socket", "asyncio", "selectors"}


def test_no_io_imports_in_source() -> None:
    offenders = []
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    names = [node.module]
                elif node.level == 2 and node.module not in ("_errors",):
                    offenders.append(f"{path.name}: from ..{node.module} (only .._errors allowed)")
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_core_loads_no_io_library() -> None:
    # Import the subpackage alone (without running trio_realtime/__init__.py, which loads the rest
    # of the library) in a fresh interpreter and look at what got loaded.
    package_dir = PROTOCOL_DIR.parent
    code = f"""
import sys, types
pkg = types.ModuleType("trio_realtime")
pkg.__path__ = [{str(package_dir)!r}]
sys.modules["trio_realtime"] = pkg
import trio_realtime._protocol
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(FORBIDDEN)!r})
print(",".join(loaded))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
