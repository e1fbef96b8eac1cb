"""The Redis store (``trio_realtime/server/_redis.py``) against real Redis servers
(``tests/redis_servers.py``): the store contract on one instance and on a 3-master cluster, its
URLs, races between two store objects on one Redis, writes that fail, and a Redis restarted
from its AOF under a store that stays open."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import coredis
import orjson
import pytest
import trio
import trustme

from trio_realtime import Acked, RealtimeConfig, open_realtime
from trio_realtime._errors import ConfigError
from trio_realtime.server import (
    AllowAll,
    Append,
    ClientRow,
    ClientUpdate,
    MemoryStore,
    Message,
    StoreConflict,
    WriteBatch,
    _redis,
    open_server,
    store_from_url,
)
from trio_realtime.server._redis import RedisStore, RedisStoreError
from trio_realtime.testing import check_store

from ..helpers import collect
from ..redis_servers import RedisCluster, RedisServer, free_ports, redis_version, running_redis

MEMORY = RealtimeConfig(durability="memory", network_monitor=False)


def fresh(url: str) -> str:
    """``url`` under a prefix of its own: tests sharing a Redis never see each other's keys."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}prefix=test-{secrets.token_hex(4)}"


def events(channel: str, epoch: str, after: int, payloads: list[object]) -> tuple[Message, ...]:
    return tuple(
        Message(channel, offset, epoch, "e", payload, 1_700_000_000_000, "alice", None, 1)
        for offset, payload in enumerate(payloads, after + 1)
    )


# --- The contract ------------------------------------------------------------------------------


async def test_the_store_keeps_the_contract_on_one_redis(redis_server: RedisServer) -> None:
    url = fresh(redis_server.url)
    with trio.fail_after(60):
        await check_store(lambda: RedisStore(url), persistent=True)


async def test_the_store_keeps_the_contract_on_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    url = fresh(redis_cluster.url)
    with trio.fail_after(60):
        await check_store(lambda: RedisStore(url), persistent=True)


# --- URLs --------------------------------------------------------------------------------------


def test_urls_name_redis_stores() -> None:
    store = store_from_url("redis://127.0.0.1:7001/2?prefix=app1")
    assert isinstance(store, RedisStore)
    assert store.prefix == "app1"
    assert store._target.client_url == "redis://127.0.0.1:7001/2"
    assert store._target.wait_aof_ms is None

    tls = store_from_url("rediss://user:secret@redis.example:6380/0?ssl_cert_reqs=none")
    assert isinstance(tls, RedisStore)
    assert tls.prefix == "default"
    assert tls._target.client_url == "rediss://user:secret@redis.example:6380/0?ssl_cert_reqs=none"

    cluster = store_from_url(
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001?prefix=p&wait_aof=1&wait_aof_timeout_ms=250"
    )
    assert isinstance(cluster, RedisStore)
    assert cluster._target.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (cluster.prefix, cluster._target.wait_aof_ms) == ("p", 250)
    assert (cluster._target.connect_timeout, cluster._target.stream_timeout) == (10.0, 60.0)
    timed = store_from_url("redis://h:1/0?stream_timeout=2.5&connect_timeout=1")
    assert isinstance(timed, RedisStore)
    assert (timed._target.connect_timeout, timed._target.stream_timeout) == (1.0, 2.5)
    assert timed._target.client_url == "redis://h:1/0"

    for bad in (
        "redis://",
        "redis://host/0?prefix=",
        "redis://host/0?prefix=a{b}",
        "redis://host/0?wait_aof=yes",
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://host:1/0",
        "redis+cluster://host:1?db=2",
        "redis://host/0?stream_timeout=0",
        "redis://host/0?connect_timeout=soon",
    ):
        with pytest.raises(ConfigError):
            store_from_url(bad)


def test_a_redis_url_without_coredis_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redis, "coredis", None)
    with pytest.raises(ConfigError, match=r"pip install 'trio-realtime\[redis\]'"):
        store_from_url("redis://127.0.0.1:7001/0")


