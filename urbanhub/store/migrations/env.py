"""Alembic environment: the engine comes from the caller (``urbanhub.store.db.upgrade``)."""

from alembic import context

from urbanhub.store.tables import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    context.run_migrations()
