"""Persistence: SQLAlchemy Core tables, Alembic migrations and repositories.

SQLite (WAL) is the embedded default; PostgreSQL (with PostGIS when installed) is the
production backend. Only repositories in this package issue SQL.
"""
