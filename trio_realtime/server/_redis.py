"""A server store on Redis (``redis://``, ``rediss://``, ``redis+cluster://``), with coredis.

Several processes can write to one store: every write is one Lua script that checks the batch's
preconditions and applies it, so two writers racing on a channel or a client row get exactly one
winner and one :class:`StoreConflict`.

Keys. Every key of one store carries one hash tag, ``{trio_realtime:<prefix>}`` (``prefix`` from
the URL, ``default`` if none), so that they all hash to one slot:

============================================  ==================================================
``{trio_realtime:P}:epoch``                   the store's epoch (a string)
``{trio_realtime:P}:chan:<channel>``          the channel's row: a hash of ChannelInfo's fields,
                                              each JSON (``epoch``, ``head``, ``first``)
``{trio_realtime:P}:log:<channel>``           its retained events: a stream, entry ID
                                              ``<offset>-0``, fields ``m`` (the event's fields
                                              but channel, offset and epoch, JSON) and ``t``
                                              (when it was stored, unix seconds)
``{trio_realtime:P}:clients``                 client_id -> ClientRow (JSON, fields at their
                                              default left out: a field added later with a
                                              default reads the same from rows written before)
``{trio_realtime:P}:keys``                    a sorted set: member ``[user, key]`` (JSON),
                                              score = when it was stored
``{trio_realtime:P}:rcpt:<channel>``          user -> read watermark
``{trio_realtime:P}:pc:<channel>``            ``[user, connection]`` -> PresenceEntry (JSON)
``{trio_realtime:P}:pu:<user>``               ``[channel, connection]`` -> 1 (an index)
``{trio_realtime:P}:px:<connection>``         ``[channel, user]`` -> PresenceEntry (JSON)
``{trio_realtime:P}:pn:<node>``               ``[channel, user, connection]`` -> PresenceEntry
                                              (JSON): the entries a server node holds
``{trio_realtime:P}:leases``                  server node -> the end of its lease (unix seconds)
``{trio_realtime:P}:notices`` (a channel)     what nodes tell each other (pub/sub, not a key)
============================================  ==================================================

**Redis Cluster**: a Lua script may only touch keys of one slot, and a :class:`WriteBatch` can
touch several channels and clients; the one hash tag is what makes every write one script, hence
atomic, on a cluster too. The price: one store lives on one shard (one master and its replicas)
however many the cluster has; a cluster spreads *several* stores (prefixes), not one. Splitting a
store over slots would need a multi-step write protocol that stays atomic across a crash between
its steps; this store does not attempt that.

Durability: the contract says a write is durable when it returns. Redis gives that with
``appendonly yes`` and ``appendfsync always`` (the write's reply comes after the fsync). Under
``appendfsync everysec`` (Redis' default with AOF) a Redis crash can lose about the last second of
acknowledged writes; without AOF, everything since the last RDB snapshot. ``?wait_aof=1`` makes
every write wait for ``WAITAOF 1 0 <timeout>`` (Redis >= 7.2, AOF on), which makes it durable
whatever ``appendfsync`` says; ``open()`` refuses it if the server cannot.

Failures: a command that cannot reach Redis, or waits longer than ``stream_timeout`` for its reply,
raises (coredis' ConnectionError / TimeoutError), and the server closes the connections whose
writes failed. A write is not retried on a lost connection or reply (coredis would by default;
the other commands, which may run twice, are retried once): a write whose reply was lost may
have applied, and the server must see it fail, not a retry that
conflicts with itself (its events then acknowledged as duplicates). A write that failed that way,
applied or not, is settled like any failed commit: the connection closes, the client resumes and
sends again, and what was stored meanwhile is acknowledged as a duplicate and filled in for the
subscribers from the store (the shared path, which every Redis store takes). Each command fails
after one ``stream_timeout``.

A Lua script is not rolled back if it fails midway; every check (preconditions, encodings) runs
before the first write, and the script is declared (``#!lua``) so that Redis refuses it whole under
``maxmemory`` pressure rather than part-way.

Several server nodes: the store has the ``SharedStore`` capability (always: one node on Redis
runs the multi-node path too, whose gap filling also covers a write that applied but whose reply
was lost). Notices go through Redis pub/sub on one channel (``PUBLISH``, which a
cluster passes to every node); pub/sub drops what is published while a subscriber reconnects,
which the contract allows (the server polls the channels' heads as a safety net).

coredis runs on anyio: under trio its connection pool lives in a trio system task that the store
starts in :meth:`RedisStore.open` and ends in :meth:`RedisStore.aclose`, so the store can be opened
and closed from any task.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import attrs
import orjson
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ConfigError, RealtimeError
from .._protocol import Message
from ._store import (
    ChannelInfo,
    ClientRow,
    Notice,
    PresenceEntry,
    Snapshot,
    StoreConflict,
    WriteBatch,
    _Row,
    decode_notice,
    encode_notice,
    from_fields,
    new_epoch,
)

try:
    import coredis
    from coredis.connection import TCPLocation
    from coredis.exceptions import ClusterDownError, ResponseError
    from coredis.exceptions import ConnectionError as CoredisConnectionError
    from coredis.retry import ConstantRetryPolicy, NoRetryPolicy
except ImportError:  # pragma: no cover - the registry reports it (see redis_store_from_url)
    coredis = None  # type: ignore[assignment]

__all__ = ["RedisStore", "redis_store_from_url"]

logger = logging.getLogger("trio_realtime.server.redis")

_A = TypeVar("_A")

#: A write waits this long for ``WAITAOF`` (milliseconds) unless the URL says otherwise.
WAIT_AOF_TIMEOUT_MS = 5000
#: Connecting gives up after this long (seconds; ``?connect_timeout=`` in the URL).
CONNECT_TIMEOUT = 10.0
#: A command whose reply takes longer fails (seconds; ``?stream_timeout=``): a Redis that hangs
#: fails the writes waiting on it, and the server closes their connections, instead of hanging.
STREAM_TIMEOUT = 60.0

# --- Rows as JSON -------------------------------------------------------------------------------


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _is_default(field: attrs.Attribute[Any], value: Any) -> bool:
    default: Any = field.default
    if default is attrs.NOTHING:
        return False
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return False
        default = default.factory()
    return bool(value == default)


def _encode_row(row: Any) -> bytes:
    """An attrs row as canonical JSON (sorted keys), leaving out fields at their default: the same
    row always encodes to the same bytes (so the write script compares rows as strings), and a
    field added to the class later (with a default) does not change how older rows encode."""
    return _dump(
        {
            field.name: getattr(row, field.name)
            for field in attrs.fields(type(row))
            if not _is_default(field, getattr(row, field.name))
        }
    )


def _decode_row(cls: type[_Row], data: bytes | str) -> _Row:
    """A row from :func:`_encode_row`; fields this version does not know are ignored."""
    return from_fields(cls, orjson.loads(data))


#: Message fields the log keeps in the key or the channel row, not in each entry.
_MESSAGE_KEYED = frozenset({"channel", "offset", "epoch"})
_MESSAGE_FIELDS = tuple(
    field.name for field in attrs.fields(Message) if field.name not in _MESSAGE_KEYED
)


def _encode_event(message: Message) -> bytes:
    return orjson.dumps({name: getattr(message, name) for name in _MESSAGE_FIELDS})


def _decode_events(
    channel: str, epoch: str, ids: Sequence[bytes], data: Sequence[bytes]
) -> list[Message]:
    """Events from their entry IDs and ``m`` fields (decoded as one JSON array: faster)."""
    rows = orjson.loads(b"[" + b",".join(data) + b"]")
    found: list[Message] = []
    for entry_id, values in zip(ids, rows, strict=True):
        offset = int(entry_id.partition(b"-")[0])
        try:
            found.append(Message(channel=channel, offset=offset, epoch=epoch, **values))
        except TypeError:  # a field this version does not know (written by a newer one)
            known = {name: values[name] for name in _MESSAGE_FIELDS if name in values}
            found.append(Message(channel=channel, offset=offset, epoch=epoch, **known))
    return found


def _time(value: float) -> bytes:
    """A time for Redis (a score, a field): repr round-trips a float exactly."""
    if not math.isfinite(value):
        raise ValueError(f"a store time must be finite, got {value!r}")
    return repr(float(value)).encode()


# --- The scripts --------------------------------------------------------------------------------

# KEYS: clients hash, keys zset, then per append its channel hash and its log stream.
# ARGV: time, #appends, #clients, #keys, forget-before ('' for none); per append: after, epoch
# (JSON), keep_from, drop_before, #events, the events; per client: id, before ('' for no row),
# after; the key members.
_WRITE = b"""#!lua
local time = ARGV[1]
local n_appends, n_clients, n_keys = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local forget = ARGV[5]
local a = 6
local appends = {}
for i = 1, n_appends do
  local chan = KEYS[1 + 2 * i]
  local head = redis.call('HGET', chan, 'head')
  local after = tonumber(ARGV[a])
  if (head and tonumber(head) or 0) ~= after then
    return {0, 'channel', i}
  end
  appends[i] = {chan, KEYS[2 + 2 * i], after, a}
  a = a + 5 + tonumber(ARGV[a + 4])
