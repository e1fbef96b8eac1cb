"""The package's layers import downwards only (ARCHITECTURE.md): _protocol <- _journal <- _outbox
<- _connection + _transports <- services <- server, CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import trio_realtime

ROOT = Path(trio_realtime.__file__).parent

#: Lower number = lower layer. A module may import its own layer and any lower one.
LAYERS = {
    "_errors": 0,
    "_version": 0,
    "_protocol": 1,
    "_journal": 2,
    "_config": 3,
    "_backoff": 3,
    "_outbox": 4,
    "queue": 4,
    "_transports": 5,
    "_connection": 6,
    "services": 7,
    "_realtime": 8,
    "server": 9,
    "_chat": 10,
    "_cli": 10,
    "testing": 10,
    "__main__": 10,
    "__init__": 10,
}


def top(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def type_only(tree: ast.AST) -> set[ast.AST]:
    """Imports under ``if TYPE_CHECKING:``: annotations only, no import at run time."""
    nodes: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for child in node.body:
                nodes.update(ast.walk(child))
    return nodes


def imports(source: str, relpath: Path) -> list[tuple[str, int]]:
    """(imported top-level part of trio_realtime, line) for each run-time import in ``source``,
    the text of the module at ``relpath`` inside the package."""
    package = relpath.parent.parts
    found = []
    tree = ast.parse(source)
    skip = type_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
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


def test_every_module_has_a_layer() -> None:
    for path in ROOT.rglob("*.py"):
        assert top(path.relative_to(ROOT).parts) in LAYERS, path


def test_imports_point_down() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        own = top(path.relative_to(ROOT).parts)
        for target, line in imports(path.read_text(), path.relative_to(ROOT)):
            if target != own and LAYERS[target] > LAYERS[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} (a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_the_check_can_fail() -> None:
    source = "from ..services import PresenceService\nfrom .._errors import RealtimeError\n"
    assert imports(source, Path("_protocol/_x.py")) == [("services", 1), ("_errors", 2)]
    assert imports("from trio_realtime.server import serve\n", Path("_outbox.py")) == [
        ("server", 1)
    ]
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .services import X\n"
    assert imports(guarded, Path("_connection.py")) == []


def test_the_server_engine_knows_no_websocket() -> None:
    """The engine drives any transport; only the front (server/_websocket.py) knows WebSocket."""
    for path in (ROOT / "server").glob("*.py"):
        if path.name in ("_websocket.py", "__init__.py"):
            continue
        name = path.name
        tree = ast.parse(path.read_text())
        modules = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [m for m in modules if "websocket" in m], (name, modules)
