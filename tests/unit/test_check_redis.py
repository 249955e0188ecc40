"""The `redis` check's reading of INFO (replicas, counters across restarts) and its config."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from checks.base import CHECKS
from checks.redis import (
    CounterDeltas,
    RedisCheck,
    RedisCheckConfig,
    counter_increase,
    info_values,
)


def test_replica_link_status_not_reported() -> None:
    values = info_values({"role": "slave", "master_last_io_seconds_ago": 2})
    assert values == {"is_master": 0.0}  # link state unknown: neither up nor down


def test_info_values_of_a_replica() -> None:
    info = {
        "role": "slave",
        "master_link_status": "down",
        "master_last_io_seconds_ago": -1,
        "used_memory": 1000,
        "maxmemory": 0,
    }
    values = info_values(info)
    assert values == {
        "used_memory_bytes": 1000.0,
        "maxmemory_bytes": 0.0,
        "is_master": 0.0,
        "master_link_up": 0.0,
    }
    up = info_values({**info, "master_link_status": "up", "master_last_io_seconds_ago": 3})
    assert (up["master_link_up"], up["replication_lag_seconds"]) == (1.0, 3.0)


def test_counter_increase() -> None:
    assert counter_increase(15.0, 10.0) == 5.0
    assert counter_increase(10.0, 10.0) == 0.0
    assert counter_increase(3.0, 10.0) == 3.0  # the server restarted: counting from zero


def test_counter_deltas_follow_the_server_instance() -> None:
    deltas = CounterDeltas()
    assert deltas.update("a", {"evicted_keys": 10.0}) == {}
    assert deltas.update("a", {"evicted_keys": 12.0}) == {"evicted_keys_delta": 2.0}
    # Restarted: a new run_id, and the counter has already passed its old value.
    assert deltas.update("b", {"evicted_keys": 20.0}) == {"evicted_keys_delta": 20.0}
    assert deltas.update("b", {"evicted_keys": 20.0}) == {"evicted_keys_delta": 0.0}


def test_counter_first_seen_has_no_delta() -> None:
    # The same server, a counter its previous INFO lacked: no increase to tell, not all of it.
    deltas = CounterDeltas()
    deltas.update("a", {"evicted_keys": 10.0})
    after = deltas.update("a", {"evicted_keys": 11.0, "rejected_connections": 500.0})
    assert after == {"evicted_keys_delta": 1.0}
    after = deltas.update("a", {"evicted_keys": 11.0, "rejected_connections": 502.0})
    assert after == {"evicted_keys_delta": 0.0, "rejected_connections_delta": 2.0}


# --- config -------------------------------------------------------------------------------


def test_config(tmp_path: Path) -> None:
    assert CHECKS.get("redis") is RedisCheck
    secret = tmp_path / "url"
    secret.write_text("redis://:pw@cache:6379/2\n")
    config = RedisCheckConfig.model_validate({"type": "redis", "url_file": str(secret)})
    assert config.url.get_secret_value() == "redis://:pw@cache:6379/2"
    assert "pw" not in repr(config)
    assert "evicted_keys_delta" in config.value_names()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "http://:pw@cache/0"}, "not a valid Redis URL: Redis URL must specify one of"),
        ({"url": "redis://:pw@cache:port/0"}, "not a valid Redis URL: Port could not be cast"),
        ({"url": "redis://:pw@cache:0/0"}, "not a valid Redis URL: the port must be within"),
        ({"url": "redis://:pw@cache/0", "password": "x"}, "give the password in url or"),
        ({"url": "unix:///run/redis.sock?password=pw", "password": "x"}, "give the password"),
    ],
)
def test_config_errors_do_not_echo_the_url(fields: dict[str, str], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        RedisCheckConfig.model_validate({"type": "redis", **fields})
    (error,) = info.value.errors()
    assert message in error["msg"]
    assert "pw" not in str(info.value)
