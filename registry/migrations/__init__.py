"""Alembic migrations of the registry database (script_location `registry:migrations`)."""
