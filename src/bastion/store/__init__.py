"""Persistent state: SQLAlchemy 2 models, Alembic migrations, and short-lived ``kv`` state."""
