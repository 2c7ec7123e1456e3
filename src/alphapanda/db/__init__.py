"""PostgreSQL access: the async engine factory and the schema migrations."""