async def test_open_fails_clearly_when_redis_is_not_there() -> None:
    (port,) = free_ports(1)
    url = f"redis://127.0.0.1:{port}/0"
    store = RedisStore(url)
    with trio.fail_after(20), pytest.raises(RedisStoreError, match=f"127.0.0.1:{port}"):
        await store.open()
    await store.aclose()  # closing a store that failed to open is fine


def test_the_cli_names_a_redis_it_cannot_reach_in_one_line(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    serve = [sys.executable, "-m", "trio_realtime", "serve", "--port", "0"]
    out = subprocess.run(
        [*serve, "--data", str(tmp_path), "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert f"cannot use Redis at redis://:***@127.0.0.1:{port}/0" in out.stderr
    assert "hunter2" not in out.stderr
    assert "Traceback" not in out.stderr


async def test_wait_aof_is_refused_at_open_by_a_redis_that_cannot(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(fresh(redis_server.url) + "&wait_aof=1")
    if redis_version() < (7, 2):
        # No WAITAOF before 7.2: the store says so at open() instead of failing each write.
        with trio.fail_after(20), pytest.raises(ConfigError, match=r"Redis >= 7\.2"):
            await store.open()
        return
    with trio.fail_after(20):
        await store.open()
    try:
        # A Redis that can: writes wait for their fsync, and apply.
        time = 1000.0
        batch = WriteBatch(time, clients=(ClientUpdate("c", None, ClientRow("alice", 1)),))
        await store.write(batch)
        assert (await store.load(clients=["c"])).clients == {"c": ClientRow("alice", 1)}
    finally:
        await store.aclose()


# --- Several writers, failing writes ----------------------------------------------------------


async def test_two_stores_racing_on_one_redis_have_exactly_one_winner(
    redis_server: RedisServer,
) -> None:
    url = fresh(redis_server.url)
    one, two = RedisStore(url), RedisStore(url)
    await one.open()
    await two.open()
    try:
        epoch = (await one.load()).epoch
        assert (await two.load()).epoch == epoch
        winners: list[str] = []

        async def append(store: RedisStore, who: str, round_: int) -> None:
            head = round_ * 2
            batch = WriteBatch(
                float(round_ + 1),
                appends=(
                    Append("room", epoch, head, events("room", epoch, head, [who, who]), 0, 0),
                ),
                clients=(
                    ClientUpdate(
                        "shared",
                        None if round_ == 0 else ClientRow("alice", round_),
                        ClientRow("alice", round_ + 1),
                    ),
                ),
            )
            try:
                await store.write(batch)
            except StoreConflict:
                return
            winners.append(who)

        for round_ in range(20):
            head = round_ * 2
            winners.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append, one, "one", round_)
                nursery.start_soon(append, two, "two", round_)
            assert len(winners) == 1, winners
            read = await two.read("room", head, 10)
            assert [(e.offset, e.payload) for e in read] == [
                (head + 1, winners[0]),
                (head + 2, winners[0]),
            ]
        snapshot = await one.load(channels=["room"], clients=["shared"])
        assert snapshot.channels["room"].head == 40
        assert snapshot.clients == {"shared": ClientRow("alice", 20)}
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_write_that_raises_leaves_nothing(redis_server: RedisServer) -> None:
    store = RedisStore(fresh(redis_server.url))
    await store.open()
    try:
        epoch = (await store.load()).epoch
        batch = WriteBatch(
            1000.0,
            appends=(
                Append("a", epoch, 0, events("a", epoch, 0, [1, 2]), 0, 0),
                # Beyond 64 bits: JSON the store cannot encode, in the batch's last event.
                Append("b", epoch, 0, events("b", epoch, 0, ["ok", 2**70]), 0, 0),
            ),
            clients=(ClientUpdate("c", None, ClientRow("alice", 1)),),
            keys=(("alice", "k"),),
        )
        with pytest.raises(TypeError):
            await store.write(batch)
        snapshot = await store.load(channels=["a", "b"], clients=["c"], keys=[("alice", "k")])
        assert (snapshot.channels, snapshot.clients, snapshot.keys) == ({}, {}, {})
        assert await store.read("a", 0, 10) == []
        # Events whose offsets do not follow the append's `after`: refused, nothing written.
        wrong = WriteBatch(
            1000.0, appends=(Append("a", epoch, 0, events("a", epoch, 1, [1]), 0, 0),)
        )
        with pytest.raises(ValueError):
            await store.write(wrong)
        assert (await store.load(channels=["a"])).channels == {}
    finally:
        await store.aclose()


async def test_boundaries_are_those_of_the_memory_store(redis_server: RedisServer) -> None:
    """What check_store leaves open: times exactly at a cutoff stay (as in MemoryStore), and a
    channel keeps the epoch of its first append."""
    redis = RedisStore(fresh(redis_server.url))
    memory = MemoryStore()
    await redis.open()
    try:
        for store in (redis, memory):
            epoch = (await store.load()).epoch
            batches = [
                WriteBatch(
                    1000.0,
                    appends=(Append("c", epoch, 0, events("c", epoch, 0, [1, 2]), 0, 0),),
                    keys=(("u", "at-1000"),),
                ),
                WriteBatch(
                    2000.0,
                    appends=(Append("c", "another", 2, events("c", epoch, 2, [3]), 2, 1000.0),),
                    keys=(("u", "at-2000"),),
                    forget_keys_before=1000.0,
                ),
            ]
            for batch in batches:
                await store.write(batch)
        want = await memory.load(channels=["c"], keys=[("u", "at-1000"), ("u", "at-2000")])
        got = await redis.load(channels=["c"], keys=[("u", "at-1000"), ("u", "at-2000")])
        assert want.keys == {("u", "at-1000"): 1000.0, ("u", "at-2000"): 2000.0}
        assert got.keys == want.keys
        assert got.channels["c"] == attrs.evolve(want.channels["c"], epoch=got.epoch)
        assert (got.channels["c"].head, got.channels["c"].first) == (3, 2)
        assert [e.payload for e in await redis.read("c", 0, 10)] == [2, 3]
        # Just past the cutoffs: gone.
        for store in (redis, memory):
            epoch = (await store.load()).epoch
            await store.write(
                WriteBatch(
                    3000.0,
                    appends=(Append("c", epoch, 3, (), 0, 1000.5),),
                    forget_keys_before=1000.5,
                )
            )
        got = await redis.load(channels=["c"], keys=[("u", "at-1000"), ("u", "at-2000")])
        assert got.keys == {("u", "at-2000"): 2000.0}
        assert [e.payload for e in await redis.read("c", 0, 10)] == [3]
        assert [e.payload for e in await memory.read("c", 0, 10)] == [3]
    finally:
        await redis.aclose()


async def test_a_load_of_thousands_of_rows(redis_server: RedisServer) -> None:
    """Lua's unpack() takes a few thousand values at most: the load script asks in chunks."""
    store = RedisStore(fresh(redis_server.url))
    await store.open()
    try:
        clients = [f"client-{i}" for i in range(12_000)]
        keys = [("alice", f"key-{i}") for i in range(12_000)]
        await store.write(
            WriteBatch(
                5.0,
                clients=tuple(ClientUpdate(c, None, ClientRow("alice", 1)) for c in clients[::7]),
                keys=tuple(keys[::5]),
            )
        )
        snapshot = await store.load(clients=clients, keys=keys)
        assert snapshot.clients == dict.fromkeys(clients[::7], ClientRow("alice", 1))
        assert snapshot.keys == dict.fromkeys(keys[::5], 5.0)
    finally:
        await store.aclose()


# --- Redis going away --------------------------------------------------------------------------


async def test_a_store_raises_while_redis_is_down_and_continues_after_its_aof_restart(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path / "redis") as server:
        store = RedisStore(fresh(server.url))
        await store.open()
        try:
            epoch = (await store.load()).epoch
            first = WriteBatch(
                1.0, appends=(Append("r", epoch, 0, events("r", epoch, 0, [1]), 0, 0),)
            )
            await store.write(first)
            server.stop(kill=True)  # a crash: only what Redis fsynced survives
            second = WriteBatch(
                2.0, appends=(Append("r", epoch, 1, events("r", epoch, 1, [2]), 0, 0),)
            )
            with trio.fail_after(20):
                with pytest.raises(coredis.exceptions.ConnectionError):
                    await store.write(second)
                with pytest.raises(coredis.exceptions.ConnectionError):
                    await store.read("r", 0, 10)
            server.start()  # same port and directory: it loads its AOF
            with trio.fail_after(20):
                assert [e.payload for e in await store.read("r", 0, 10)] == [1]
                assert (await store.load()).epoch == epoch
                await store.write(second)
                assert [e.payload for e in await store.read("r", 0, 10)] == [1, 2]
        finally:
            await store.aclose()


async def test_a_redis_that_lost_its_data_gives_the_store_a_new_epoch(tmp_path: Path) -> None:
    """Without AOF a killed Redis comes back empty: the store's next load() has a new epoch, so
    that clients resuming at old offsets are told their history is gone."""
    (port,) = free_ports(1)
    server = RedisServer(tmp_path / "redis", port, "--appendonly", "no")
    server.start()
    try:
        store = RedisStore(fresh(server.url))
        await store.open()
        try:
            epoch = (await store.load()).epoch
            batch = WriteBatch(
                1.0, appends=(Append("r", epoch, 0, events("r", epoch, 0, [1]), 0, 0),)
            )
            await store.write(batch)
            server.restart(kill=True)
            with trio.fail_after(20):
                snapshot = await store.load(channels=["r"])
            assert snapshot.epoch != epoch
            assert snapshot.channels == {}
            assert await store.read("r", 0, 10) == []
            assert (await store.load()).epoch == snapshot.epoch  # made once, then kept
        finally:
            await store.aclose()
    finally:
        server.stop()


async def test_a_hung_redis_fails_writes_after_the_stream_timeout(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as server:
        store = RedisStore(fresh(server.url) + "&stream_timeout=0.5")
        await store.open()
        assert server.process is not None
        try:
            epoch = (await store.load()).epoch
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                batch = WriteBatch(1.0, clients=(ClientUpdate("c", None, ClientRow("a", 1)),))
                with trio.fail_after(10), pytest.raises(TimeoutError):
                    await store.write(batch)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            with trio.fail_after(10):
                assert (await store.load()).epoch == epoch
        finally:
            await store.aclose()


async def test_a_redis_that_does_not_fsync_every_write_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)
    server = RedisServer(tmp_path / "redis", port, "--appendfsync", "everysec")
    server.start()
    try:
        store = RedisStore(fresh(server.url))
        await store.open()
        await store.aclose()
    finally:
        server.stop()
    (record,) = [r for r in caplog.records if r.name == "trio_realtime.server.redis"]
    assert record.levelname == "WARNING"
    assert f"127.0.0.1:{port}" in record.getMessage()
    assert "appendfsync=everysec" in record.getMessage()


async def test_a_rediss_url_stores_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    plain, tls = free_ports(2)
    server = RedisServer(
        tmp_path / "redis",
        plain,
        *("--tls-port", str(tls), "--tls-auth-clients", "no"),
        *("--tls-cert-file", str(tmp_path / "cert.pem")),
        *("--tls-key-file", str(tmp_path / "key.pem")),
        *("--tls-ca-cert-file", str(tmp_path / "ca.pem")),
    )
    server.start()
    try:
        url = fresh(f"rediss://127.0.0.1:{tls}/0?ssl_ca_certs={tmp_path / 'ca.pem'}")
        store = store_from_url(url)
        with trio.fail_after(20):
            await store.open()
            try:
                await store.write(WriteBatch(1.0, keys=(("alice", "k"),)))
                assert (await store.load(keys=[("alice", "k")])).keys == {("alice", "k"): 1.0}
            finally:
                await store.aclose()
        # Without the CA, the server's certificate is refused.
        untrusted = RedisStore(fresh(f"rediss://127.0.0.1:{tls}/0"))
        with trio.fail_after(20), pytest.raises(RedisStoreError, match=f"127.0.0.1:{tls}"):
            await untrusted.open()
    finally:
        server.stop()


# --- Rows encoded from their fields ----------------------------------------------------------


@attrs.frozen
class RowV1:
    owner: str | None
    ack_seq: int


@attrs.frozen
class RowV2:
    owner: str | None
    ack_seq: int
    generation: int = 0


def test_rows_carry_fields_added_later_with_a_default() -> None:
    old = _redis._encode_row(RowV1("alice", 3))
    # A row written before `generation` existed reads as its default, and the same row written
    # by the new version encodes to the same bytes (the write script compares rows as bytes).
    assert _redis._decode_row(RowV2, old) == RowV2("alice", 3)
    assert _redis._encode_row(RowV2("alice", 3)) == old
    newer = _redis._encode_row(RowV2("alice", 3, generation=2))
    assert newer != old
    assert _redis._decode_row(RowV2, newer) == RowV2("alice", 3, 2)
    # The old version reads a newer row, ignoring what it does not know.
    assert _redis._decode_row(RowV1, newer) == RowV1("alice", 3)


def test_events_carry_their_fields_and_ignore_unknown_ones() -> None:
    message = Message("c", 7, "ep", "e", {"n": [1, None]}, 5, "alice", "k", 9)
    stored = _redis._encode_event(message)
    assert set(orjson.loads(stored)) == {
        "event",
        "payload",
        "timestamp",
        "sender",
        "idempotency_key",
        "server_time",
    }
    newer = stored[:-1] + b',"priority":3}'  # a field a later version added
    got = _redis._decode_events("c", "ep", [b"7-0", b"8-0"], [stored, newer])
    assert got == [message, attrs.evolve(message, offset=8)]


# --- Through the server ------------------------------------------------------------------------


async def test_a_server_on_a_redis_store_url(redis_server: RedisServer) -> None:
    url = fresh(redis_server.url)
    async with open_server(url, AllowAll()) as server:
        ws = f"ws://127.0.0.1:{server.port}/realtime"
        async with (
            open_realtime(ws, config=MEMORY, token="bob") as bob,
            open_realtime(ws, config=MEMORY, token="alice") as alice,
        ):
            await bob.subscribe("room")
            receipt = await alice.send("room", "hello", {"n": 1})
            assert await receipt.wait() == Acked(seq=1)
            (message,) = await collect(bob, "room", 1)
            assert (message.sender, message.payload) == ("alice", {"n": 1})
    store = RedisStore(url)
    await store.open()
    try:
        assert [e.payload for e in await store.read("room", 0, 10)] == [{"n": 1}]
    finally:
        await store.aclose()


async def test_a_lost_connection_retries_a_read_once_and_never_a_write(
    redis_server: RedisServer,
) -> None:
    """A command whose connection was lost: a read (it may run twice) is tried once more; a
    write is not (it may have applied: the server must see it fail, not conflict with itself)."""
    store = RedisStore(fresh(redis_server.url))
    await store.open()
    calls: dict[str, int] = {"load": 0, "write": 0}

    def losing_once(name: str) -> None:
        script = store._scripts[name]

        async def call(**kwargs: object) -> object:
            calls[name] += 1
            if calls[name] == 1:
                raise coredis.exceptions.ConnectionError("Connection lost while receiving response")
            return await script(**kwargs)

        store._scripts[name] = call

    try:
        epoch = (await store.load()).epoch
        losing_once("load")
        losing_once("write")
        assert (await store.load()).epoch == epoch
        assert calls["load"] == 2
        batch = WriteBatch(1.0, clients=(ClientUpdate("c", None, ClientRow("a", 1)),))
        with pytest.raises(coredis.exceptions.ConnectionError):
            await store.write(batch)
        assert calls["write"] == 1
        await store.write(batch)  # the server's next commit: applies
        assert (await store.load(clients=["c"])).clients == {"c": ClientRow("a", 1)}
    finally:
        await store.aclose()
