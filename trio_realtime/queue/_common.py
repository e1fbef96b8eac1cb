"""Where a named queue lives, and how an item is laid out in a producer's journal record."""

from __future__ import annotations

import enum
import hashlib
import os
import re
import struct
import tempfile
from typing import Any

import attrs
import cattrs
import orjson

from .._paths import data_dir

__all__ = [
    "Envelope",
    "ItemKind",
    "decode_item",
    "encode_item",
    "queue_directory",
    "runtime_socket",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEAD = struct.Struct("<Bd")  # ItemKind, enqueue time (seconds since the epoch)


class ItemKind(enum.IntEnum):
    """How an item's payload is encoded (the first byte of its record body)."""

    JSON = 1
    BYTES = 2
    ATTRS = 3
    """cattrs-unstructured JSON, after u16 length + the class's ``module.QualName``."""


converter = cattrs.Converter()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"a queue name is 1-64 of A-Z a-z 0-9 . _ - (got {name!r})")
    return name


def queue_directory(name: str, directory: str | os.PathLike[str] | None = None) -> str:
    """The data directory of queue ``name``: ``directory`` if given, else
    ``$XDG_DATA_HOME/trio-realtime/queues/NAME`` (``~/.local/share/...`` by default). A queue
    that older versions created at ``$XDG_DATA_HOME/trio_realtime/queues/NAME`` stays there
    (while the new place does not exist), so no item is lost on upgrade."""
    check_name(name)
    if directory is not None:
        return os.fspath(directory)
    return data_dir("queues", name, legacy=[("trio_realtime", "queues", name)])


def runtime_socket(data_dir: str) -> str:
    """Where the running consumer of the queue in ``data_dir`` listens for wake-ups: a per-user
    runtime directory (``$XDG_RUNTIME_DIR``, else a 0700 directory in the temp dir), named after
    the data directory so producers find it with no port or path to pass around."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = os.path.join(tempfile.gettempdir(), f"trio_realtime-{os.getuid()}")
    runtime = os.path.join(base, "trio_realtime")
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    digest = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:24]
    return os.path.join(runtime, f"queue-{digest}.sock")


@attrs.frozen
class Envelope:
    kind: int
    enqueued_at: float
    type_name: str | None
    data: bytes


def encode_item(obj: Any, enqueued_at: float) -> bytes:
    """The record body for ``obj``: raw bytes as they are, an attrs instance through cattrs (with
    its class name, for a typed round trip), anything else as JSON."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return _HEAD.pack(ItemKind.BYTES, enqueued_at) + bytes(obj)
    if attrs.has(type(obj)):
        name = f"{type(obj).__module__}.{type(obj).__qualname__}".encode()
        data = orjson.dumps(converter.unstructure(obj))
        return _HEAD.pack(ItemKind.ATTRS, enqueued_at) + struct.pack("<H", len(name)) + name + data
    try:
        data = orjson.dumps(obj)
    except TypeError as exc:
        raise TypeError(
            f"a queue item must be bytes, an attrs instance or JSON-able, not {type(obj).__name__}"
        ) from exc
    return _HEAD.pack(ItemKind.JSON, enqueued_at) + data


def decode_item(body: bytes) -> Envelope:
    kind, enqueued_at = _HEAD.unpack_from(body)
    rest = body[_HEAD.size :]
    if kind == ItemKind.ATTRS:
        (size,) = struct.unpack_from("<H", rest)
        return Envelope(kind, enqueued_at, rest[2 : 2 + size].decode(), rest[2 + size :])
    if kind not in (ItemKind.JSON, ItemKind.BYTES):
        raise ValueError(f"unknown queue item kind {kind}")
    return Envelope(kind, enqueued_at, None, rest)


def payload_of(envelope: Envelope, types: dict[str, type[Any]]) -> Any:
    """The item as the producer sent it: bytes, an instance of a registered attrs class, or the
    JSON value (an unregistered attrs class arrives as its unstructured dict)."""
    if envelope.kind == ItemKind.BYTES:
        return envelope.data
    value = orjson.loads(envelope.data)
    cls = types.get(envelope.type_name or "")
    return converter.structure(value, cls) if cls is not None else value
