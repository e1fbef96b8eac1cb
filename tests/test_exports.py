"""The public surface of trio_realtime is exactly what we mean it to be."""

from __future__ import annotations

import types

import trio_realtime

EXPECTED = {
    "Acked",
    "AuthDelegate",
    "AuthenticationFailed",
    "CachedAuth",
    "PresenceChange",
    "PresenceMember",
    "PresenceStatus",
    "ReceiptUpdate",
    "RequestRefused",
    "Service",
    "Stream",
    "TokenRefreshFailed",
    "Connection",
    "ConnectionFailed",
    "ConnectTimeout",
    "ConnectionState",
    "Gap",
    "Message",
    "Metrics",
    "Outcome",
    "Receipt",
    "Rejected",
    "Unknown",
    "WithdrawReason",
    "Withdrawn",
    "connect_realtime",
    "open_realtime",
    "ConfigError",
    "DeliveryStrategy",
    "OutboxFullPolicy",
    "RealtimeConfig",
    "Durability",
    "JournalBroken",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "LinkClosed",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ServiceHost",
    "OutboxFull",
    "ProtocolError",
    "RealtimeBrokenError",
    "RealtimeClosedError",
    "RealtimeError",
}


def test_public_names() -> None:
    public = {
        name
        for name in dir(trio_realtime)
        if not name.startswith("_")
        and not isinstance(getattr(trio_realtime, name), types.ModuleType)  # e.g. .server
    }
    assert public == EXPECTED


def test_version() -> None:
    assert trio_realtime.__version__ == "0.1.0"


def test_every_error_is_a_realtime_error() -> None:
    for name in EXPECTED:
        obj = getattr(trio_realtime, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, trio_realtime.RealtimeError), name


def test_closed_versus_broken() -> None:
    assert issubclass(trio_realtime.JournalClosed, trio_realtime.RealtimeClosedError)
    assert issubclass(trio_realtime.JournalBroken, trio_realtime.RealtimeBrokenError)
    assert not issubclass(trio_realtime.RealtimeClosedError, trio_realtime.RealtimeBrokenError)
    assert issubclass(trio_realtime.ConfigError, ValueError)  # bad input is also a ValueError


def test_subpackage_surfaces() -> None:
    import trio_realtime.queue
    import trio_realtime.testing

    def public(module: types.ModuleType) -> set[str]:
        return {
            name
            for name in dir(module)
            if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
        } - {"annotations"}

    assert public(trio_realtime.queue) == {
        "PersistentQueue",
        "QueueItem",
        "QueueProducer",
        "open_queue",
        "queue_directory",
    }
    assert set(trio_realtime.queue.__all__) == public(trio_realtime.queue)
    assert public(trio_realtime.testing) == {
        "FaultProxy",
        "MEMORY_URL",
        "MemoryServer",
        "check_store",
        "check_transport",
        "ProxyStats",
        "ServerProcess",
        "open_fault_proxy",
        "open_memory_server",
        "open_server_process",
    }


def test_transports_surface() -> None:
    import trio_realtime.transports as transports

    assert {name for name in transports.__dict__ if not name.startswith("_")} >= {
        "Connector",
        "ConnectorFactory",
        "LinkClosed",
        "MemoryTransport",
        "Transport",
        "WebSocketTransport",
        "connect_websocket",
        "connector_for",
        "memory_transport_pair",
        "register_transport",
        "registered_schemes",
    }
    assert transports.LinkClosed is trio_realtime.LinkClosed
    assert issubclass(transports.LinkClosed, trio_realtime.RealtimeBrokenError)


def test_every_public_exception_lives_in_errors() -> None:
    """One module holds every exception a user may catch, whichever package exports it."""
    import trio_realtime.queue
    import trio_realtime.server
    import trio_realtime.services
    import trio_realtime.testing
    import trio_realtime.transports

    modules = (
        trio_realtime,
        trio_realtime.queue,
        trio_realtime.server,
        trio_realtime.services,
        trio_realtime.testing,
        trio_realtime.transports,
    )
    found = {
        f"{module.__name__}.{name}": obj
        for module in modules
        for name, obj in vars(module).items()
        if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert "trio_realtime.server.StoreConflict" in found
    elsewhere = {name for name, obj in found.items() if obj.__module__ != "trio_realtime._errors"}
    assert not elsewhere


def test_local_and_remote_protocol_errors_are_siblings() -> None:
    local, remote = trio_realtime.LocalProtocolError, trio_realtime.RemoteProtocolError
    assert issubclass(local, trio_realtime.ProtocolError)
    assert issubclass(remote, trio_realtime.ProtocolError)
    assert not issubclass(local, remote)
    assert not issubclass(remote, local)
