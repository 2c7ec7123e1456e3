"""Alembic environment and revisions of the alphapanda schema."""
