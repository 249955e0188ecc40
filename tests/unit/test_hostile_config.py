"""Hostile Postgres URLs in a config: refused at load as asyncpg would refuse them, or as it
would take them and then fail to connect."""

from __future__ import annotations

import pytest

from daemon.clients.postgres import check_postgres_dsn

# --- PostgreSQL URLs, read as asyncpg reads them -----------------------------------------------

DSNS = [
    "postgresql://monitor@db:5432/app",
    "postgres://monitor:pw@db/app",
    "postgresql:///app",
    "postgresql://monitor@/app?host=/run/postgresql",
    "postgresql://db1:5432,db2:5433/app",
    "postgresql://[::1]:5432/app",
    "postgresql://m%40x:p%40ss@db/app?sslmode=require",
    "postgresql://db/app?target_session_attrs=read-write&application_name=x",
    "postgresql:///app?host=db1,db2&port=5432,5433",
    "postgresql://db/app?ssl_min_protocol_version=TLSv1.2",
    # refused
    "mysql://db/app",
    "postgresql://db:abc/app",
    "postgresql://db1,,db2/app",
    "postgresql://[::1/app",
    "postgresql://db/app?sslmode=always",
    "postgresql://db/app?target_session_attrs=whatever",
    "postgresql://db/app?gsslib=kerberos",
    "postgresql://db/app?sslnegotiation=sometimes",
    "postgresql://db/app?ssl_min_protocol_version=SSLv3",
    "postgresql:///app?host=db1,db2,db3&port=5432,5433",
    "postgresql://db/app?a",
]


def _asyncpg_accepts(dsn: str) -> bool:
    from asyncpg import connect_utils

    names = ["host", "port", "user", "password", "passfile", "database", "ssl", "service"]
    names += ["servicefile", "direct_tls", "server_settings", "target_session_attrs"]
    names += ["krbsrvname", "gsslib"]
    try:
        connect_utils._parse_connect_dsn_and_args(dsn=dsn, **dict.fromkeys(names))
    except (ValueError, IndexError, connect_utils.exceptions.ClientConfigurationError):
        return False
    return True


def _we_accept(dsn: str) -> bool:
    try:
        check_postgres_dsn(dsn)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("dsn", DSNS)
def test_postgres_urls_are_refused_as_asyncpg_refuses_them(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PGHOST", "PGPORT", "PGSSLMODE", "PGSERVICE", "PGTARGETSESSIONATTRS"):
        monkeypatch.delenv(name, raising=False)
    assert _we_accept(dsn) == _asyncpg_accepts(dsn)


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://db:70000/app", "postgresql://db:0/app", "postgresql://m:p@ss@db/app"],
)
def test_postgres_urls_asyncpg_takes_but_cannot_use_are_refused(dsn: str) -> None:
    assert not _we_accept(dsn)