end
local clients_at = a
for i = 1, n_clients do
  local row = redis.call('HGET', KEYS[1], ARGV[a])
  local before = ARGV[a + 1]
  if before == '' then
    if row then return {0, 'client', i} end
  elseif row ~= before then
    return {0, 'client', i}
  end
  a = a + 3
end
local function id(offset)
  return string.format('%.0f', offset) .. '-0'
end
for i = 1, n_appends do
  local chan, log, after, p = appends[i][1], appends[i][2], appends[i][3], appends[i][4]
  local epoch, keep_from, drop_before = ARGV[p + 1], tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local n = tonumber(ARGV[p + 4])
  for j = 1, n do
    redis.call('XADD', log, id(after + j), 'm', ARGV[p + 4 + j], 't', time)
  end
  local head = after + n
  if keep_from > 1 then
    redis.call('XTRIM', log, 'MINID', id(keep_from))
  end
  -- Events stored before drop_before go; stored times grow with offsets, so they are a prefix:
  -- look at the oldest first (usually young already), then pages twice as long each time.
  local cut = nil
  local start, count = '-', 1
  while cut == nil do
    local page = redis.call('XRANGE', log, start, '+', 'COUNT', count)
    for _, entry in ipairs(page) do
      local fields, stored = entry[2], nil
      for k = 1, #fields, 2 do
        if fields[k] == 't' then stored = tonumber(fields[k + 1]) end
      end
      if stored >= drop_before then
        cut = entry[1]
        break
      end
      start = '(' .. entry[1]
    end
    if cut == nil and #page < count then
      cut = id(head + 1)
    end
    count = math.min(count * 2, 1024)
  end
  redis.call('XTRIM', log, 'MINID', cut)
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  local first = head + 1
  if #oldest > 0 then
    first = tonumber(string.match(oldest[1][1], '^(%d+)-'))
  end
  redis.call('HSETNX', chan, 'epoch', epoch)
  redis.call('HSET', chan, 'head', string.format('%.0f', head), 'first', string.format('%.0f', first))
