"""PostgreSQL persistence: migrations, the order repository, the embedded server."""
