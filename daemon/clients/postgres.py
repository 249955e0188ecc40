"""PostgreSQL DSNs for the `postgres` check and the PostgreSQL remediations: checked when the
config is loaded, their passwords masked in what we report, identifiers quoted, and handed to
the libpq tools (pg_dump, psql, pg_restore) without the password on the command line.

asyncpg reads a DSN only when it connects: a port of `abc` would pass `check-config` and
then fail every run. This reads it the way asyncpg's `_parse_connect_dsn_and_args` does, with
the standard library (validating a config never imports asyncpg), and refuses what asyncpg
would refuse, and ports outside 1-65535. Messages never quote the URL: it may hold a password.
tests/unit/test_hostile_config.py holds the two to agreeing.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlparse, urlsplit

from pydantic import SecretStr

EXAMPLE = "postgresql://user@db:5432/app"
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
SESSION_ATTRS = frozenset(
    {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
)
TLS_VERSIONS = frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})
_CHOICES = {
    "sslmode": SSL_MODES,
    "target_session_attrs": SESSION_ATTRS,
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "gsslib": frozenset({"gssapi", "sspi"}),
    "ssl_min_protocol_version": TLS_VERSIONS,
    "ssl_max_protocol_version": TLS_VERSIONS,
}
_IPV6 = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")


def check_postgres_dsn(dsn: str) -> None:
    """Raise ValueError, without quoting the DSN, if asyncpg could not connect with it."""
    try:
        parsed = urlparse(dsn)
        query = parse_qs(parsed.query, strict_parsing=True) if parsed.query else {}
    except ValueError:
        raise ValueError(f"not a valid PostgreSQL URL (use e.g. {EXAMPLE})") from None
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL (use e.g. {EXAMPLE})")
    # asyncpg splits at the first @: a password's own @ must be written %40.
    hostspec = parsed.netloc.partition("@")[2] if "@" in parsed.netloc else parsed.netloc
    if "@" in hostspec:
        raise ValueError("more than one @ before the host: write an @ in the password as %40")
    if hostspec:
        _hosts(hostspec, unquoted=True)
    values = {key: items[-1] for key, items in query.items()}
    ports = [_port(part) for part in values["port"].split(",")] if "port" in values else []
    # Without a host in the URL, ?host= names them (none: the local server's socket).
    if not hostspec and values.get("host"):
        hosts = _hosts(values["host"], unquoted=False)
        if 1 < len(ports) != hosts:
            raise ValueError(f"{len(ports)} ports for {hosts} hosts")
    for key, choices in _CHOICES.items():
        if key in values and values[key] not in choices:
            raise ValueError(f"{key} must be one of {', '.join(sorted(choices))}")


def checked_postgres_dsn(value: SecretStr) -> SecretStr:
    """A config validator: everything asyncpg would refuse on connecting, refused now;
    never echoing the DSN."""
    check_postgres_dsn(value.get_secret_value())
    return value


def _hosts(hostlist: str, *, unquoted: bool) -> int:
    """The number of hosts in `host1:port1,host2:port2`; ValueError for a bad one."""
    specs = hostlist.split(",")
    for spec in specs:
        if not spec:
            raise ValueError("an empty host in the list of hosts")
        if spec[0] == "/":
            continue  # a Unix socket directory
        if spec[0] == "[":
            match = _IPV6.match(spec)
            if match is None:
                raise ValueError("not a valid IPv6 address in brackets")
            port = match[2]
        else:
            port = spec.partition(":")[2]
        if port:
            _port(unquote(port) if unquoted else port)
    return len(specs)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError("the port is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be within 1-65535, not {port}")
    return port


def dsn_location(dsn: str) -> str:
    """Where a DSN points, for messages: user, host:port (each of a list) and database, never
    the password, e.g. "runbookd@db:5432/runbookd". The defaults asyncpg would take are
    spelled out (port 5432; the database named as the user)."""
    try:
        parts = urlsplit(dsn)
        query = {key: items[-1] for key, items in parse_qs(parts.query).items()}
    except ValueError:
        return "(a DSN that does not parse)"
    userinfo, at, hostspec = parts.netloc.partition("@")
    if not at:
        userinfo, hostspec = "", parts.netloc
    user = unquote(userinfo.partition(":")[0]) or query.get("user", "")
    ports = query.get("port", "5432").split(",")
    hosts = (unquote(hostspec) or query.get("host") or "localhost").split(",")
    shown = []
    for n, host in enumerate(hosts):
        has_port = host.startswith("/") or (
            host.rpartition("]")[2].startswith(":") if host.startswith("[") else ":" in host
        )
        shown.append(host if has_port else f"{host}:{ports[min(n, len(ports) - 1)]}")
    database = unquote(parts.path.lstrip("/")) or query.get("dbname") or user
    where = f"{user}@{','.join(shown)}" if user else ",".join(shown)
    return f"{where}/{database}" if database else where


def dsn_passwords(dsn: str) -> set[str]:
    """The DSN's password (userinfo or `?password=`, a DSN option asyncpg accepts too), as
    written and decoded; empty when there is none or the DSN does not parse."""
    try:
        parts = urlsplit(dsn)
        found = [parts.password, *parse_qs(parts.query).get("password", [])]
    except ValueError:
        return set()
    return {s for p in found if p for s in (p, unquote(p)) if s}


class DsnRedactor:
    """Replaces the DSN's password, and a `password` given beside it, with *** in text we
    report (a server or driver message may quote it)."""

    def __init__(self, dsn: str, password: str | None = None) -> None:
        secrets = dsn_passwords(dsn) | ({password} if password else set())
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def quote_ident(part: str) -> str:
    """PostgreSQL's identifier quoting (as quote_ident() and asyncpg do): double quotes,
    inner quotes doubled."""
    return '"' + part.replace('"', '""') + '"'


def with_database(dsn: str, database: str) -> str:
    """`dsn` naming another database on the same server (a scratch database)."""
    parts = urlsplit(dsn)
    return _unsplit(parts.scheme, parts.netloc, "/" + quote(database, safe=""), parts.query)


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """For a libpq tool: the DSN without its password, for `--dbname`, and the environment
    that carries the password (PGPASSWORD). A command line is visible to every local user
    (ps, /proc); a process's environment only to its owner."""
    parts = urlsplit(dsn)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    passwords = [value for key, value in pairs if key == "password"]
    # asyncpg splits userinfo from the hosts at the first @ (check_postgres_dsn).
    userinfo, at, hosts = parts.netloc.partition("@")
    user, colon, written = userinfo.partition(":")
    password = unquote(written) if colon and written else (passwords[-1] if passwords else "")
    netloc = f"{user}@{hosts}" if at else parts.netloc
    query = urlencode([(key, value) for key, value in pairs if key != "password"])
    target = _unsplit(parts.scheme, netloc, parts.path, query)
    return target, ({"PGPASSWORD": password} if password else {})


def _unsplit(scheme: str, netloc: str, path: str, query: str) -> str:
    # Not urlunsplit: it drops the empty host of postgresql:///db (the local socket).
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
