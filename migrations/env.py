"""Alembic environment: migrates the database named by the config (or the settings)."""

from alembic import context
from sqlalchemy import create_engine, pool

from clearinghouse import tables  # noqa: F401  (registers every table on the metadata)
from clearinghouse.config import get_settings
from clearinghouse.database import resolve_url
from clearinghouse.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or resolve_url(get_settings())


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
