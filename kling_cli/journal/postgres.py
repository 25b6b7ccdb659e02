"""The shared journal: PostgreSQL through psycopg 3 (`pip install 'kling-cli[postgres]'`).

Several machines run one batch against one database: a claim is an `INSERT ... ON CONFLICT DO NOTHING`
on the claims table's primary key, and a claim another transaction is deciding about right now is skipped
(`FOR UPDATE SKIP LOCKED`), not waited for. The URL is handed to libpq as it is, so `PGPASSWORD`,
`~/.pgpass`, `PGSSLMODE` and the rest of libpq's environment work as they do for `psql`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kling_cli.journal import Journal, JournalError, masked, password
from kling_cli.journal.schema import POSTGRES_TYPES

#: seconds to reach the server before saying it cannot be reached
CONNECT_TIMEOUT = 10
_LOGIN_WORDS = ("password authentication failed", "authentication failed", "no password supplied",
                "does not exist", "permission denied", "pg_hba.conf")


class PostgresJournal(Journal):
    types = POSTGRES_TYPES
    now_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    migration_lock = "SELECT pg_advisory_xact_lock(7023431534)"  # any constant: kling's own lock number

    def __init__(self, url: str) -> None:
        super().__init__(masked(url))
        self.url = url
        try:
            import psycopg
        except ImportError:
            raise JournalError(f"the journal {self.where} is on PostgreSQL, and psycopg 3 is not installed",
                               hint="pip install 'kling-cli[postgres]' (or psycopg[binary]) in kling's environment"
                               ) from None
        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        self._conn = self._connect()
        try:
            self._migrate()
        except psycopg.Error as exc:
            raise self._failed("set up the tables", exc) from None

    def _clean(self, text: str) -> str:
        secret = password(self.url)
        return text.replace(secret, "****") if secret else text

    def _connect(self):
        psycopg = self._psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="kling")
        except psycopg.Error as exc:
            reason = self._clean(" ".join(str(exc).split())) or type(exc).__name__
            if any(word in reason for word in _LOGIN_WORDS):
                raise JournalError(f"the journal server refused the login to {self.where}: {reason}",
                                   hint="check the user, the password (in the URL, PGPASSWORD or ~/.pgpass) and "
                                   "the database name") from None
            raise JournalError(f"cannot reach the journal server {self.where}: {reason}",
                               hint="check that PostgreSQL runs there and accepts connections from this machine"
                               ) from None

    def _failed(self, doing: str, exc: BaseException) -> JournalError:
        failure = super()._failed(doing, exc)
        failure.message = self._clean(failure.message)
        return failure

    def _connection(self):
        """The connection, made again if the server dropped it (a restart): each statement tries once."""
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        cursor = self._connection().execute(sql.replace("?", "%s"), args)
        rows = cursor.fetchall() if cursor.description else []
        return rows, cursor.rowcount

    def _insert(self, sql: str, args: tuple[Any, ...]) -> int:
        return int(self._run(sql + " RETURNING id", args)[0][0]["id"])

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._connection().cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock, self._connection().transaction():
            yield

    def _close(self) -> None:
        self._conn.close()
