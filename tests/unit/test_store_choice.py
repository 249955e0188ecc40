"""Which store the daemon uses (`runbookd.store`), and the SQLite state directory's lock: one
daemon per directory. Two real processes on one directory: tests/e2e/test_state_lock.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.clients.postgres import dsn_location
from daemon.config.check import check_config_main
from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError
from daemon.runtime.daemon import Daemon
from daemon.runtime.storage import build_store, describe
from daemon.store.postgres.repository import PostgresStore
from daemon.store.sqlite.lock import StateDirInUse, StateDirLock
from daemon.store.sqlite.repository import SqliteStore

SECRET = "hunter2-store-secret"


def settings(store: str, state_dir: str = "/var/lib/runbookd") -> str:
    return f"runbookd:\n  state_dir: {state_dir}\n  store: {store}\n"


# -- the setting -------------------------------------------------------------------------------


def test_sqlite_in_the_state_directory_by_default(tmp_path: Path) -> None:
    config = load_config_text(f"runbookd: {{state_dir: {tmp_path}}}\n")
    store, lock = build_store(config.runbookd)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "runbookd.db"
    assert lock is not None
    assert lock.path == tmp_path / "runbookd.lock"
    assert describe(store) == f"sqlite {tmp_path / 'runbookd.db'}"
    explicit = load_config_text(settings("{type: sqlite}", str(tmp_path)))
    assert explicit.runbookd == config.runbookd


def test_postgres_from_the_dsn(tmp_path: Path) -> None:
    dsn = f"postgresql://runbookd:{SECRET}@db.internal:5432/runbookd"
    config = load_config_text(
        settings(f"{{type: postgres, dsn: '{dsn}', pool_size: 4, connect_timeout: 3s}}")
    )
    store, lock = build_store(config.runbookd)
    assert isinstance(store, PostgresStore)
    assert lock is None  # no state directory to hold
    assert (store.pool_size, store.connect_timeout) == (4, 3.0)
    assert describe(store) == "postgres runbookd@db.internal:5432/runbookd"
    assert SECRET not in repr(config.runbookd) + repr(store) + describe(store)


def test_postgres_from_a_dsn_file(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(f"postgresql://runbookd:{SECRET}@db:6432/rb\n")
    config = load_config_text(settings(f"{{type: postgres, dsn_file: {secret}}}"))
    store, _ = build_store(config.runbookd)
    assert isinstance(store, PostgresStore)
    assert store.where == "runbookd@db:6432/rb"


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        (
            f"{{type: postgres, dsn: 'postgresql://u:{SECRET}@db:port/x'}}",
            "c.yaml:3 runbookd.store.dsn: the port is not a number",
        ),
        (
            f"{{type: postgres, dsn: 'mysql://u:{SECRET}@db/x'}}",
            "c.yaml:3 runbookd.store.dsn: not a PostgreSQL URL (use e.g. postgresql://user@db:5432/app)",
        ),
        ("{type: postgres}", "c.yaml:3 runbookd.store.dsn: field required"),
        (
            "{type: redis}",
            "c.yaml:3 runbookd.store.type: unknown type 'redis' (known: postgres, sqlite)",
        ),
        ("{type: sqlite, dsn: x}", "c.yaml:3 runbookd.store.dsn: unknown field (known: type)"),
        (
            "{type: postgres, dsn: 'postgresql://db/x', pool_size: 1}",
            "c.yaml:3 runbookd.store.pool_size: input should be greater than or equal to 2",
        ),
    ],
    ids=["port", "scheme", "no-dsn", "unknown-type", "sqlite-has-no-dsn", "pool-size"],
)
def test_a_bad_store_is_a_config_problem_without_the_password(store: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(settings(store), "c.yaml")
    assert str(refused.value).splitlines() == [problem]
    assert SECRET not in str(refused.value)


# -- one daemon per state directory -------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, second = StateDirLock(state), StateDirLock(state)
    first.acquire()  # creates the directory
    assert (state / "runbookd.lock").read_text() == f"{os.getpid()}\n"
    # flock is per open file: a second open of the file in this process conflicts too.
    with pytest.raises(StateDirInUse) as refused:
        second.acquire()
    assert str(refused.value) == (
        f"the state directory {state} is in use by another runbookd (pid {os.getpid()}): "
        "one daemon per state directory"
    )
    assert not second.held
    first.release()
    first.release()  # harmless
    second.acquire()
    assert second.held
    second.release()
    # The file stays, so that a third daemon locks the same file as a second one waiting.
    assert (state / "runbookd.lock").exists()


def test_a_holder_whose_pid_cannot_be_read_is_still_refused(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path)
    first.acquire()
    (tmp_path / "runbookd.lock").write_text("not a pid")
    with pytest.raises(StateDirInUse, match=r"in use by another runbookd: one daemon"):
        StateDirLock(tmp_path).acquire()
    first.release()


async def test_a_daemon_on_a_held_directory_stops_before_opening_anything(
    tmp_path: Path,
) -> None:
    config = load_config_text(f"runbookd: {{state_dir: {tmp_path}}}\n")
    holder = StateDirLock(tmp_path)
    holder.acquire()
    daemon = Daemon(config)
    with pytest.raises(StateDirInUse, match=str(tmp_path)):
        await daemon.start()
    assert isinstance(daemon.store, SqliteStore)
    assert daemon.store._db is None  # never opened
    assert not (tmp_path / "runbookd.db").exists()
    holder.release()


async def test_a_daemon_given_its_store_takes_no_lock(tmp_path: Path) -> None:
    config = load_config_text(f"runbookd: {{state_dir: {tmp_path}}}\n")
    assert Daemon(config, store=SqliteStore(tmp_path / "other.db"))._state_lock is None
    assert Daemon(config)._state_lock is not None


def test_check_config_exits_2_on_a_malformed_dsn_without_quoting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(settings(f"{{type: postgres, dsn: 'postgresql://u:{SECRET}@db:99999/x'}}"))
    assert check_config_main(str(path)) == 2
    err = capsys.readouterr().err
    assert err == f"{path}:3 runbookd.store.dsn: the port must be within 1-65535, not 99999\n"


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        (f"postgresql://rb:{SECRET}@db/runbookd", "rb@db:5432/runbookd"),
        (f"postgres://rb:{SECRET}@[::1]:6432/x?sslmode=require", "rb@[::1]:6432/x"),
        (f"postgresql://rb:{SECRET}@a:5433,b/x?port=7", "rb@a:5433,b:7/x"),
        ("postgresql:///runbookd?host=/run/postgresql&user=rb", "rb@/run/postgresql/runbookd"),
        (f"postgresql://:{SECRET}@db", "db:5432"),
    ],
)
def test_where_a_dsn_points_never_shows_its_password(dsn: str, where: str) -> None:
    assert dsn_location(dsn) == where
