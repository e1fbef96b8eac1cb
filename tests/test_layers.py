"""The package's dependency rules, checked on every import (``if TYPE_CHECKING:`` imports and
imports inside functions included: a cycle hidden from the interpreter is still a cycle).

1. Layers: a module imports only its own layer and lower ones (docs/architecture.md).
2. The client, the server and the local queue never import each other; they meet only in the
   shared layers (protocol, journal, transports, errors, config).
3. Services see only the public service host, never the connection's internals.
4. The Socket.IO codec (transports/_socketio_codec.py) is sans I/O: no I/O library, and from the
   package only ``_errors``.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import trio_realtime

ROOT = Path(trio_realtime.__file__).parent

#: Lower number = lower layer. A module may import its own layer and any lower one.
LAYERS = {
    "_errors": 0,
    "_version": 0,
    "_paths": 0,
    "_groups": 0,
    "_protocol": 1,
    "_journal": 2,
    "_config": 3,
    "_backoff": 3,
    "transports": 4,  # its modules share the layer; _socketio_codec.py is also sans I/O
    "_outbox": 5,
    "_stream": 5,
    "queue": 5,
    "_service": 6,
    "_inbox": 6,
    "_metrics": 6,
    "_requests": 6,
    "_supervisor": 7,
    "_tokens": 8,
    "_link": 8,
    "_reconnect": 9,
    "_connection": 9,
    "services": 10,
    "_realtime": 11,
    "server": 11,
    "_chat": 12,
    "_cli": 12,
    "service": 12,
    "testing": 12,
    "__main__": 12,
    "__init__": 12,
}

SHARED = {part for part, layer in LAYERS.items() if layer <= 4}
CLIENT = {
    "_outbox",
    "_stream",
    "_service",
    "_inbox",
    "_metrics",
    "_requests",
    "_supervisor",
    "_tokens",
    "_link",
    "_reconnect",
    "_connection",
    "services",
    "_realtime",
}
SERVER = {"server"}
QUEUE = {"queue"}
#: What services may import: the public service host and the shared layers.
SERVICE_HOST = SHARED | {"_service", "_stream", "services"}
#: Modules held to the sans-I/O rule, and the libraries that rule keeps out of them.
SANS_IO_MODULES = [Path("transports/_socketio_codec.py")]
IO_LIBRARIES = {"trio", "anyio", "trio_websocket", "socket", "asyncio", "selectors"}


def top(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def imports(source: str, relpath: Path) -> list[tuple[str, int]]:
    """(imported top-level part of trio_realtime, line) for every import in ``source``, the text
    of the module at ``relpath`` inside the package."""
    package = relpath.parent.parts
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
                if not target:  # "from . import x" at the top
                    target = tuple(alias.name for alias in node.names)[:1]
            elif node.module and node.module.split(".")[0] == "trio_realtime":
                target = tuple(node.module.split(".")[1:]) or ("__init__",)
            else:
                continue
            found.append((top(target), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "trio_realtime":
                    found.append((top(tuple(parts[1:])), node.lineno))
    return found


def graph() -> list[tuple[str, str, str]]:
    """(importing top-level part, imported part, where) for every import across parts."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = top(rel.parts)
        for target, line in imports(path.read_text(), rel):
            if target != own:
                edges.append((own, target, f"{rel}:{line}"))
    return edges


def test_every_module_has_a_layer_and_every_layer_a_module() -> None:
    assert set(LAYERS) == {top(path.relative_to(ROOT).parts) for path in ROOT.rglob("*.py")}
    assert set(LAYERS) >= CLIENT | SERVER | QUEUE


def test_the_architecture_page_shows_these_layers() -> None:
    """docs/architecture.md's module map is the table above, row for row."""
    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    shown: dict[str, int] = {}
    for layer, cell in re.findall(r"^\| (\d+) \| (.+?) \|", page, re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", cell):
            shown[name.removesuffix(".py").removesuffix("/")] = int(layer)
    assert shown == LAYERS


def test_imports_point_down() -> None:
    wrong = [
        f"{where} imports {target} (layer {LAYERS[target]} > {LAYERS[own]})"
        for own, target, where in graph()
        if LAYERS[target] > LAYERS[own]
    ]
    assert not wrong, "\n".join(wrong)


def test_client_server_and_queue_are_independent() -> None:
    groups = {"client": CLIENT, "server": SERVER, "queue": QUEUE}
    wrong = [
        f"{where}: the {a} imports {target} (the {b})"
        for own, target, where in graph()
        for a, mine in groups.items()
        for b, theirs in groups.items()
        if a != b and own in mine and target in theirs
    ]
    assert not wrong, "\n".join(wrong)


def test_services_use_only_the_public_host() -> None:
    wrong = [
        f"{where} imports {target}"
        for own, target, where in graph()
        if own == "services" and target not in SERVICE_HOST
    ]
    assert not wrong, "\n".join(wrong)


def test_no_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for own, target, _ in graph():
        if own not in ("__init__", "__main__"):  # the package's surface re-exports everything
            edges.setdefault(own, set()).add(target)
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for node in sorted(edges):
        if node not in seen:
            visit(node, [])


def test_every_import_is_counted() -> None:
    """The rules see imports the interpreter skips (type-checking ones, imports in functions)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .services import X\n"
        "def f():\n"
        "    from ._realtime import Connection\n"
        "import trio_realtime.server\n"
    )
    found = Counter(imports(source, Path("_connection.py")))
    assert found == Counter([("services", 3), ("_realtime", 5), ("server", 6)])
    assert imports("from ..services import P\n", Path("_protocol/_x.py")) == [("services", 1)]


def test_the_server_engine_knows_no_websocket() -> None:
    """The engine drives any transport; only the front (server/_websocket.py) knows WebSocket."""
    for path in (ROOT / "server").glob("*.py"):
        if path.name in ("_websocket.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text())
        modules = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [m for m in modules if "websocket" in m], (path.name, modules)


def test_the_socketio_codec_is_sans_io() -> None:
    """The codec a Socket.IO transport drives does no I/O: it imports no I/O library and, from the
    package, only ``_errors`` (not the transports beside it, which import trio)."""
    for rel in SANS_IO_MODULES:
        source = (ROOT / rel).read_text()
        assert {target for target, _ in imports(source, rel)} <= {"_errors"}, rel
        libraries = [
            alias.name
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [
            node.module or ""
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.level == 0
        ]
        assert not [m for m in libraries if m.split(".")[0] in IO_LIBRARIES], (rel, libraries)
