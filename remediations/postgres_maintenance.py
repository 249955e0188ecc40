"""`postgres_maintenance`: ANALYZE, VACUUM (ANALYZE), REINDEX TABLE or VACUUM FULL on named
tables, e.g. when the postgres check reports tables needing vacuum or stale statistics.

One short-lived connection per run (maintenance is rare, so no pool is kept), closed at the
end. Before any maintenance statement the session gets a `lock_timeout` and a
`statement_timeout`, so a statement waiting for a lock gives up quickly instead of queueing
production queries behind it, and no statement holds its locks for long. VACUUM cannot run
inside a transaction block, so each statement runs on its own, outside any transaction.

Table names are validated when the config loads (identifier or schema.identifier) and
double-quoted when the statement is built; nothing else is ever put into SQL text. Quoted
names are exact: `Orders` means the table "Orders", as pg_class spells it.

asyncpg is imported on first use (by `execute`), not with the module.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator

from daemon.clients.postgres import DsnRedactor, checked_postgres_dsn, quote_ident
from daemon.core.models import Incident, RemediationResult
from daemon.core.units import PositiveDuration
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext

APPLICATION_NAME = "runbookd"
CLOSE_TIMEOUT = 5.0
MAX_MESSAGE = 200  # of one server or driver message in a result
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; a longer name would silently
# refer to another table.
IDENTIFIER_BYTES = 63
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

Operation = Literal["analyze", "vacuum_analyze", "reindex", "vacuum_full"]
STATEMENTS: dict[str, str] = {
    "analyze": "ANALYZE {table}",
    "vacuum_analyze": "VACUUM (ANALYZE) {table}",
    "reindex": "REINDEX TABLE {table}",
    "vacuum_full": "VACUUM (FULL) {table}",
}


def check_table_name(name: str) -> str:
    """`table` or `schema.table`, each part a plain identifier. The message names the rule,
    not the value, beyond what pydantic already shows."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ValueError(
            "not a table name: use table or schema.table, each a letter or _ followed by "
            "letters, digits, _ or $"
        )
    if any(len(part.encode()) > IDENTIFIER_BYTES for part in parts):
        raise ValueError(f"a name part is longer than {IDENTIFIER_BYTES} bytes")
    return name


TableName = Annotated[str, AfterValidator(check_table_name)]


def quote_table(name: str) -> str:
    # check_table_name already allows no quote at all; quoting keeps the exact spelling.
    return ".".join(quote_ident(part) for part in check_table_name(name).split("."))


def statement_for(operation: str, table: str) -> str:
    return STATEMENTS[operation].format(table=quote_table(table))


class PostgresMaintenanceConfig(RemediationConfig):
    """Runs `ANALYZE`, `VACUUM (ANALYZE)`, `REINDEX TABLE` or `VACUUM (FULL)` on the named
    tables, one statement each, outside a transaction, over one short-lived connection. The
    session gets `lock_timeout` and `statement_timeout` first, so a statement waiting for a
    lock gives up instead of queueing production queries behind it. `vacuum_full` locks the
    table exclusively: it is destructive and waits for an operator's approval (unless
    `require_approval: false`)."""

    example: ClassVar[str] = """
        remediations:
          analyze_orders:
            type: postgres_maintenance
            dsn: postgresql://maint@db.internal:5432/app
            operation: vacuum_analyze
            tables: [orders, public.order_items]
            statement_timeout: 10m
        """

    type: Literal["postgres_maintenance"]
    dsn: SecretStr = Field(
        description="`postgresql://maint@db:5432/app`; a secret, since a DSN may carry the "
        "password. The role must own the tables."
    )
    operation: Operation = Field(description="What to run on each table.")
    tables: list[TableName] = Field(
        min_length=1,
        description="`table` or `schema.table`, as pg_class spells them (`Orders` is the "
        'table "Orders").',
    )
    statement_timeout: PositiveDuration = Field(
        300.0,
        description="Bounds each statement on the server (VACUUM FULL holds its exclusive "
        "lock this long at most).",
    )
    # A waiting lock request queues every later query on that table behind it.
    lock_timeout: PositiveDuration = Field(
        5.0,
        description="Bounds waiting for a table's lock; the next run tries again.",
    )

    _postgres_url = field_validator("dsn")(checked_postgres_dsn)

    def deadline(self) -> float:
        # `timeout` bounds connecting and the session setup; each statement may then run
        # its full statement_timeout.
        return self.timeout + len(self.tables) * self.statement_timeout


