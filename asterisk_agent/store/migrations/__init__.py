"""The store's Alembic migrations, shipped in the package and applied when the store opens."""