end
a = clients_at
for i = 1, n_clients do
  redis.call('HSET', KEYS[1], ARGV[a], ARGV[a + 2])
  a = a + 3
end
for i = 1, n_keys do
  redis.call('ZADD', KEYS[2], time, ARGV[a])
  a = a + 1
end
if forget ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. forget)
end
return {1}
"""

# KEYS: epoch, clients hash, keys zset, then the channel hashes. ARGV: #clients, the client ids,
# then the key members.
_LOAD = b"""#!lua flags=no-writes
local n_clients = tonumber(ARGV[1])
local ids, members = {}, {}
for i = 1, n_clients do ids[i] = ARGV[1 + i] end
for i = 2 + n_clients, #ARGV do members[#members + 1] = ARGV[i] end
-- In chunks: Lua's unpack() takes a few thousand values at most.
local function each(command, key, names)
  local found = {}
  for i = 1, #names, 1000 do
    local part = redis.call(command, key, unpack(names, i, math.min(i + 999, #names)))
    for j = 1, #part do found[#found + 1] = part[j] end
  end
  return found
end
local clients, scores, channels = each('HMGET', KEYS[2], ids), each('ZMSCORE', KEYS[3], members), {}
for i = 4, #KEYS do channels[i - 3] = redis.call('HGETALL', KEYS[i]) end
return {redis.call('GET', KEYS[1]), clients, scores, channels}
"""

# KEYS: channel hash, log stream. ARGV: first offset wanted, limit. Returns the channel's epoch
# (false: no row), then each event's entry ID and its ``m`` field, flat (less for the client to
# parse than XRANGE's nested reply).
_READ = b"""#!lua flags=no-writes
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {false} end
local found = {epoch}
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])) do
  local fields = entry[2]
  for k = 1, #fields, 2 do
    if fields[k] == 'm' then
      found[#found + 1] = entry[1]
      found[#found + 1] = fields[k + 1]
    end
  end
end
return found
"""

# KEYS: the channel's receipts hash. ARGV: user, offset.
_MARK_READ = b"""#!lua
local now = redis.call('HGET', KEYS[1], ARGV[1])
if now and tonumber(now) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: pc:<channel>, pu:<user>, px:<connection>, pn:<node>. ARGV: their four fields, then the
# entry ('' to drop it: returns 1 if this call removed it, 0 if it was gone).
_PRESENCE = b"""#!lua
if ARGV[5] == '' then
  local removed = redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[4])
  return removed
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
  redis.call('HSET', KEYS[2], ARGV[2], '1')
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
end
return 1
"""


# --- URLs ---------------------------------------------------------------------------------------


@attrs.frozen
class _Target:
    """Where a store's Redis is, from its URL."""

    url: str
    """As given (for messages)."""
    prefix: str
    wait_aof_ms: int | None
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    """``redis+cluster://``: the startup nodes; else empty."""
    client_url: str = ""
    """``redis://`` / ``rediss://``: the URL coredis gets (our own options taken out)."""
    username: str | None = None
    password: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    stream_timeout: float = STREAM_TIMEOUT


def _seconds(options: dict[str, str], name: str, default: float, url: str) -> float:
    value = options.pop(name, None)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ConfigError("store", f"{name} is a number of seconds: {_redacted(url)!r}")
    return seconds


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _parse(url: str) -> _Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "redis+cluster"):
        raise ConfigError("store", f"not a Redis URL: {_redacted(url)!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = options.pop("prefix", "default")
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError(
            "store", f"a Redis store prefix is non-empty, without {{ or }}: {_redacted(url)!r}"
        )
    wait_aof_ms: int | None = None
    wait = options.pop("wait_aof", "0")
    timeout = options.pop("wait_aof_timeout_ms", str(WAIT_AOF_TIMEOUT_MS))
    if wait not in ("0", "1") or not timeout.isdigit():
        raise ConfigError(
            "store", f"wait_aof is 0 or 1 and wait_aof_timeout_ms milliseconds: {_redacted(url)!r}"
        )
    if wait == "1":
        wait_aof_ms = int(timeout)
    connect_timeout = _seconds(options, "connect_timeout", CONNECT_TIMEOUT, url)
    stream_timeout = _seconds(options, "stream_timeout", STREAM_TIMEOUT, url)
    if scheme == "redis+cluster":
        nodes: list[tuple[str, int]] = []
        hosts = parts.netloc.rpartition("@")[2]
        for node in hosts.split(","):
            host, colon, port = node.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ConfigError(
                    "store",
                    f"redis+cluster://host:port[,host:port...] names its nodes: {_redacted(url)!r}",
                )
            nodes.append((host.strip("[]"), int(port)))
        if options or parts.path.strip("/"):
            raise ConfigError(
                "store",
                f"a redis+cluster URL takes only prefix, wait_aof, wait_aof_timeout_ms, "
                f"connect_timeout and stream_timeout (and no database): {_redacted(url)!r}",
            )
        return _Target(
            url,
            prefix,
            wait_aof_ms,
            cluster_nodes=tuple(nodes),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            connect_timeout=connect_timeout,
            stream_timeout=stream_timeout,
        )
    if not parts.hostname:
        raise ConfigError("store", f"a Redis URL names its server: {_redacted(url)!r}")
    client_url = urlunsplit(parts._replace(query=urlencode(options)))
    return _Target(
        url,
        prefix,
        wait_aof_ms,
        client_url=client_url,
        connect_timeout=connect_timeout,
        stream_timeout=stream_timeout,
    )


def _require_coredis() -> None:
    if coredis is None:
        raise ConfigError(
            "store",
            "a Redis store needs coredis, which is not installed: "
            "pip install 'trio-realtime[redis]'",
        )


def _closing_streams(cls: type[Any]) -> type[Any]:
    """``cls`` (a coredis connection class), closing its anyio memory streams when it ends:
    coredis 6.9 closes them only if the connection was made, so every failed attempt (Redis
    down) leaves six to warn (ResourceWarning) when collected."""

    class ClosingStreams(cls):  # type: ignore[misc]
        async def run(self, **kwargs: Any) -> None:
            try:
                await super().run(**kwargs)
            finally:
                for value in list(vars(self).values()):
                    if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                        value.close()

    ClosingStreams.__name__ = ClosingStreams.__qualname__ = cls.__name__
    return ClosingStreams


def _close_cluster_layout(client: Any) -> None:
    """coredis 6.9's cluster pool never closes its layout's error stream (an anyio memory stream
    pair), which warns (ResourceWarning) when collected: close it once the client is done."""
    layout = getattr(getattr(client, "connection_pool", None), "cluster_layout", None)
    for stream in getattr(layout, "_error_stream", ()):
        stream.close()


def redis_store_from_url(url: str) -> RedisStore:
    """The factory of ``redis://``, ``rediss://`` and ``redis+cluster://`` URLs."""
    return RedisStore(url)


# --- The store ----------------------------------------------------------------------------------


class RedisStoreError(RealtimeError):
    """Redis cannot be used as a store (open() failed); the message names the URL."""


class RedisStore:
    """Client rows, channel logs, caller keys, receipts and presence in Redis (the store contract
    of ``_store.py``; the server applies the rules). See the module's docstring for the keys,
    the cluster caveat and durability.

    URLs: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), and
    ``redis+cluster://host:port[,host:port...]``; options ``prefix=NAME`` (the namespace of the
    keys: several stores share one Redis under different prefixes), ``wait_aof=1`` (every write
    waits for ``WAITAOF 1 0``), ``wait_aof_timeout_ms=N``, ``connect_timeout=SECONDS`` (10 by
    default) and ``stream_timeout=SECONDS`` (how long a command may wait for its reply; 60 by
    default). Other options of a ``redis://`` or ``rediss://`` URL go to coredis (e.g.
    ``ssl_ca_certs``, ``ssl_cert_reqs``), which ignores those it does not know.
    """

    def __init__(self, url: str) -> None:
        _require_coredis()
        self._target = _parse(url)
        self.url = url
        self.prefix = self._target.prefix
        tag = f"{{trio_realtime:{self.prefix}}}:".encode()
        self._tag = tag
        self._epoch_key = tag + b"epoch"
        self._clients_key = tag + b"clients"
        self._keys_key = tag + b"keys"
        self._leases_key = tag + b"leases"
        self._notices_channel = tag + b"notices"
        self.shared = True
        """Several server nodes may use it (one node on Redis runs the same path: a write whose
        reply was lost, applied or not, is then filled in from the store, never a gap)."""
        self._client: Any = None
        self._stop: trio.Event | None = None
        self._stopped: trio.Event | None = None
        self._epoch = ""
        self._scripts: dict[str, Any] = {}

    def _key(self, kind: str, name: str) -> bytes:
        return self._tag + kind.encode() + b":" + name.encode()

    # Opening and closing: the client's pool lives in a system task of its own.

    def _make_client(self) -> Any:
        target = self._target
        client: Any
        if target.cluster_nodes:
            client = coredis.RedisCluster(
                startup_nodes=[TCPLocation(host, port) for host, port in target.cluster_nodes],
                username=target.username,
                password=target.password,
                decode_responses=False,
                connect_timeout=target.connect_timeout,
                stream_timeout=target.stream_timeout,
                # A cluster that says it is down ran nothing: retried. A lost connection or reply
                # may hide a write that applied: raised, not retried (see the module docstring).
                retry_policy=ConstantRetryPolicy((ClusterDownError,), retries=2, delay=0.1),
            )
        else:
            client = coredis.Redis.from_url(
                target.client_url,
                decode_responses=False,
                connect_timeout=target.connect_timeout,
                stream_timeout=target.stream_timeout,
                retry_policy=NoRetryPolicy(),
            )
        pool = client.connection_pool
        pool.connection_class = _closing_streams(pool.connection_class)
        return client

    async def open(self) -> None:
        """Connect, check that Redis answers (and can ``WAITAOF`` if asked to), and make the
        store's epoch if it has none yet.

        Raises:
            RedisStoreError: Redis cannot be reached or used (the message names the URL).
        """
        if self._client is not None:
            raise RuntimeError("this RedisStore is open already")
        where = _redacted(self.url)
        try:
            client = self._make_client()
        except Exception as exc:
            raise RedisStoreError(f"cannot use Redis at {where}: {exc}") from exc
        started = trio.Event()
        stop = trio.Event()
        stopped = trio.Event()
        failure: list[BaseException] = []

        async def host() -> None:
            try:
                async with client:
                    started.set()
                    await stop.wait()
            except Exception as exc:
                failure.append(exc)
                if started.is_set():
                    logger.exception("the Redis client of %s ended", where)
            finally:
                _close_cluster_layout(client)
                started.set()
                stopped.set()

        trio.lowlevel.spawn_system_task(host, name=f"RedisStore({where})")
        self._client, self._stop, self._stopped = client, stop, stopped
        try:
            await started.wait()
            if failure:
                raise failure[0]
            for name, source in (
                ("write", _WRITE),
                ("load", _LOAD),
                ("read", _READ),
                ("mark_read", _MARK_READ),
                ("presence", _PRESENCE),
            ):
                self._scripts[name] = client.register_script(source)
            await self._make_epoch()
            if self._target.wait_aof_ms is not None:
                await self._check_wait_aof(client)
            else:
                await self._check_fsync(client)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self.aclose()
            if isinstance(exc, RedisStoreError | ConfigError) or not isinstance(exc, Exception):
                raise
            raise RedisStoreError(f"cannot use Redis at {where}: {exc!r}") from exc

    async def _make_epoch(self) -> None:
        """Read the store's epoch, making one first if there is none (a new store, or a Redis
        that lost its data: the new epoch tells resuming clients that their offsets are gone)."""
        client = self._open_client()
        await _again(
            lambda: client.set(
                self._epoch_key, new_epoch().encode(), condition=coredis.PureToken.NX
            )
        )
        epoch = await _again(lambda: client.get(self._epoch_key))
        if epoch is None:
            raise RedisStoreError(f"the store's epoch at {_redacted(self.url)} vanished as made")
        self._epoch = epoch.decode()

    async def _check_fsync(self, client: Any) -> None:
        """Warn (log) if Redis acknowledges writes before they are on disk. (On a single Redis:
        coredis does not route CONFIG GET to one cluster node.)"""
        if self._target.cluster_nodes:
            return
        try:
            config = await client.config_get(["appendonly", "appendfsync"])
        except ResponseError:
            return  # CONFIG is often disabled on managed Redis: nothing to say
        settings = {
            (key.decode() if isinstance(key, bytes) else str(key)): (
                value.decode() if isinstance(value, bytes) else str(value)
            )
            for key, value in config.items()
        }
        if settings.get("appendonly") != "yes" or settings.get("appendfsync") != "always":
            logger.warning(
                "Redis at %s runs with appendonly=%s, appendfsync=%s: a write is acknowledged "
                "before it is on disk, and a Redis crash can lose acknowledged events (about the "
                "last second of them with everysec). Use appendfsync always, or ?wait_aof=1 "
                "(Redis >= 7.2).",
                _redacted(self.url),
                settings.get("appendonly"),
                settings.get("appendfsync"),
            )

    async def _check_wait_aof(self, client: Any) -> None:
        try:
            with client.ensure_persistence(1, 0, self._target.wait_aof_ms or 0):
                await client.get(self._epoch_key)
        except ResponseError as exc:
            raise ConfigError(
                "store",
                f"wait_aof=1 needs Redis >= 7.2 with appendonly yes; {_redacted(self.url)} "
                f"answered WAITAOF with: {exc}",
            ) from exc

    async def aclose(self) -> None:
        stop, stopped = self._stop, self._stopped
        self._client = self._stop = self._stopped = None
        self._scripts = {}
        if stop is None or stopped is None:
            await trio.lowlevel.checkpoint()
            return
        stop.set()
        with trio.CancelScope(shield=True):
            await stopped.wait()

    def _open_client(self) -> Any:
        if self._client is None:
            raise RuntimeError("the RedisStore is not open")
        return self._client

    async def _run(self, name: str, keys: Sequence[bytes], args: Sequence[bytes | str]) -> Any:
        self._open_client()
        script = self._scripts[name]
        if name == "write":  # never retried: it may have applied (see the module docstring)
            return await script(keys=list(keys), args=list(args))
        return await _again(lambda: script(keys=list(keys), args=list(args)))

    # The contract.

    async def load(
        self,
        *,
        clients: Collection[str] = (),
        channels: Collection[str] = (),
        keys: Collection[tuple[str, str]] = (),
    ) -> Snapshot:
        client_ids = list(clients)
        names = list(channels)
        pairs = list(keys)
        members = [_dump(list(pair)) for pair in pairs]
        script_keys = [
            self._epoch_key,
            self._clients_key,
            self._keys_key,
            *(self._key("chan", name) for name in names),
        ]
        script_args: list[bytes | str] = [str(len(client_ids)), *client_ids, *members]
        epoch, rows, scores, infos = await self._run("load", script_keys, script_args)
        if epoch is None:
            # The epoch is gone (Redis lost its data, or someone deleted the keys): a new one.
            await self._make_epoch()
            epoch, rows, scores, infos = await self._run("load", script_keys, script_args)
            if epoch is None:
                raise RedisStoreError(f"the store's epoch at {_redacted(self.url)} keeps vanishing")
        self._epoch = epoch.decode()
        found = Snapshot(self._epoch)
        for client_id, row in zip(client_ids, rows, strict=True):
            if row is not None:
                found.clients[client_id] = _decode_row(ClientRow, row)
        for name, flat in zip(names, infos, strict=True):
            if flat:
                fields = {
                    flat[i].decode(): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)
                }
                found.channels[name] = ChannelInfo(**fields)
        for pair, score in zip(pairs, scores, strict=True):
            if score is not None:
                found.keys[pair] = float(score)
        return found

    async def write(self, batch: WriteBatch) -> None:
        # Everything is encoded before Redis sees any of it: an event that cannot be stored
        # fails the write here, with nothing applied.
        keys: list[bytes] = [self._clients_key, self._keys_key]
        args: list[bytes | str] = [
            _time(batch.time),
            str(len(batch.appends)),
            str(len(batch.clients)),
            str(len(batch.keys)),
            b"" if batch.forget_keys_before is None else _time(batch.forget_keys_before),
        ]
        for append in batch.appends:
            keys += [self._key("chan", append.channel), self._key("log", append.channel)]
            for number, event in enumerate(append.events, append.after + 1):
                if event.offset != number:
                    raise ValueError(
                        f"append to {append.channel!r} after {append.after}: event {number} has "
                        f"offset {event.offset}"
                    )
            args += [
                str(append.after),
                _dump(append.epoch),
                str(append.keep_from),
                _time(append.drop_before),
                str(len(append.events)),
                *(_encode_event(event) for event in append.events),
            ]
        for update in batch.clients:
            args += [
                update.client_id,
                b"" if update.before is None else _encode_row(update.before),
                _encode_row(update.after),
            ]
        args += [_dump(list(pair)) for pair in batch.keys]
        client = self._open_client()
        if self._target.wait_aof_ms is not None:
            with client.ensure_persistence(1, 0, self._target.wait_aof_ms):
                result = await self._run("write", keys, args)
        else:
            result = await self._run("write", keys, args)
        if int(result[0]) != 1:
            kind, index = result[1].decode(), int(result[2]) - 1
            if kind == "channel":
                raise StoreConflict(f"channel {batch.appends[index].channel!r} moved")
            raise StoreConflict(f"client {batch.clients[index].client_id!r} moved")

    async def read(self, channel: str, after: int, limit: int) -> list[Message]:
        if limit <= 0:
            await trio.lowlevel.checkpoint()
            return []
        reply = await self._run(
            "read",
            [self._key("chan", channel), self._key("log", channel)],
            [str(max(after, 0) + 1), str(limit)],
        )
        if reply[0] is None or len(reply) == 1:
            return []
        return _decode_events(channel, orjson.loads(reply[0]), reply[1::2], reply[2::2])

    async def mark_read(self, channel: str, user: str, offset: int) -> bool:
        moved = await self._run("mark_read", [self._key("rcpt", channel)], [user, str(offset)])
        return bool(moved)

    async def receipts(self, channel: str) -> dict[str, int]:
        client = self._open_client()
        rows = await _again(lambda: client.hgetall(self._key("rcpt", channel)))
        return {user.decode(): int(offset) for user, offset in rows.items()}

    # Presence: four hashes per entry (by channel, by user, by connection, by node), together.

    def _presence_keys(self, channel: str, user: str, connection: str, node: str) -> list[bytes]:
        return [
            self._key("pc", channel),
            self._key("pu", user),
            self._key("px", connection),
            self._key("pn", node),
        ]

    def _presence_fields(self, channel: str, user: str, connection: str) -> list[bytes]:
        return [
            _dump([user, connection]),
            _dump([channel, connection]),
            _dump([channel, user]),
            _dump([channel, user, connection]),
        ]

    async def put_presence(self, entry: PresenceEntry) -> None:
        where = (entry.channel, entry.user, entry.connection)
        await self._run(
            "presence",
            self._presence_keys(*where, entry.node),
            [*self._presence_fields(*where), _encode_row(entry)],
        )

    async def drop_presence(self, channel: str, user: str, connection: str) -> bool:
        where = (channel, user, connection)
        client = self._open_client()
        row = await _again(lambda: client.hget(self._key("px", connection), _dump([channel, user])))
        if row is None:
            return False  # no such entry (its four rows are written and dropped together)
        node = _decode_row(PresenceEntry, row).node
        removed = await self._run(
            "presence", self._presence_keys(*where, node), [*self._presence_fields(*where), b""]
        )
        return bool(removed)  # the script's HDEL decides: of two racing drops, one removes it

    async def presence(self, channel: str, user: str | None = None) -> list[PresenceEntry]:
        client = self._open_client()
        rows = await _again(lambda: client.hvals(self._key("pc", channel)))
        entries = [_decode_row(PresenceEntry, row) for row in rows]
        return [entry for entry in entries if user is None or entry.user == user]

    async def presence_channels(self, user: str) -> set[str]:
        client = self._open_client()
        fields = await _again(lambda: client.hkeys(self._key("pu", user)))
        return {str(orjson.loads(field)[0]) for field in fields}

    async def presence_of(self, connection: str) -> list[PresenceEntry]:
        client = self._open_client()
        rows = await _again(lambda: client.hvals(self._key("px", connection)))
        return [_decode_row(PresenceEntry, row) for row in rows]

    # Several server nodes (the SharedStore capability).

    async def presence_of_node(self, node: str) -> list[PresenceEntry]:
        client = self._open_client()
        rows = await _again(lambda: client.hvals(self._key("pn", node)))
        return [_decode_row(PresenceEntry, row) for row in rows]

    async def renew_lease(self, node: str, until: float) -> dict[str, float]:
        client = self._open_client()
        await _again(lambda: client.hset(self._leases_key, {node.encode(): _time(until)}))
        rows = await _again(lambda: client.hgetall(self._leases_key))
        return {name.decode(): float(end) for name, end in rows.items()}

    async def drop_lease(self, node: str) -> None:
        client = self._open_client()
        await _again(lambda: client.hdel(self._leases_key, [node.encode()]))

    async def publish(self, notices: Sequence[Notice]) -> None:
        """One pub/sub message per call: the notices as JSON lines."""
        if not notices:
            await trio.lowlevel.checkpoint()
            return
        data = b"\n".join(encode_notice(notice) for notice in notices)
        await self._open_client().publish(self._notices_channel, data)

    def watch(self) -> AbstractAsyncContextManager[AsyncIterator[Notice]]:
        return self._watch()

    @asynccontextmanager
    async def _watch(self) -> AsyncIterator[AsyncIterator[Notice]]:
        client = self._open_client()
        async with client.pubsub(
            channels=[self._notices_channel], ignore_subscribe_messages=True
        ) as pubsub:
            yield _Notices(pubsub)


async def _again(call: Callable[[], Awaitable[_A]]) -> _A:
    """``await call()``, once more on a lost connection (a pooled connection Redis closed, e.g.
    across its restart): for commands that may run twice."""
    try:
        return await call()
    except CoredisConnectionError:
        return await call()


class _Notices:
    """The notices of a pub/sub subscription, one at a time (a class, not an async generator:
    one left unfinished when its ``watch()`` block ends needs no closing)."""

    def __init__(self, pubsub: Any) -> None:
        self._messages = pubsub.__aiter__()
        self._ready: collections.deque[Notice] = collections.deque()

    def __aiter__(self) -> _Notices:
        return self

    async def __anext__(self) -> Notice:
        while not self._ready:
            message = await self._messages.__anext__()
            if message.get("type") != "message":
                continue
            for line in bytes(message["data"]).split(b"\n"):
                try:
                    self._ready.append(decode_notice(line))
                except (ValueError, TypeError, AttributeError):
                    logger.warning("a notice that is not one was published: ignored")
        return self._ready.popleft()
