"""Stores by URL: ``sqlite:///path/to/db``, ``memory:``, Redis (``redis://``, ``rediss://``,
``redis+cluster://``: needs coredis, imported only when such a URL is used), and whatever
:func:`register_store` adds, so that ``serve(store=...)``, ``open_server(store=...)``
and ``trio-realtime serve --store URL`` need no change for a new store."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import ConfigError
from ._sqlite import SqliteStore
from ._store import MemoryStore, Store

__all__ = ["register_store", "store_from_url"]

#: Makes an (unopened) store from its URL.
StoreFactory = Callable[[str], Store]

_FACTORIES: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``scheme:...`` URLs open stores made by ``factory(url)`` (replacing an earlier
    registration of the scheme)."""
    if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ConfigError("store", f"a URL scheme is letters, digits, + and -; got {scheme!r}")
    _FACTORIES[scheme.lower()] = factory


def store_from_url(url: str) -> Store:
    """The store a URL names (not opened yet: the server opens it).

    Raises:
        ConfigError: the URL has no scheme, or no store is registered for it.
    """
    scheme, colon, _ = url.partition(":")
    factory = _FACTORIES.get(scheme.lower()) if colon else None
    if factory is None:
        known = ", ".join(f"{name}:" for name in sorted(_FACTORIES))
        raise ConfigError("store", f"no store for {url!r} (known: {known})")
    return factory(url)


def _sqlite(url: str) -> Store:
    """``sqlite:///absolute/path.db`` or ``sqlite://relative/path.db``: the file is the rest of
    the URL after ``sqlite://``."""
    path = url.split(":", 1)[1].removeprefix("//")
    if not path:
        raise ConfigError("store", f"a sqlite store needs a file: {url!r}")
    return SqliteStore(path)


def _memory(url: str) -> Store:
    if url.split(":", 1)[1].strip("/"):
        raise ConfigError("store", f"a memory store takes no path: {url!r}")
    return MemoryStore()


def _redis(url: str) -> Store:
    """``redis://host:port/db``, ``rediss://...`` (TLS), ``redis+cluster://host:port[,...]``;
    options in ``_redis.py``. coredis is imported here, not with the package."""
    from ._redis import redis_store_from_url

    return redis_store_from_url(url)


register_store("sqlite", _sqlite)
register_store("memory", _memory)
for _scheme in ("redis", "rediss", "redis+cluster"):
    register_store(_scheme, _redis)
