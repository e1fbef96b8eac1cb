"""Named services: profiles under a service's own settings, TOML files checked with the key and
line of an error, ``trio-realtime run --check``, and two services running side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_realtime import ConfigError, ConnectionState, open_realtime
from trio_realtime.service import PROFILES, ServiceConfig, load_services, run_services

from ..connection.conftest import running_server, url

GOOD = """\
# two services
[services.chat]
url = "ws://127.0.0.1:8765/realtime"
token = "alice"

[services.sensors]
url = "ws://127.0.0.1:8765/realtime"
profile = "iot"
heartbeat_interval = 60
max_queue_size = 500
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text)
    return path


def test_profiles_apply_under_a_services_own_settings() -> None:
    assert set(PROFILES) == {"chat", "gaming", "iot", "trading"}
    gaming = ServiceConfig(name="game", url="ws://h/r", profile="gaming").realtime_config()
    assert gaming.delivery_strategy.value == "best_effort_ordered"
    assert gaming.heartbeat_interval == 5.0
    trading = ServiceConfig(name="t", url="ws://h/r", profile="trading", batch_size=50)
    assert trading.realtime_config().batch_size == 50  # overridden field by field
    assert trading.realtime_config().durability.value == "always"
    with pytest.raises(ConfigError) as info:
        ServiceConfig(name="x", url="ws://h/r", heartbeat_interval=-1)
    assert info.value.option == "heartbeat_interval"
    with pytest.raises(ConfigError, match="profile"):
        ServiceConfig(name="x", url="ws://h/r", profile="racing")


def test_a_file_is_loaded_with_every_value_checked(tmp_path: Path) -> None:
    chat, sensors = load_services(write(tmp_path, GOOD))
    assert (chat.name, chat.profile, chat.get_token()) == ("chat", "chat", "alice")
    config = sensors.realtime_config()
    assert (config.heartbeat_interval, config.max_outbox_messages) == (60.0, 500)
    assert config.durability.value == "batch"  # from the iot profile