# --- what asyncpg offers (it ships no type hints; only the parts used here) ---------------


class _LogMessage(Protocol):
    severity: str
    message: str


class _Connection(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    def add_log_listener(self, callback: Any) -> None: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


# --- failures -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    detail: str
    recoverable: bool


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _message(exc: BaseException) -> str:
    return _clip(str(exc) or type(exc).__name__)


@functools.cache
def _connect_errors() -> tuple[type[BaseException], ...]:
    """Expected failures of connecting (ValueError: a DSN asyncpg cannot parse); others are
    bugs."""
    import asyncpg.exceptions as pgerr

    return (OSError, TimeoutError, ValueError, pgerr.PostgresError, pgerr.InterfaceError)


def connect_failure(exc: BaseException, timeout: float) -> _Failure:
    """A database that could not be reached may come back; one that refuses us will not."""
    import asyncpg.exceptions as pgerr

    if isinstance(exc, TimeoutError):
        return _Failure(f"cannot connect: timeout after {timeout:g}s", True)
    if isinstance(exc, ConnectionRefusedError):
        return _Failure("cannot connect: connection refused", True)
    if isinstance(exc, pgerr.CannotConnectNowError | pgerr.TooManyConnectionsError):
        return _Failure(f"cannot connect: {_message(exc)}", True)
    if isinstance(exc, pgerr.PostgresError | pgerr.ClientConfigurationError | ValueError):
        # Authentication, a missing database or role, bad settings: ours to fix.
        return _Failure(f"cannot connect: {_message(exc)}", False)
    if isinstance(exc, OSError) and exc.strerror:
        return _Failure(f"cannot connect: {exc.strerror}", True)
    return _Failure(f"cannot connect: {_message(exc)}", True)


def statement_failure(exc: BaseException, config: PostgresMaintenanceConfig) -> _Failure:
    import asyncpg.exceptions as pgerr

    if isinstance(exc, pgerr.LockNotAvailableError):
        # The table is busy right now; later it may not be.
        return _Failure(f"lock not granted within {config.lock_timeout:g}s (lock_timeout)", True)
    if isinstance(exc, pgerr.QueryCanceledError):
        # The same statement would run as long again: the timeout or the plan needs a person.
        return _Failure(
            f"cancelled after statement_timeout {config.statement_timeout:g}s: {_message(exc)}",
            False,
        )
    if isinstance(exc, pgerr.PostgresError):
        # A missing table, missing privileges, a bad index: not fixed by trying again.
        return _Failure(_message(exc), False)
    if isinstance(exc, TimeoutError):
        return _Failure(f"timeout after {config.timeout:g}s", True)
    # The connection broke (InterfaceError, OSError): the server may be back later.
    return _Failure(f"connection lost: {_message(exc)}", True)


def describe_target(dsn: str) -> str:
    """host:port/database for results: never the user's password."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname or "localhost", parts.port or 5432
    except ValueError:
        return "<invalid dsn>"
    return f"{host}:{port}{parts.path or '/'}"


def _ms(seconds: float) -> str:
    # 0 would mean "no limit" to PostgreSQL; the smallest limit is 1ms.
    return f"{max(1, round(seconds * 1000))}ms"


# --- the remediation ----------------------------------------------------------------------


@REMEDIATIONS.register
class PostgresMaintenanceRemediation(Hooks):
    type: ClassVar[str] = "postgres_maintenance"
    Config: ClassVar[builtins.type[RemediationConfig]] = PostgresMaintenanceConfig
    # Running maintenance twice leaves the table as running it once.
    idempotent: bool = True
    # Class default; an instance follows its operation (see __init__).
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: PostgresMaintenanceConfig) -> None:
        self.name = name
        self.config = config
        # VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: no reads or writes
        # until it ends. Destructive, so the pipeline waits for an operator's approval first
        # (approval is the pipeline's job, never the remediation's).
        self.destructive = config.operation == "vacuum_full"
        self._redact = DsnRedactor(config.dsn.get_secret_value())
        self._target = describe_target(config.dsn.get_secret_value())

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        config = self.config
        data: dict[str, Any] = {
            "operation": config.operation,
            "database": self._target,
            "tables": [],
        }
        try:
            conn = await self._connect()
        except _connect_errors() as exc:
            return self._failed(connect_failure(exc, config.timeout), data)
        try:
            failure = await self._run(conn, data["tables"])
        except BaseException:
            conn.terminate()  # cancelled mid-statement: drop it, the server ends the backend
            raise
        await self._close(conn)
        if failure is not None:
            return self._failed(failure, data)
        count = len(config.tables)
        total = sum(step["seconds"] for step in data["tables"])
        detail = f"{config.operation} of {count} table{'s' * (count != 1)} done in {total:.2f}s"
        return RemediationResult(True, detail, data=data)

    async def _connect(self) -> _Connection:
        import asyncpg

        # asyncpg has no type hints: the connection is used through `_Connection`.
        conn: _Connection = await asyncpg.connect(  # type: ignore[no-untyped-call]
            self.config.dsn.get_secret_value(),
            timeout=self.config.timeout,
            server_settings={"application_name": APPLICATION_NAME},
        )
        return conn

    async def _run(self, conn: _Connection, steps: list[dict[str, Any]]) -> _Failure | None:
        """Set the session's limits, then one statement per table; stop at the first failure."""
        import asyncpg.exceptions as pgerr

        config = self.config
        warnings: list[str] = []
        conn.add_log_listener(lambda _conn, msg: _keep_warning(msg, warnings))
        try:
            async with asyncio.timeout(config.timeout):
                # set_config(..., false) is SET for the session, with the value as a parameter.
                await conn.execute(
                    "SELECT set_config('lock_timeout', $1, false), "
                    "set_config('statement_timeout', $2, false)",
                    _ms(config.lock_timeout),
                    _ms(config.statement_timeout),
                )
        except (TimeoutError, pgerr.PostgresError, pgerr.InterfaceError, OSError) as exc:
            return statement_failure(exc, config)
        for table in config.tables:
            failure = await self._maintain(conn, table, steps, warnings)
            if failure is not None:
                return failure
        return None

    async def _maintain(
        self, conn: _Connection, table: str, steps: list[dict[str, Any]], warnings: list[str]
    ) -> _Failure | None:
        import asyncpg.exceptions as pgerr

        statement = statement_for(self.config.operation, table)
        warnings.clear()
        started = time.perf_counter()
        try:
            # No arguments: the simple protocol, outside any transaction block (VACUUM's rule).
            await conn.execute(statement)
        except (pgerr.PostgresError, pgerr.InterfaceError, OSError) as exc:
            failure = statement_failure(exc, self.config)
            steps.append({"table": table, "statement": statement, "error": failure.detail})
            return failure
        await asyncio.sleep(0)  # notices are delivered by call_soon: let them land
        step: dict[str, Any] = {
            "table": table,
            "statement": statement,
            "seconds": round(time.perf_counter() - started, 6),
        }
        if warnings:
            step["warnings"] = list(warnings)
        steps.append(step)
        return _skipped(table, warnings)

    async def _close(self, conn: _Connection) -> None:
        import asyncpg.exceptions as pgerr

        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.close()
        except (OSError, TimeoutError, pgerr.PostgresError, pgerr.InterfaceError):
            conn.terminate()

    def _failed(self, failure: _Failure, data: dict[str, Any]) -> RemediationResult:
        detail = self._redact(f"{self.config.operation} failed: {failure.detail}")
        for step in data["tables"]:
            if "error" in step:
                step["error"] = self._redact(step["error"])
        return RemediationResult(False, detail, failure.recoverable, data)


def _keep_warning(message: _LogMessage, warnings: list[str]) -> None:
    if message.severity in ("WARNING", "ERROR"):
        warnings.append(_clip(message.message))


def _skipped(table: str, warnings: list[str]) -> _Failure | None:
    """VACUUM and ANALYZE only warn, and do nothing, on a table the role may not maintain
    ('skipping "t" --- only table or database owner can vacuum it'; newer servers say
    'permission denied to vacuum "t", skipping it'). English server messages assumed."""
    for warning in warnings:
        if "skipping" in warning:
            return _Failure(f"{table} not maintained: {warning}", False)
    return None