@pytest.mark.parametrize(
    ("text", "option", "line"),
    [
        (GOOD + "colour = 'blue'\n", "services.sensors.colour", 11),
        (GOOD.replace("heartbeat_interval = 60", "heartbeat_interval = -5"), None, 9),
        (GOOD.replace('profile = "iot"', 'profile = "racing"'), "services.sensors.profile", 8),
        (GOOD.replace("max_queue_size = 500", 'max_queue_size = "many"'), None, 10),
        (GOOD.replace('url = "ws://127.0.0.1:8765/realtime"\ntoken', "token"), None, 2),
    ],
)
def test_an_error_names_the_key_and_its_line(
    tmp_path: Path, text: str, option: str | None, line: int
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_services(path)
    if option is not None:
        assert info.value.option == option
    assert f"line {line})" in str(info.value)


def test_run_check_validates_a_file_in_one_line(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    run = [sys.executable, "-m", "trio_realtime", "run", "--check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "2 service(s) ok: chat (chat), sensors (iot)" in ok.stdout
    bad = write(tmp_path, GOOD + "colour = 'blue'\n")
    refused = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    (message,) = refused.stderr.strip().splitlines()  # one line, no traceback
    assert "services.sensors.colour" in message
    assert "line 11" in message


async def test_two_services_with_different_profiles_run_side_by_side(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        configs = [
            ServiceConfig(
                name=name,
                url=url(server),
                profile=profile,
                token=name,
                journal_dir=os.fspath(tmp_path / name),
            )
            for name, profile in (("orders", "trading"), ("game", "gaming"))
        ]
        async with trio.open_nursery() as nursery:
            await nursery.start(run_services, configs)
            # Each with its profile: trading journals (fsynced), gaming keeps events in memory.
            # (Both keep their storage, service-info.json, in their directory.)
            journaled = {
                p.parent.name for p in tmp_path.glob("*/*") if p.name != "service-info.json"
            }
            assert "orders" in journaled
            assert "game" not in journaled
            # Started means each made its first attempt: with the server up, both are in.
            assert {s.user for s in server.sessions} == {"orders", "game"}
            nursery.cancel_scope.cancel()
        # A second process-like run on the same journals starts where the first left off.
        async with open_realtime(
            url(server), journal_dir=tmp_path / "orders", token="orders"
        ) as conn:
            assert conn.state is ConnectionState.CONNECTED


def test_the_systemd_example_checks_its_services_file() -> None:
    """examples/systemd: the unit runs ``trio-realtime run`` on the file beside it (checked
    first), stops it with SIGTERM and installs for the user's default target; that file passes
    ``--check``."""
    import configparser

    root = Path(__file__).resolve().parent.parent.parent / "examples" / "systemd"
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(root / "trio-realtime.service")
    service = unit["Service"]
    assert service["ExecStartPre"].endswith(
        "trio-realtime run --check %h/.config/trio-realtime/services.toml"
    )
    assert service["ExecStart"].endswith("trio-realtime run %h/.config/trio-realtime/services.toml")
    assert service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "default.target"
    checked = subprocess.run(
        [sys.executable, "-m", "trio_realtime", "run", "--check", str(root / "services.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, CHAT_TOKEN="c", SENSORS_TOKEN="s"),  # from its EnvironmentFile
    )
    assert checked.returncode == 0, checked.stderr
    assert "2 service(s) ok: chat (chat), sensors (iot)" in checked.stdout


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('channels = "room"', "channels"),  # one string is not a list
        ('plugins = "audit"', "plugins"),
        ('notifications = "false"', "notifications"),
        ("channels = [1, true]", "channels"),
        ('stop_timeout = "5"', "stop_timeout"),
        ("max_retries = 1.5", "max_retries"),
        ("plugin_max_restarts = 2.7", "plugin_max_restarts"),
        ("token_env = 5", "token_env"),
        ("batch_interval = true", "batch_interval"),
        ('plugin_failure = "retry"', "plugin_failure"),
        ("plugin_inbox_size = 0", "plugin_inbox_size"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(
    tmp_path: Path, line: str, key: str
) -> None:
    path = write(tmp_path, GOOD + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_services(path)
    assert info.value.option == f"services.sensors.{key}"
    assert "line 11)" in str(info.value)


def test_a_quoted_service_name_gets_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[services."a.b"]\nurl = "ws://h/r"\nprofile = "racing"\n')
    with pytest.raises(ConfigError) as info:
        load_services(path)
    assert info.value.option == "services.a.b.profile"
    assert "line 3)" in str(info.value)


def test_an_unknown_url_scheme_fails_the_check(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("ws://127.0.0.1:8765/realtime", "htp://x", 1))
    with pytest.raises(ConfigError, match="no transport for 'htp://x'") as info:
        load_services(path)
    assert info.value.option == "services.chat.url"


UNSET_TOKEN = GOOD + 'token_env = "NOPE_TOKEN"\n'


async def test_what_run_needs_is_checked_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    configs = load_services(write(tmp_path, UNSET_TOKEN))
    with pytest.raises(ConfigError) as info:
        await run_services(configs)  # nothing started: the chat service never connected
    assert info.value.option == "services.sensors.token_env"


def test_check_also_loads_plugins_and_reads_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    path = write(tmp_path, GOOD)
    run = [sys.executable, "-m", "trio_realtime", "run", "--check", str(path)]
    for text, option, line in (
        (UNSET_TOKEN, "services.sensors.token_env", 11),
        (GOOD + 'plugins = ["no-such-plugin"]\n', "services.sensors.plugins", 11),
    ):
        path.write_text(text)
        checked = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 2
        (message,) = checked.stderr.strip().splitlines()
        assert f"error: {option}: " in message
        assert f"line {line})" in message
